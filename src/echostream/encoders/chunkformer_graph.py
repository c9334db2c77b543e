"""ChunkFormer as tensor-only graphs, for export (ONNX) and runtimes without Python planning.

``ChunkFormerEncoder.forward_chunk`` plans each call in Python (any piece size, per-stream
lists), which an exporter cannot follow. The two computations here give the same frames with
fixed rules and tensors only:

- :class:`Subsampling` then :class:`WholeUtterance`: the front end, then every chunk of every
  utterance of a batch through the layers in one pass (the masked computation of training), for
  files short enough to hold in memory at once.
- :class:`ChunkFormerStep`: one step of ``S = G * C`` new encoder frames (a fixed feature window)
  through a *pipeline*: layer ``i`` works ``i * delay_per_layer`` frames behind layer 0, where
  ``delay_per_layer = (ceil(R / C) + ceil(min(K, R) / C)) * C`` is how far past a chunk its
  attention and convolution look. Each layer keeps, between steps, the keys/values, macaron outputs,
  attention outputs and convolution gates of the frames it has started but cannot finish yet, so
  every frame is computed once. The outputs of a step are the ``S`` frames the last layer finished,
  ``delay`` frames behind the input (none with ``R = 0``). Frames before the stream start or past its
  end (``end``, once known) are masked, so the first steps emit nothing real and the stream ends
  with flushing steps of zero features.

Both equal ``ChunkFormerEncoder.forward`` (tests/encoders/test_chunkformer_graph.py).

Shape legend:
    B streams   N layers   G chunks per step   C chunk, L left, R right (encoder frames)
    S = G * C   D model dim   H heads   Dh = D / H   K = cnn_module_kernel // 2   F feature bins
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from echostream.encoders.base import ChunkContext, StepLayout
from echostream.encoders.chunkformer import ChunkFormerEncoder, ChunkFormerLayer
from echostream.masks import chunk_attn_mask, chunk_conv_mask
from echostream.nn.positional import relative_position_table
from echostream.nn.subsampling import RATE, window_frames

NOT_ENDED = 2**40
"""``end`` of a stream whose length is not known yet (more frames than any stream has)."""


def _chunk_windows(x: Tensor, chunks: int, chunk: int, width: int) -> Tensor:
    """Windows of ``width`` rows starting every ``chunk`` rows: x (B, T, *) -> (B * chunks, width, *)."""
    index = (torch.arange(chunks, device=x.device) * chunk).unsqueeze(1) + torch.arange(width, device=x.device)
    return x[:, index.flatten()].reshape(-1, width, *x.shape[2:])  # (B * chunks, width, *)


def _positions_valid(first: Tensor, length: int, end: Tensor) -> Tensor:
    """(B,) first absolute frame, (B,) end -> (B, length, 1) whether each frame lies in [0, end)."""
    pos = first.unsqueeze(1) + torch.arange(length, device=first.device)  # (B, length)
    return ((pos >= 0) & (pos < end.unsqueeze(1))).unsqueeze(-1)


def _some_key(attn_mask: Tensor) -> Tensor:
    """Let a window with no valid key attend to all of it: its queries lie outside the stream and
    are discarded, but a fully masked softmax would give NaN, and NaN times a zero weight is NaN."""
    return attn_mask | ~attn_mask.any(-1, keepdim=True)


def _attend_chunks(
    layer: ChunkFormerLayer, context: ChunkContext, queries: Tensor, kv_rows: Tensor, first_chunk: Tensor,
    end: Tensor, pos_table: Tensor,
) -> tuple[Tensor, Tensor]:
    """Attention and gate of G chunks per stream.

    queries: (B, S, D) macaron outputs of the chunks; kv_rows: (B, L + S + R', H, 2Dh) keys/values
    from ``L`` frames before the first chunk on (R' >= R); first_chunk: (B,) absolute index of the
    first chunk. Returns attention outputs and gates, (B, S, D) each.
    """
    c = context.chunk
    index, ends = _chunk_index(first_chunk, queries.shape[1] // c, end)
    kv_windows = _chunk_windows(kv_rows, queries.shape[1] // c, c, context.left + c + context.right)  # (B * G, W, H, 2Dh)
    attn_mask = chunk_attn_mask(index, ends, chunk=c, left=context.left, right=context.right)
    attn, gated = layer.attend(queries.reshape(-1, c, queries.shape[2]), kv_windows, pos_table, _some_key(attn_mask))
    return attn.reshape_as(queries), gated.reshape_as(queries)


def _chunk_index(first_chunk: Tensor, chunks: int, end: Tensor) -> tuple[Tensor, Tensor]:
    """(B,) first chunk index, G, (B,) end -> (B * G,) absolute index and end of each chunk."""
    index = first_chunk.unsqueeze(1) + torch.arange(chunks, device=first_chunk.device)  # (B, G)
    return index.flatten(), (end.unsqueeze(1) + torch.zeros_like(index)).flatten()


def _output_chunks(
    layer: ChunkFormerLayer, context: ChunkContext, reach: int, attn: Tensor, gated_rows: Tensor,
    first_chunk: Tensor, end: Tensor,
) -> Tensor:
    """Convolution, feed-forward and final norm of G chunks per stream.

    attn: (B, S, D) attention outputs of the chunks; gated_rows: (B, K + S + K', D) gates from
    ``K`` frames before the first chunk on (K' >= K); first_chunk: (B,). Returns (B, S, D).
    """
    c = context.chunk
    index, ends = _chunk_index(first_chunk, attn.shape[1] // c, end)
    conv_mask = chunk_conv_mask(index, ends, chunk=c, right=context.right, reach=reach)
    conv_windows = None
    if layer.conv_module is not None:
        conv_windows = _chunk_windows(gated_rows, attn.shape[1] // c, c, c + 2 * reach)  # (B * G, C + 2K, D)
    return layer.output(attn.reshape(-1, c, attn.shape[2]), conv_windows, conv_mask).reshape_as(attn)


class Subsampling(nn.Module):
    """The front end alone: x (B, T, F) normalised features -> (B, T', D) layer input, with
    ``T' = (T - 15) // 8 + 1`` (T >= 15). Its convolutions have no time padding, so a frame
    depends only on its own 15 feature frames: contiguous pieces of features cut at multiples of 8
    (with 7 frames of overlap) give the same frames as the whole, and as per-chunk windows."""

    def __init__(self, encoder: ChunkFormerEncoder) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, x: Tensor) -> Tensor:
        enc = self.encoder
        return enc.embed_dropout(enc.embed.convolve(x) * enc.xscale)  # type: ignore[no-any-return]


class WholeUtterance(nn.Module):
    """Whole utterances through ``encoder``'s layers in one pass, tensors only (exportable with a
    dynamic number of frames).

    h: (B, T', D) layer input (:class:`Subsampling` of the features), h_lens: (B,) encoder frames
    -> y: (B, T'', D), y_lens: (B,), with ``T''`` rounded up to whole chunks (zero past ``y_lens``).
    The front end is separate so that a runtime can run it in pieces: on all frames at once, its
    first convolution's output (D channels at half the frame rate and half the bins) is by far the
    largest tensor of the model (2.4 GB for 10 minutes of the large shape).
    """

    pos_table: Tensor  # (2C + L + R - 1, D)

    def __init__(self, encoder: ChunkFormerEncoder, context: ChunkContext) -> None:
        super().__init__()
        encoder.check_context(context)
        self.encoder = encoder
        self.context = context
        table = relative_position_table(encoder.cfg.output_size, chunk=context.chunk, left=context.left, right=context.right)
        self.register_buffer("pos_table", table.to(encoder.after_norm.weight.dtype), persistent=False)

    def forward(self, h: Tensor, h_lens: Tensor) -> tuple[Tensor, Tensor]:
        enc, context = self.encoder, self.context
        c, left, right, reach = context.chunk, context.left, context.right, enc.reach
        chunks = (h.shape[1] + c - 1) // c
        h = F.pad(h, (0, 0, 0, chunks * c - h.shape[1]))  # (B, G * C, D)
        zero = torch.zeros_like(h_lens)
        valid = _positions_valid(zero, chunks * c, h_lens)  # (B, G * C, 1)
        h = h.masked_fill(~valid, 0.0)
        for layer in enc.layers:
            assert isinstance(layer, ChunkFormerLayer)
            macaron, kv = layer.key_values(h)  # (B, G * C, D), (B, G * C, H, 2Dh)
            kv_rows = F.pad(kv, (0, 0, 0, 0, left, right))  # (B, L + G * C + R, H, 2Dh)
            attn, gated = _attend_chunks(layer, context, macaron, kv_rows, zero, h_lens, self.pos_table)
            gated_rows = F.pad(gated, (0, 0, reach, reach))  # (B, K + G * C + K, D)
            h = _output_chunks(layer, context, reach, attn, gated_rows, zero, h_lens)
            h = h.masked_fill(~valid, 0.0)
        return enc.after_norm(h).masked_fill(~valid, 0.0), h_lens


@dataclass(frozen=True)
class StepGeometry:
    """The fixed shapes of a :class:`ChunkFormerStep` (all in frames unless named otherwise)."""

    context: ChunkContext
    chunks_per_step: int  # G
    num_layers: int  # N
    reach: int  # K
    model_dim: int  # D
    heads: int  # H
    input_dim: int  # F

    @property
    def step_frames(self) -> int:
        """S = G * C encoder frames in and out per step."""
        return self.chunks_per_step * self.context.chunk

    @property
    def attn_lag(self) -> int:
        """Frames a layer waits before attending a chunk: its right context, in whole chunks."""
        c = self.context.chunk
        return -(-self.context.right // c) * c

    @property
    def conv_lag(self) -> int:
        """Frames from attention to output: the chunks the convolution reads past its own."""
        c = self.context.chunk
        return -(-min(self.reach, self.context.right) // c) * c

    @property
    def delay(self) -> int:
        """Encoder frames the step's output trails its input."""
        return self.num_layers * (self.attn_lag + self.conv_lag)

    @property
    def feature_frames(self) -> int:
        """Feature frames one step takes: ``8 S + 7`` (the last 7 are again the next step's first)."""
        return window_frames(self.step_frames)

    @property
    def feature_hop(self) -> int:
        """Feature frames a step advances by (``8 S``)."""
        return RATE * self.step_frames

    def state_shapes(self, batch: int) -> dict[str, tuple[int, ...]]:
        """The shape of each state tensor besides ``position`` (batch ``batch``, float)."""
        n, d, dh2 = self.num_layers, self.model_dim, 2 * (self.model_dim // self.heads)
        return {
            "kv": (n, batch, self.context.left + self.attn_lag, self.heads, dh2),
            "macaron": (n, batch, self.attn_lag, d),
            "attn": (n, batch, self.conv_lag, d),
            "gated": (n, batch, self.reach + self.conv_lag, d),
        }


class ChunkFormerStep(nn.Module):
    """One fixed-shape step of ChunkFormer streams (see the module docstring).

    ``forward(feats, end, position, kv, macaron, attn, gated)``:
        feats: (B, 8 S + 7, F) normalised features of encoder frames ``position .. position + S``;
        end: (B,) feature frames of each stream once known, else ``NOT_ENDED`` (every exported
        step takes the end in feature frames, see ``encoders.base.StepLayout``);
        position: (B,) int64 encoder frame of the step's first input frame (0, S, 2S, ...);
        kv, macaron, attn, gated: the state tensors (``StepGeometry.state_shapes``), zeros at first.
    Returns ``(y, position, kv, macaron, attn, gated)``: y (B, S, D) encoder frames
    ``position - delay .. position - delay + S`` (zero where outside ``[0, end)``), and the new
    state (``position + S`` and the rest). The old state is not modified.
    """

    pos_table: Tensor  # (2C + L + R - 1, D)

    def __init__(self, encoder: ChunkFormerEncoder, context: ChunkContext, chunks_per_step: int) -> None:
        super().__init__()
        encoder.check_context(context)
        if chunks_per_step < 1:
            raise ValueError(f"chunks_per_step must be at least 1, got {chunks_per_step}")
        cfg = encoder.cfg
        self.encoder = encoder
        self.geometry = StepGeometry(
            context=context, chunks_per_step=chunks_per_step, num_layers=cfg.num_blocks, reach=encoder.reach,
            model_dim=cfg.output_size, heads=cfg.attention_heads, input_dim=cfg.input_dim,
        )
        self.subsampling = Subsampling(encoder)
        table = relative_position_table(cfg.output_size, chunk=context.chunk, left=context.left, right=context.right)
        self.register_buffer("pos_table", table.to(encoder.after_norm.weight.dtype), persistent=False)

    @property
    def layout(self) -> StepLayout:
        geo = self.geometry
        return StepLayout(feature_frames=geo.feature_frames, feature_hop=geo.feature_hop,
                          step_frames=geo.step_frames, delay=geo.delay, states=geo.state_shapes(1))

    def init_state(self, batch: int, device: torch.device | str = "cpu") -> tuple[Tensor, ...]:
        """``(position, kv, macaron, attn, gated)`` of ``batch`` streams that have seen nothing."""
        dtype = self.pos_table.dtype
        shapes = self.geometry.state_shapes(batch)
        position = torch.zeros(batch, dtype=torch.long, device=device)
        return (position, *(torch.zeros(shapes[name], dtype=dtype, device=device) for name in shapes))

    def forward(
        self, feats: Tensor, end: Tensor, position: Tensor, kv: Tensor, macaron: Tensor, attn: Tensor, gated: Tensor
    ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
        geo, enc = self.geometry, self.encoder
        context, c, s = geo.context, geo.context.chunk, geo.step_frames
        a, b, reach = geo.attn_lag, geo.conv_lag, geo.reach
        end = enc.output_lengths(end)  # (B,) encoder frames
        h = self.subsampling(feats)  # (B, S, D) frames [p, p + S)
        new_kv, new_macaron, new_attn, new_gated = [], [], [], []
        first = position  # (B,) first input frame of this layer
        for i, layer in enumerate(enc.layers):
            assert isinstance(layer, ChunkFormerLayer)
            mac_new, kv_new = layer.key_values(h)  # (B, S, D), (B, S, H, 2Dh)
            kv_rows = torch.cat([kv[i], kv_new], dim=1)  # (B, L + a + S, H, 2Dh) frames [q - L, p + S)
            mac_rows = torch.cat([macaron[i], mac_new], dim=1)  # (B, a + S, D) frames [q, p + S)
            query_first = first - a  # q
            attn_new, gated_new = _attend_chunks(
                layer, context, mac_rows[:, :s], kv_rows, torch.div(query_first, c, rounding_mode="floor"),
                end, self.pos_table,
            )  # (B, S, D) each, frames [q, q + S)
            attn_rows = torch.cat([attn[i], attn_new], dim=1)  # (B, b + S, D) frames [r, q + S)
            gated_rows = torch.cat([gated[i], gated_new], dim=1)  # (B, K + b + S, D) frames [r - K, q + S)
            out_first = query_first - b  # r
            padded = F.pad(gated_rows, (0, 0, 0, max(0, reach - b)))  # (B, >= K + S + K, D)
            h = _output_chunks(
                layer, context, reach, attn_rows[:, :s], padded, torch.div(out_first, c, rounding_mode="floor"), end
            )
            h = h.masked_fill(~_positions_valid(out_first, s, end), 0.0)  # (B, S, D) frames [r, r + S)
            new_kv.append(kv_rows[:, s:])
            new_macaron.append(mac_rows[:, s:])
            new_attn.append(attn_rows[:, s:])
            new_gated.append(gated_rows[:, s:])
            first = out_first
        y = enc.after_norm(h).masked_fill(~_positions_valid(first, s, end), 0.0)
        return y, position + s, torch.stack(new_kv), torch.stack(new_macaron), torch.stack(new_attn), torch.stack(new_gated)
