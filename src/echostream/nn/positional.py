"""Sinusoidal relative-position tables for chunked attention."""

from __future__ import annotations

import math

import torch
from torch import Tensor


def relative_position_table(d_model: int, *, chunk: int, left: int, right: int) -> Tensor:
    """Sinusoidal encodings of every query-minus-key distance inside a chunk window.

    A query of a chunk sits at window position ``left + i`` (``0 <= i < chunk``) and keys at
    ``0 <= j < left + chunk + right``, so distances run from ``left + chunk - 1`` down to
    ``-(chunk + right - 1)``. Row ``r`` of the table encodes distance ``left + chunk - 1 - r``
    (Transformer-XL order, largest first), with ``sin`` on even and ``cos`` on odd features.

    Returns:
        table: (2 * chunk + left + right - 1, D)

    >>> relative_position_table(4, chunk=1, left=1, right=0)[:, 0]
    tensor([0.8415, 0.0000])
    """
    distance = torch.arange(left + chunk - 1, -(chunk + right), -1, dtype=torch.float32)
    inv_freq = torch.exp(
        torch.arange(0, d_model, 2, dtype=torch.float32) * -(math.log(10000.0) / d_model)
    )
    angle = distance.unsqueeze(1) * inv_freq  # (P, D/2)
    table = torch.zeros(distance.numel(), d_model)
    table[:, 0::2] = torch.sin(angle)
    table[:, 1::2] = torch.cos(angle)
    return table  # (P, D)
