"""An exported encoder (ChunkFormer, Emformer) run by onnxruntime from an export folder
(``export/onnx.py``).

:class:`OnnxEncoder` keeps the StreamingEncoder contract (``encoders/base.py``), so the model,
the long-form decoder, the Recognizer and the server use it as they use the torch encoder; CMVN
and the heads stay in torch. The buffering of arbitrary pieces happens here, in Python; the graphs
only ever see their fixed windows:

- a ChunkFormer context with a right context buffers each stream's features and, at its end,
  runs the front end (in pieces) and the whole-utterance graph on it in one call (exact, and the fastest for files that fit in memory);
  a stream that grows past ``WHOLE_LIMIT_FRAMES`` switches to the step graph, which computes every
  frame once with bounded memory but trails its input by the step's ``delay``;
- a chunk-causal ChunkFormer context (right 0), and every Emformer context, run the step graph as
  soon as a window is in: it has no delay, so partial results come as with the torch encoder.

Shape legend: B streams, T feature frames, F feature bins, T' encoder frames, D model dim.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from echostream.encoders.base import BATCH_DIM_1, ChunkContext, EncoderState
from echostream.export.onnx import ExportedContext, ExportError, ExportInfo, int8_name
from echostream.extras import require

SUBSAMPLING_PIECE = 256
"""Encoder frames the front-end graph makes per call when a whole file is encoded."""

WHOLE_LIMIT_FRAMES = 60_000
"""Feature frames (10 min) a stream may buffer for one whole-utterance call; past it, steps."""


@dataclass(frozen=True)
class OnnxEncoderState(EncoderState):
    """Streams of :class:`OnnxEncoder` (batched on dimension 0 unless marked)."""

    context: ChunkContext
    feats: Tensor  # (B, T, F) normalised features not yet consumed (padded past feats_lens)
    feats_lens: Tensor  # (B,)
    seen: Tensor  # (B,) feature frames received in all
    emitted: Tensor  # (B,) encoder frames returned so far
    stepping: Tensor  # (B,) bool: the stream runs the step graph
    position: Tensor  # (B,) the step graph's position (encoder frames)
    layers: tuple[Tensor, ...] = field(metadata=BATCH_DIM_1)  # the step's states, as export.json lists them


@dataclass
class _Graphs:
    item: ExportedContext
    step: Any  # onnxruntime.InferenceSession
    whole: Any | None


class OnnxEncoder(nn.Module):
    """The exported encoder of ``folder`` (see the module docstring). ``precision`` ``int8``
    runs the int8 graphs, which the export must have written (``echostream export --int8``);
    ``threads``: onnxruntime's threads (default: torch's); ``whole_limit_frames``: the longest
    stream run by the whole-utterance graph."""

    def __init__(
        self, folder: Path, info: ExportInfo, precision: str = "fp32", threads: int | None = None,
        whole_limit_frames: int = WHOLE_LIMIT_FRAMES,
    ) -> None:
        super().__init__()
        require("onnx", "the onnx runtime")
        import onnxruntime as ort

        if precision == "int8" and not info.int8:
            raise ExportError(f"{folder}: exported without int8 graphs (export again with --int8)")
        self.info = info
        self.whole_limit_frames = whole_limit_frames
        self.subsampling = info.subsampling
        self.receptive_field = info.receptive_field
        self.causal = info.causal
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads if threads is not None else torch.get_num_threads()
        options.inter_op_num_threads = 1

        def session(name: str, quantized: bool = precision == "int8") -> Any:
            name = int8_name(name) if quantized else name
            try:
                return ort.InferenceSession(str(folder / name), options, providers=["CPUExecutionProvider"])
            except Exception as err:  # noqa: BLE001 - onnxruntime raises its own exception types
                first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
                raise ExportError(f"{folder / name}: onnxruntime cannot load it ({first})") from None

        self.subsampling_graph = session(info.subsampling_graph, quantized=False) if info.subsampling_graph else None
        self.graphs = {
            item.context: _Graphs(item, session(item.step), session(item.whole) if item.whole else None)
            for item in info.contexts
        }

    def output_size(self) -> int:
        return self.info.output_dim

    def output_lengths(self, x_lens: Tensor) -> Tensor:
        """(B,) feature frames -> (B,) encoder frames (as the torch encoder)."""
        field_, rate = self.receptive_field, self.subsampling
        return torch.where(x_lens >= field_, (x_lens - field_) // rate + 1, 0)

    def check_context(self, context: ChunkContext) -> None:
        if context not in self.graphs:
            raise ValueError(
                "chunk/context {}/{}/{} was not exported (this export has {})".format(*context.as_tuple(), self.info.names())
            )

    def latency_frames(self, context: ChunkContext) -> int:
        self.check_context(context)
        return self.graphs[context].item.delay

    # -- whole utterances --------------------------------------------------------------------

    def forward(self, x: Tensor, x_lens: Tensor, context: ChunkContext) -> tuple[Tensor, Tensor]:
        """x: (B, T, F) normalised, x_lens: (B,) -> (B, T', D), (B,)."""
        self.check_context(context)
        graphs = self.graphs[context]
        if graphs.whole is None:
            state = self.init_state(x.shape[0], context, x.device)
            y, y_lens, _ = self.forward_chunk(x, x_lens, state, torch.ones(x.shape[0], dtype=torch.bool))
            return y, y_lens
        return self._whole(graphs, x, x_lens)

    def _whole(self, graphs: _Graphs, x: Tensor, x_lens: Tensor) -> tuple[Tensor, Tensor]:
        y_lens = self.output_lengths(x_lens)
        frames = self._subsample(x.float().numpy())
        assert graphs.whole is not None
        enc, _ = graphs.whole.run(None, {"frames": frames, "frame_lens": y_lens.numpy()})
        width = int(y_lens.max()) if len(y_lens) else 0
        return torch.from_numpy(enc[:, :width]), y_lens

    def _subsample(self, x: np.ndarray) -> np.ndarray:
        """(B, T, F) features -> (B, T', D) frames, ``SUBSAMPLING_PIECE`` frames per call (the
        same frames as one call: pieces overlap by ``receptive_field - subsampling`` features)."""
        rate, field_ = self.subsampling, self.receptive_field
        assert self.subsampling_graph is not None
        if x.shape[1] < field_:
            x = np.pad(x, ((0, 0), (0, field_ - x.shape[1]), (0, 0)))
        total = (x.shape[1] - field_) // rate + 1
        pieces = [
            self.subsampling_graph.run(None, {"feats": x[:, rate * s : rate * (s + SUBSAMPLING_PIECE) + field_ - rate]})[0]
            for s in range(0, total, SUBSAMPLING_PIECE)
        ]
        return np.concatenate(pieces, axis=1)

    # -- streams -----------------------------------------------------------------------------

    def init_state(self, batch: int, context: ChunkContext, device: torch.device | str = "cpu") -> OnnxEncoderState:
        self.check_context(context)
        item = self.graphs[context].item
        zeros = tuple(torch.zeros(shape[0], batch, *shape[2:]) for shape in item.states.values())
        count = torch.zeros(batch, dtype=torch.long)
        return OnnxEncoderState(
            context=context, feats=torch.zeros(batch, 0, self.info.input_dim), feats_lens=count, seen=count,
            emitted=count, stepping=torch.zeros(batch, dtype=torch.bool), position=count, layers=zeros,
        )

    def forward_chunk(
        self, x: Tensor, x_lens: Tensor, state: OnnxEncoderState, final: Tensor
    ) -> tuple[Tensor, Tensor, OnnxEncoderState]:
        """More normalised features of each stream (see ``StreamingEncoder.forward_chunk``)."""
        graphs = self.graphs[state.context]
        item = graphs.item
        batch = x.shape[0]
        seen = state.seen + x_lens.cpu()
        bufs = [torch.cat([state.feats[b, : int(state.feats_lens[b])], x[b, : int(x_lens[b])].cpu().float()])
                for b in range(batch)]
        stepping = state.stepping | (seen > self.whole_limit_frames) | (graphs.whole is None)
        ends = self.output_lengths(seen)
        names = list(item.states)
        layers = {n: t.numpy().copy() for n, t in zip(names, state.layers, strict=True)}
        position = state.position.numpy().copy()
        outputs: list[list[np.ndarray]] = [[] for _ in range(batch)]
        emitted = state.emitted.clone()
        windows = [self._windows(item, bufs[b], bool(final[b]), int(position[b]), int(ends[b]))
                   if stepping[b] else [] for b in range(batch)]
        for k in range(max((len(w) for w in windows), default=0)):
            rows = [b for b in range(batch) if k < len(windows[b])]
            feeds = {
                "feats": np.stack([windows[b][k] for b in rows]),
                "end": np.array([seen[b] if final[b] else self.info.not_ended for b in rows], dtype=np.int64),
                "position": position[rows],
                **{n: layers[n][:, rows] for n in names},
            }
            enc, next_position, *next_layers = graphs.step.run(None, feeds)
            position[rows] = next_position
            for n, value in zip(names, next_layers, strict=True):
                layers[n][:, rows] = value
            for i, b in enumerate(rows):
                first = int(next_position[i]) - item.step_frames - item.delay  # frame of enc[i, 0]
                stop = int(ends[b]) if final[b] else first + item.step_frames
                lo, hi = max(first, int(emitted[b])), min(first + item.step_frames, stop)
                if hi > lo:
                    outputs[b].append(enc[i, lo - first : hi - first])
                    emitted[b] = hi
        consumed = [len(w) * item.feature_hop for w in windows]
        whole = [b for b in range(batch) if final[b] and not stepping[b]]
        for group in _groups(whole, [len(bufs[b]) for b in whole], self.whole_limit_frames):
            feats = torch.nn.utils.rnn.pad_sequence([bufs[b] for b in group], batch_first=True)
            enc_t, lens = self._whole(graphs, feats, torch.tensor([len(bufs[b]) for b in group]))
            for i, b in enumerate(group):
                outputs[b].append(enc_t[i, : int(lens[i])].numpy())
                emitted[b] = lens[i]
                consumed[b] = len(bufs[b])
        rest = [bufs[b][min(consumed[b], len(bufs[b])):] if not final[b] else bufs[b][:0] for b in range(batch)]
        y_parts = [torch.from_numpy(np.concatenate(o)) if o else torch.zeros(0, self.info.output_dim) for o in outputs]
        y = torch.nn.utils.rnn.pad_sequence(y_parts, batch_first=True) if batch else torch.zeros(0, 0, self.info.output_dim)
        y_lens = torch.tensor([len(p) for p in y_parts], dtype=torch.long)
        new_state = OnnxEncoderState(
            context=state.context,
            feats=torch.nn.utils.rnn.pad_sequence(rest, batch_first=True) if batch else state.feats,
            feats_lens=torch.tensor([len(r) for r in rest], dtype=torch.long), seen=seen, emitted=emitted,
            stepping=stepping, position=torch.from_numpy(position),
            layers=tuple(torch.from_numpy(layers[n]) for n in names),
        )
        return y.to(x.device), y_lens.to(x.device), new_state

    def _windows(self, item: ExportedContext, buf: Tensor, final: bool, position: int, end: int) -> list[np.ndarray]:
        """The step windows of one stream's buffer: whole windows only, and once it has ended,
        zero-padded ones until the step's output has passed the end."""
        count = 0 if len(buf) < item.feature_frames else (len(buf) - item.feature_frames) // item.feature_hop + 1
        if final:  # flush: run until frame end - 1 comes out (``delay`` frames behind the input)
            count = max(0, -(-(end + item.delay - position) // item.step_frames))
        need = (count - 1) * item.feature_hop + item.feature_frames if count else 0
        data = buf.numpy()
        if need > len(data):
            data = np.concatenate([data, np.zeros((need - len(data), data.shape[1]), np.float32)])
        return [data[k * item.feature_hop : k * item.feature_hop + item.feature_frames] for k in range(count)]


def _groups(items: list[int], sizes: list[int], budget: int) -> list[list[int]]:
    """``items`` in order, cut into groups whose padded size (count x longest) stays within
    ``budget`` (an item larger than it goes alone): whole-utterance calls on several long streams
    at once would hold all their activations together.

    >>> _groups([0, 1, 2, 3], [10, 10, 30, 5], 40)
    [[0, 1], [2], [3]]
    """
    groups: list[list[int]] = []
    longest = 0
    for item, size in zip(items, sizes, strict=True):
        if groups and max(longest, size) * (len(groups[-1]) + 1) <= budget:
            groups[-1].append(item)
            longest = max(longest, size)
        else:
            groups.append([item])
            longest = size
    return groups
