"""Export a model to ONNX: a folder that onnxruntime runs behind the same API (every encoder:
ChunkFormer, Emformer, Zipformer; the layout below is a ChunkFormer's, whose whole-utterance and
front-end graphs the others do not have).

``export_onnx(bundle, folder)`` writes::

    folder/
      model.pt                          the echostream checkpoint (config, vocabulary, fbank,
                                        CMVN, CTC head; the torch encoder too, for re-export)
      subsampling.onnx                  the front end: feats (B, T, F) normalised -> frames
                                        (B, (T - 15) // 8 + 1, D); run it in pieces (below)
      encoder_whole_c64_l128_r128.onnx  whole utterances of one context: frames (B, T', D),
                                        frame_lens (B,) -> enc (B, T'', D), enc_lens (B,)
      encoder_step_c64_l128_r128_g4.onnx  one fixed-window step of that context (below)
      encoder_step_c8_l32_r0_g1.onnx
      *.int8.onnx                       the same with int8 linear layers (``int8=True``)
      export.json                       what a runtime needs (also each file's metadata_props)

The step graph (``encoders/chunkformer_graph.py``; ``EmformerStep``, ``ZipformerStep``) takes
``feats`` (B, feature_frames, F) normalised features (8 S + 7 for ChunkFormer), ``end`` (B,) int64
the stream's *feature* frames once known (else ``not_ended``),
``position`` (B,) int64 and the float state tensors ``kv``, ``macaron``, ``attn``, ``gated``, whose
zero shapes ``export.json`` lists with a batch of 1 (dimension 1 is the batch); it returns
``enc`` (B, S, D), frames ``position - delay .. + S``, and ``next_<name>`` for each state, in the
sherpa-onnx manner: a runtime in any language builds zero states from the metadata alone.

The front end is a graph of its own so that a runtime can run it on contiguous pieces of features
(cut at multiples of 8 feature frames, overlapping by 7: the same frames as the whole): on a whole
file at once its first convolution's output is the largest tensor of the model. Contexts with a
right context get both graphs: the whole-utterance graph is the fast one for files
that fit in memory; the step graph computes every frame once but trails its input by ``delay``
frames (its warm-up and flush cost about that many frames of compute), so it serves long streams.
Chunk-causal contexts (right 0) get the step graph only: it has no delay.

The TorchScript exporter is used (``dynamo=False``): the dynamo exporter fails on the reshape of the
attention output in torch 2.13. Every export is checked: onnxruntime must give what torch gives on
random features (within ``EXPORT_TOLERANCE``) before the folder is written.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from echostream.encoders.base import (
    OFFLINE_CONTEXT,
    STREAMING_CONTEXT,
    ChunkContext,
    default_right_context,
)
from echostream.encoders.chunkformer import ChunkFormerEncoder
from echostream.encoders.chunkformer_graph import (
    NOT_ENDED,
    ChunkFormerStep,
    Subsampling,
    WholeUtterance,
)
from echostream.encoders.emformer import EmformerEncoder, EmformerStep
from echostream.encoders.zipformer import ZipformerEncoder, ZipformerStep
from echostream.extras import require
from echostream.models.checkpoint import ModelBundle, save_checkpoint
from echostream.models.precision import is_quantized

EXPORT_FILE = "export.json"
SUBSAMPLING_FILE = "subsampling.onnx"
EXPORT_VERSION = 1
OPSET = 17
EXPORT_TOLERANCE = 1e-4
STEP_FRAMES_OFFLINE = 256
"""Encoder frames per step for contexts with a right context (about 20 s: large enough to keep the
matrix products efficient); chunk-causal contexts step one chunk at a time (lowest latency)."""


class ExportError(ValueError):
    """A model or setting that cannot be exported, or an export folder that cannot be used."""


@dataclass(frozen=True, kw_only=True)
class ExportedContext:
    """The graphs of one chunk/context in an export folder, and the step's fixed shapes."""

    chunk: int
    left: int
    right: int
    chunks_per_step: int
    step: str  # file name of the step graph
    whole: str | None  # file name of the whole-utterance graph (None for right == 0)
    step_frames: int
    feature_frames: int
    feature_hop: int
    delay: int
    states: dict[str, list[int]]  # state name -> zero shape with a batch of 1 (dimension 1)

    @property
    def context(self) -> ChunkContext:
        return ChunkContext(chunk=self.chunk, left=self.left, right=self.right)


@dataclass(frozen=True, kw_only=True)
class ExportInfo:
    """What ``export.json`` holds."""

    version: int
    encoder_type: str
    input_dim: int
    output_dim: int
    subsampling_graph: str | None  # file name of the front-end graph (ChunkFormer)
    subsampling: int
    receptive_field: int
    causal: bool
    not_ended: int
    int8: bool
    contexts: list[ExportedContext]

    def find(self, context: ChunkContext) -> ExportedContext | None:
        return next((c for c in self.contexts if c.context == context), None)

    def names(self) -> str:
        """The exported contexts as ``C/L/R`` for messages."""
        return ", ".join("{}/{}/{}".format(*c.context.as_tuple()) for c in self.contexts)


def context_name(context: ChunkContext) -> str:
    return "c{}_l{}_r{}".format(*context.as_tuple())


def default_chunks_per_step(context: ChunkContext) -> int:
    """One chunk per step for a chunk-causal context, else about ``STEP_FRAMES_OFFLINE`` frames."""
    return 1 if context.right == 0 else max(1, STEP_FRAMES_OFFLINE // context.chunk)


def export_onnx(
    bundle: ModelBundle,
    folder: str | Path,
    contexts: Sequence[ChunkContext] | None = None,
    *,
    chunks_per_step: int | None = None,
    int8: bool = False,
    overwrite: bool = False,
    progress: Callable[[str], None] | None = None,
) -> Path:
    """Write ``bundle`` as an ONNX export folder (see the module docstring) and return its path.

    ``contexts``: default the long-form and streaming defaults (the long-form one without right
    context for a chunk-causal encoder such as the Zipformer);
    ``chunks_per_step``: chunks per step graph (default: ``default_chunks_per_step``);
    ``int8``: also write int8 graphs (onnxruntime dynamic quantisation of MatMul/Gemm weights).
    The folder is assembled aside and moved into place, so a failed export leaves nothing behind.
    """
    require("onnx", "ONNX export")
    encoder = bundle.model.encoder
    chunkformer = isinstance(encoder, ChunkFormerEncoder)
    if not isinstance(encoder, (ChunkFormerEncoder, EmformerEncoder, ZipformerEncoder)):
        raise ExportError(f"ONNX export covers ChunkFormer, Emformer and Zipformer encoders; this model's is "
                          f"{type(encoder).__name__}")
    if not chunkformer and chunks_per_step not in (None, 1):
        raise ExportError(f"an Emformer or Zipformer step is one chunk: chunks per step must be 1, got {chunks_per_step}")
    if contexts is None:
        contexts = [dataclasses.replace(OFFLINE_CONTEXT, right=default_right_context(encoder)), STREAMING_CONTEXT]
    if is_quantized(bundle.model):
        raise ExportError("export the fp32 model: int8 graphs are made from it with int8=True")
    if not contexts:
        raise ExportError("name at least one chunk/context to export")
    if len(set(contexts)) != len(contexts):
        raise ExportError("a chunk/context is named twice")
    if chunks_per_step is not None and chunks_per_step < 1:
        raise ExportError(f"chunks per step must be at least 1, got {chunks_per_step}")
    folder = Path(folder)
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())) and not overwrite:
        raise ExportError(f"{folder}: exists and is not an empty folder (choose another, or overwrite)")
    say = progress if progress is not None else (lambda _: None)
    folder.parent.mkdir(parents=True, exist_ok=True)
    encoder.eval()
    with tempfile.TemporaryDirectory(dir=folder.parent, prefix=f".{folder.name}.") as tmp:
        work = Path(tmp)
        save_checkpoint(work / "model.pt", bundle)
        if isinstance(encoder, ChunkFormerEncoder):
            say(f"exporting {SUBSAMPLING_FILE}")
            _export_subsampling(Subsampling(encoder).eval(), work / SUBSAMPLING_FILE)
        exported = []
        for context in contexts:
            encoder.check_context(context)
            g = 1 if not chunkformer else chunks_per_step if chunks_per_step is not None else default_chunks_per_step(context)
            step = _step_module(encoder, context, g).eval()
            layout = step.layout
            step_file = f"encoder_step_{context_name(context)}_g{g}.onnx"
            say(f"exporting {step_file}")
            _export_step(step, work / step_file, encoder.cfg.input_dim)
            whole_file = None
            if isinstance(encoder, ChunkFormerEncoder) and context.right > 0:
                whole_file = f"encoder_whole_{context_name(context)}.onnx"
                say(f"exporting {whole_file}")
                _export_whole(WholeUtterance(encoder, context).eval(), work / whole_file)
            exported.append(ExportedContext(
                chunk=context.chunk, left=context.left, right=context.right, chunks_per_step=g,
                step=step_file, whole=whole_file, step_frames=layout.step_frames,
                feature_frames=layout.feature_frames, feature_hop=layout.feature_hop, delay=layout.delay,
                states={name: list(shape) for name, shape in layout.states.items()},
            ))
        info = ExportInfo(
            version=EXPORT_VERSION, encoder_type=encoder.cfg.TYPE, input_dim=encoder.cfg.input_dim,
            output_dim=encoder.output_size(), subsampling_graph=SUBSAMPLING_FILE if chunkformer else None,
            subsampling=encoder.subsampling, receptive_field=encoder.receptive_field, causal=encoder.causal,
            not_ended=NOT_ENDED, int8=int8, contexts=exported,
        )
        if chunkformer:
            _add_metadata(work / SUBSAMPLING_FILE, info, None)
        for item in exported:
            for name in (item.step, item.whole):
                if name is None:
                    continue
                _add_metadata(work / name, info, item)
                if int8:
                    say(f"quantising {name}")
                    _quantize(work / name, work / int8_name(name))
        (work / EXPORT_FILE).write_text(json.dumps(dataclasses.asdict(info), indent=2) + "\n", encoding="utf-8")
        mask = os.umask(0)
        os.umask(mask)
        for path in work.iterdir():  # the temporary folder and checkpoint are private to the user
            path.chmod(0o666 & ~mask)
        work.chmod(0o777 & ~mask)
        if folder.exists():
            shutil.rmtree(folder)
        shutil.move(str(work), folder)
        work.mkdir()  # TemporaryDirectory removes its (now empty) folder
    return folder


def int8_name(name: str) -> str:
    """``encoder_x.onnx`` -> ``encoder_x.int8.onnx``."""
    return name.removesuffix(".onnx") + ".int8.onnx"


def read_export_info(folder: Path) -> ExportInfo:
    """``folder/export.json``, checked; ExportError (one line) if it is missing or damaged."""
    path = folder / EXPORT_FILE
    if not path.is_file():
        raise ExportError(f"{folder}: not an ONNX export folder (no {EXPORT_FILE}; make one with echostream export)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        contexts = [ExportedContext(**{**c, "states": {k: list(v) for k, v in c["states"].items()}})
                    for c in data.pop("contexts")]
        info = ExportInfo(**data, contexts=contexts)
    except (ValueError, TypeError, KeyError, AttributeError) as err:
        raise ExportError(f"{path}: damaged export description ({type(err).__name__}: {err})") from None
    if info.version != EXPORT_VERSION:
        raise ExportError(f"{path}: export version {info.version!r} is not supported ({EXPORT_VERSION})")
    for name in (info.subsampling_graph, *(n for item in info.contexts for n in (item.step, item.whole))):
        if name is not None and not (folder / name).is_file():
            raise ExportError(f"{folder}: {name} is missing")
    return info


def _export_subsampling(sub: Subsampling, path: Path) -> None:
    x = torch.randn(2, 8 * 20 + 7, sub.encoder.cfg.input_dim)
    _trace(sub, (x,), path, ["feats"], ["frames"], {"feats": {0: "B", 1: "T"}, "frames": {0: "B", 1: "T_out"}})
    _check(path, sub, (torch.randn(3, 8 * 33 + 10, x.shape[2]),))  # a shape the trace did not see


def _export_whole(whole: WholeUtterance, path: Path) -> None:
    c, d = whole.context.chunk, whole.encoder.output_size()
    frames = torch.randn(2, 3 * c, d)
    _trace(whole, (frames, torch.tensor([3 * c, 2 * c - 1])), path, ["frames", "frame_lens"], ["enc", "enc_lens"],
           {"frames": {0: "B", 1: "T"}, "frame_lens": {0: "B"}, "enc": {0: "B", 1: "T_out"}, "enc_lens": {0: "B"}})
    # a length the trace did not see, checked against torch
    _check(path, whole, (torch.randn(2, 5 * c + 2, d), torch.tensor([5 * c + 2, 2 * c + 1])))


def _step_module(encoder: nn.Module, context: ChunkContext, chunks_per_step: int) -> ChunkFormerStep | EmformerStep | ZipformerStep:
    if isinstance(encoder, ChunkFormerEncoder):
        return ChunkFormerStep(encoder, context, chunks_per_step)
    if isinstance(encoder, EmformerEncoder):
        return EmformerStep(encoder, context)
    assert isinstance(encoder, ZipformerEncoder)
    return ZipformerStep(encoder, context)


def _export_step(step: ChunkFormerStep | EmformerStep | ZipformerStep, path: Path, input_dim: int) -> None:
    """A step module (``layout``, ``init_state``; see ``encoders.base.StepLayout``) as a graph with
    named states, checked against torch on a later step with a state that is not zero."""
    layout = step.layout
    names = list(layout.states)
    feats = torch.randn(2, layout.feature_frames, input_dim)
    state = step.init_state(2)
    end = torch.tensor([NOT_ENDED, NOT_ENDED])
    inputs = ["feats", "end", "position", *names]
    outputs = ["enc", "next_position", *(f"next_{n}" for n in names)]
    axes: dict[str, dict[int, str]] = {"feats": {0: "B"}, "end": {0: "B"}, "position": {0: "B"},
                                       "enc": {0: "B"}, "next_position": {0: "B"}}
    for n in names:
        axes[n] = axes[f"next_{n}"] = {1: "B"}
    _trace(step, (feats, end, *state), path, inputs, outputs, axes)
    with torch.no_grad():
        _, *state = step(feats, end, *state)
    ends = 2 * layout.feature_hop + layout.feature_frames // 2  # one stream ends within the window
    end = torch.tensor([NOT_ENDED, ends])
    _check(path, step, (torch.randn(2, layout.feature_frames, input_dim), end, *state))


def _trace(module: nn.Module, args: tuple[Any, ...], path: Path, inputs: list[str], outputs: list[str],
           axes: dict[str, dict[int, str]]) -> None:
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript exporter warns about its deprecation and traced shapes
        torch.onnx.export(module, args, str(path), dynamo=False, opset_version=OPSET, input_names=inputs,
                          output_names=outputs, dynamic_axes=axes, do_constant_folding=True)


def _check(path: Path, module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
    """onnxruntime gives what ``module`` gives on ``args``, else ExportError."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    got = session.run(None, {n: a.numpy() for n, a in zip(names, args, strict=True)})
    with torch.no_grad():
        want = module(*args)
    want = (want,) if isinstance(want, torch.Tensor) else want
    for name, g, w in zip([o.name for o in session.get_outputs()], got, want, strict=True):
        diff = float(np.abs(g - w.numpy()).max()) if g.size else 0.0
        if g.shape != tuple(w.shape) or diff > EXPORT_TOLERANCE:
            raise ExportError(f"{path.name}: onnxruntime differs from torch in {name} "
                              f"(shape {g.shape} vs {tuple(w.shape)}, max |diff| {diff:.3g})")


def _add_metadata(path: Path, info: ExportInfo, item: ExportedContext | None) -> None:
    """Copy what a runtime needs into the graph's ``metadata_props`` (sherpa-onnx style)."""
    import onnx

    model = onnx.load(str(path))
    values: dict[str, Any] = {
        "model_type": info.encoder_type, "export_version": info.version, "subsampling": info.subsampling,
        "receptive_field": info.receptive_field, "input_dim": info.input_dim, "output_dim": info.output_dim,
        "not_ended": info.not_ended, "graph": "subsampling",
    }
    if item is not None:
        values.update({k: v for k, v in dataclasses.asdict(item).items() if k != "states"})
        values["graph"] = "step" if path.name == item.step else "whole"
        for name, shape in item.states.items():
            values[f"state_{name}_shape"] = ",".join(map(str, shape))
    del model.metadata_props[:]
    for key, value in values.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, str(value)
    onnx.save(model, str(path))


def _quantize(source: Path, target: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    logging.getLogger().setLevel(max(logging.getLogger().level, logging.ERROR))  # its pre-processing advice
    quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul", "Gemm"])

