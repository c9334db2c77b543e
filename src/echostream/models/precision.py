"""Inference precision: the exact fp32 network, or its linear layers quantised to int8.

``int8`` is dynamic quantisation (``torch.ao.quantization.quantize_dynamic``): the weights of every
``nn.Linear`` (feed-forward, attention projections, output heads) are stored as int8 with one
scale per tensor, and each activation is quantised on the fly, row block by row block, so no
calibration data is needed. Convolutions, norms and the attention itself stay fp32. It runs on
CPU only (torch's quantised kernels: fbgemm/x86 or qnnpack). What it gains depends on the CPU's
int8 instructions: on an AVX2-only machine int8 GEMMs are only somewhat faster than fp32, on one
with AVX-512 VNNI or AMX far more; ``benchmarks/longform.py --int8`` measures it. ``fp32`` stays
the exact path (parity with the reference).

Since each call's activations are scaled by their own range, int8 results move a little with how
frames are grouped into calls (streaming pieces, long-form blocks, batched streams); fp32 results
do not.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

PRECISIONS = ("fp32", "int8")


class PrecisionError(ValueError):
    """A precision that is unknown or cannot run on the chosen device."""


def check_precision(precision: str, device: torch.device) -> None:
    """Raise a one-line PrecisionError unless ``precision`` can run on ``device``.

    >>> check_precision("int8", torch.device("cpu"))
    >>> check_precision("fp16", torch.device("cpu"))
    Traceback (most recent call last):
    ...
    echostream.models.precision.PrecisionError: unknown precision 'fp16' (use fp32 or int8)
    """
    if precision not in PRECISIONS:
        raise PrecisionError(f"unknown precision {precision!r} (use {' or '.join(PRECISIONS)})")
    if precision == "int8":
        if device.type != "cpu":
            raise PrecisionError(f"precision int8 runs on cpu only (dynamic quantisation), not on {device}")
        if not any(engine in torch.backends.quantized.supported_engines for engine in ("x86", "fbgemm", "qnnpack")):
            raise PrecisionError("precision int8: this torch build has no quantised CPU engine")


def apply_precision(model: nn.Module, precision: str, device: torch.device) -> nn.Module:
    """``model`` at ``precision``: itself for fp32, an int8 copy of it for int8 (the original is
    left as it was)."""
    check_precision(precision, device)
    if precision == "fp32":
        return model
    with warnings.catch_warnings():  # torch.ao.quantization announces its move to torchao
        warnings.simplefilter("ignore")
        return torch.ao.quantization.quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8, inplace=False)


def is_quantized(model: nn.Module) -> bool:
    """Whether ``model`` holds dynamically quantised linear layers (an int8 model)."""
    return any(isinstance(m, torch.ao.nn.quantized.dynamic.Linear) for m in model.modules())
