"""The ChunkFormer encoder: a Conformer whose attention sees [left, chunk, right] windows.

One computation serves training, batch inference, long-form and streaming. Every layer works on
*chunks* of ``C`` encoder frames: the chunks of all utterances of a batch are flattened into one
batch (the "masked batch"), each chunk gathering its key window and its convolution window from a
per-utterance *timeline* that begins with the cached frames of the previous call.

Layers advance as a wavefront. A layer emits a chunk only once its output can no longer change:
its attention needs ``R`` frames of layer input past the chunk, and (when ``R > 0``) its
convolution needs the first frames of the next chunk's attention output, so ``C + R`` frames past
the chunk. Inputs a layer cannot use yet wait in the state. Hence feeding a stream in pieces of any
size gives the same frames as feeding it whole. Nothing is computed twice: the frames waiting for
their look-ahead keep what was already computed for them (macaron output and keys/values, then
attention output and convolution gate), and the layer runs in three stages (``key_values``,
``attend``, ``output``) so that each stage runs on the frames that reach it for the first time.

Shape legend:
    B streams/utterances   N layers (blocks)   T feature frames   F feature bins
    D model dim   H heads   Dh = D / H   C chunk, L left, R right context (encoder frames)
    K = cnn_module_kernel // 2   W = L + C + R   P pending frames
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from echostream.encoders.base import BATCH_DIM_1, ChunkContext, EncoderConfig, EncoderState
from echostream.masks import chunk_attn_mask, chunk_conv_mask
from echostream.nn.attention import ChunkRelPositionAttention
from echostream.nn.convolution import ChunkConvolution
from echostream.nn.feedforward import FeedForward
from echostream.nn.positional import relative_position_table
from echostream.nn.subsampling import (
    RATE,
    RECEPTIVE_FIELD,
    DepthwiseStridingSubsampling,
    subsampled_length,
    window_frames,
)


@dataclass(frozen=True, kw_only=True)
class ChunkFormerConfig(EncoderConfig):
    """Shape of a ChunkFormer encoder (names follow the released ``encoder_conf``)."""

    TYPE = "chunkformer"
    type: str = "chunkformer"
    input_dim: int = 80
    output_size: int = 256
    attention_heads: int = 4
    linear_units: int = 2048
    num_blocks: int = 12
    cnn_module_kernel: int = 15
    cnn_module_norm: str = "layer_norm"
    activation_type: str = "swish"
    macaron_style: bool = True
    use_cnn_module: bool = True
    dropout_rate: float = 0.1
    positional_dropout_rate: float = 0.1
    attention_dropout_rate: float = 0.1

    KEY_PREFIX = "encoder_conf"  # as released configs name it

    def __post_init__(self) -> None:
        super().__post_init__()
        self.check_shape(("input_dim", "output_size", "attention_heads", "linear_units", "num_blocks"))
        if self.cnn_module_norm not in ("layer_norm", "batch_norm"):
            raise ValueError(
                f"encoder_conf.cnn_module_norm {self.cnn_module_norm!r} is not layer_norm or batch_norm"
            )
        if self.cnn_module_kernel % 2 != 1:
            raise ValueError(f"encoder_conf.cnn_module_kernel must be odd, got {self.cnn_module_kernel}")


@dataclass(frozen=True)
class ChunkFormerState(EncoderState):
    """Everything a ChunkFormer stream carries between calls. Never edited in place.

    Frames waiting at a layer's input for their look-ahead keep what was already computed for
    them (the first ``kv_lens`` their macaron output and keys/values, the first ``attn_lens``
    their attention output and GLU gate), so that no frame is computed twice.
    """

    context: ChunkContext
    feat_pending: Tensor  # (B, 14, F)        normalised feature frames not yet subsampled
    feat_pending_lens: Tensor  # (B,)
    pending: Tensor = field(metadata=BATCH_DIM_1)  # (N, B, P, D)         layer inputs received but not yet consumed
    pending_lens: Tensor = field(metadata=BATCH_DIM_1)  # (N, B)
    pending_macaron: Tensor = field(metadata=BATCH_DIM_1)  # (N, B, P, D)   after the macaron feed-forward
    pending_kv: Tensor = field(metadata=BATCH_DIM_1)  # (N, B, P, H, 2*Dh)  their keys/values
    kv_lens: Tensor = field(metadata=BATCH_DIM_1)  # (N, B)              pending frames with the two above
    pending_attn: Tensor = field(metadata=BATCH_DIM_1)  # (N, B, P, D)      after the attention
    pending_gated: Tensor = field(metadata=BATCH_DIM_1)  # (N, B, P, D)     their convolution gate (GLU) outputs
    attn_lens: Tensor = field(metadata=BATCH_DIM_1)  # (N, B)            pending frames with the two above
    att_cache: Tensor = field(metadata=BATCH_DIM_1)  # (N, B, L, H, 2*Dh)  keys/values of the L frames before each layer's offset
    conv_cache: Tensor = field(metadata=BATCH_DIM_1)  # (N, B, K, D)        GLU outputs of the K frames before each layer's offset
    offset: Tensor = field(metadata=BATCH_DIM_1)  # (N, B)              frames each layer has emitted so far

    @property
    def frames_emitted(self) -> Tensor:
        """(B,) encoder frames the encoder has emitted for each stream."""
        return self.offset[-1]


@dataclass
class _Waiting:
    """One stream's frames waiting at one layer, with what is already computed for them."""

    inputs: Tensor  # (A, D) layer inputs
    macaron: Tensor  # (Pk, D) after the macaron feed-forward, Pk <= A
    kv: Tensor  # (Pk, H, 2Dh)
    attn: Tensor  # (Pa, D) after the attention, Pa <= Pk
    gated: Tensor  # (Pa, D)

    def drop(self, n: int) -> _Waiting:
        """The frames after the first ``n`` (those emitted)."""
        return _Waiting(self.inputs[n:], self.macaron[n:], self.kv[n:], self.attn[n:], self.gated[n:])


def _rows(x: Tensor, start: int, stop: int) -> Tensor:
    """Rows ``start:stop`` of x (T, *), zero-padded where x ends before ``stop``."""
    rows = x[start:stop]
    missing = stop - start - rows.shape[0]
    return F.pad(rows, (0, 0) * (x.dim() - 1) + (0, missing)) if missing > 0 else rows


@dataclass(frozen=True)
class _PassPlan:
    """What one pass of one layer does for one stream (frame counts relative to its pending
    frames; ``start`` is the absolute frame of the first)."""

    start: int
    available: int  # frames waiting at the layer's input
    commit: int  # frames emitted by this pass
    kv_rows: int  # frames whose keys/values the attention windows read
    kv_chunks: int  # chunks of the attention timeline (kv_rows rounded up)
    query_first: int  # first chunk whose attention is computed (earlier ones are cached)
    run_chunks: int  # chunks whose attention output exists after the pass
    out_chunks: int  # chunks whose convolution and output are computed (commit rounded up)


@dataclass(frozen=True)
class _ChunkLayout:
    """Where one layer pass's frames come from and go to (index tensors, built per pass).

    Per stream the attention timeline is [att cache (L) | keys/values of kv_chunks chunks |
    zeros (R)] and the convolution timeline [conv cache (K) | GLU outputs of run_chunks chunks |
    zeros (K)]; absent frames are zero and masked.
    """

    attn_mask: Tensor  # (Nq, W) of the chunks whose attention is computed
    att_length: int
    att_cache_pos: Tensor  # (B * L,) timeline rows receiving the cache
    att_frame_pos: Tensor  # (sum kv_rows,) timeline rows receiving keys/values
    att_windows: Tensor  # (Nq, W) timeline rows of each query chunk's key window
    att_cache_take: Tensor  # (B, L) timeline rows of the new cache
    conv_mask: Tensor  # (No, C + 2K) of the chunks whose convolution is computed
    conv_length: int
    conv_cache_pos: Tensor  # (B * K,)
    conv_frame_pos: Tensor  # (sum run_chunks * C,)
    conv_windows: Tensor  # (No, C + 2K)
    conv_cache_take: Tensor  # (B, K)


def _chunk_layout(context: ChunkContext, reach: int, plans: list[_PassPlan], device: torch.device) -> _ChunkLayout:
    """Index tensors for one layer pass over the streams of ``plans``."""
    c, left, right = context.chunk, context.left, context.right
    att_cache_pos: list[int] = []
    att_frame_pos: list[int] = []
    att_starts: list[int] = []
    att_take: list[list[int]] = []
    att_index: list[int] = []
    att_end: list[int] = []
    conv_cache_pos: list[int] = []
    conv_frame_pos: list[int] = []
    conv_starts: list[int] = []
    conv_take: list[list[int]] = []
    conv_index: list[int] = []
    conv_end: list[int] = []
    att_base = conv_base = 0
    for p in plans:
        first, end = p.start // c, p.start + p.available
        att_cache_pos.extend(range(att_base, att_base + left))
        att_frame_pos.extend(range(att_base + left, att_base + left + p.kv_rows))
        for j in range(p.query_first, p.run_chunks):
            att_starts.append(att_base + j * c)
            att_index.append(first + j)
            att_end.append(end)
        att_take.append(list(range(att_base + p.commit, att_base + p.commit + left)))
        conv_cache_pos.extend(range(conv_base, conv_base + reach))
        conv_frame_pos.extend(range(conv_base + reach, conv_base + reach + p.run_chunks * c))
        for j in range(p.out_chunks):
            conv_starts.append(conv_base + j * c)
            conv_index.append(first + j)
            conv_end.append(end)
        conv_take.append(list(range(conv_base + p.commit, conv_base + p.commit + reach)))
        att_base += left + p.kv_chunks * c + right
        conv_base += reach + p.run_chunks * c + reach

    def tensor(values: list[int] | list[list[int]]) -> Tensor:
        return torch.tensor(values, dtype=torch.long, device=device)

    return _ChunkLayout(
        attn_mask=chunk_attn_mask(tensor(att_index), tensor(att_end), chunk=c, left=left, right=right),
        att_length=att_base,
        att_cache_pos=tensor(att_cache_pos),
        att_frame_pos=tensor(att_frame_pos),
        att_windows=tensor(att_starts).view(-1, 1) + torch.arange(left + c + right, device=device),
        att_cache_take=tensor(att_take).view(len(plans), left),
        conv_mask=chunk_conv_mask(tensor(conv_index), tensor(conv_end), chunk=c, right=right, reach=reach),
        conv_length=conv_base,
        conv_cache_pos=tensor(conv_cache_pos),
        conv_frame_pos=tensor(conv_frame_pos),
        conv_windows=tensor(conv_starts).view(-1, 1) + torch.arange(c + 2 * reach, device=device),
        conv_cache_take=tensor(conv_take).view(len(plans), reach),
    )


def _timeline(length: int, cache: Tensor, cache_pos: Tensor, frames: Tensor, frame_pos: Tensor) -> Tensor:
    """Rows of cache and frames placed at their timeline positions, zeros elsewhere.

    cache: (B, Lc, *), frames: (M, *) -> (length, *)
    """
    rows = frames.new_zeros((length, *frames.shape[1:]))
    rows = rows.index_copy(0, cache_pos, cache.flatten(0, 1).to(frames.dtype))
    return rows.index_copy(0, frame_pos, frames)


class ChunkFormerLayer(nn.Module):
    """Macaron feed-forward, chunked attention, chunked convolution, feed-forward, final norm.

    Streaming runs it in three stages, each on the frames that reach it for the first time:
    ``key_values`` per frame, ``attend`` per chunk (once its right context is in), ``output``
    per chunk to emit (once the convolution's look-ahead is attended).
    """

    def __init__(self, cfg: ChunkFormerConfig) -> None:
        super().__init__()
        d = cfg.output_size
        self.self_attn = ChunkRelPositionAttention(d, cfg.attention_heads, cfg.attention_dropout_rate)
        self.feed_forward = FeedForward(d, cfg.linear_units, cfg.dropout_rate, cfg.activation_type)
        self.feed_forward_macaron = (
            FeedForward(d, cfg.linear_units, cfg.dropout_rate, cfg.activation_type)
            if cfg.macaron_style
            else None
        )
        self.conv_module = (
            ChunkConvolution(d, cfg.cnn_module_kernel, cfg.cnn_module_norm, cfg.activation_type)
            if cfg.use_cnn_module
            else None
        )
        self.norm_ff = nn.LayerNorm(d)
        self.norm_mha = nn.LayerNorm(d)
        self.norm_ff_macaron = nn.LayerNorm(d) if cfg.macaron_style else None
        self.norm_conv = nn.LayerNorm(d) if cfg.use_cnn_module else None
        self.norm_final = nn.LayerNorm(d) if cfg.use_cnn_module else None
        self.ff_scale = 0.5 if cfg.macaron_style else 1.0
        self.dropout = nn.Dropout(cfg.dropout_rate)

    def key_values(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """The per-frame start of the layer: the macaron feed-forward, then keys and values.

        x: (M, D) layer input frames -> x: (M, D) after the macaron feed-forward, kv: (M, H, 2Dh).
        """
        if self.feed_forward_macaron is not None and self.norm_ff_macaron is not None:
            x = x + self.ff_scale * self.dropout(self.feed_forward_macaron(self.norm_ff_macaron(x)))
        return x, self.self_attn.key_values(self.norm_mha(x))

    def attend(self, x: Tensor, kv_windows: Tensor, pos_table: Tensor, attn_mask: Tensor) -> tuple[Tensor, Tensor]:
        """Chunked attention, then the convolution module's per-frame gate.

        Args:
            x: (Nq, C, D) frames after the macaron feed-forward, chunked.
            kv_windows: (Nq, W, H, 2Dh) keys/values of each chunk's window.
            pos_table: (2C + L + R - 1, D); attn_mask: (Nq, W).
        Returns:
            x: (Nq, C, D) after the attention; gated: (Nq, C, D) the GLU output the convolution
            reads (``x`` itself when the layer has no convolution).
        """
        x = x + self.dropout(self.self_attn(self.norm_mha(x), kv_windows, pos_table, attn_mask))
        if self.conv_module is None or self.norm_conv is None:
            return x, x
        return x, self.conv_module.gate(self.norm_conv(x))

    def output(self, x: Tensor, conv_windows: Tensor | None, conv_mask: Tensor) -> Tensor:
        """Convolution, feed-forward and final norm of the chunks to emit.

        x: (No, C, D) after the attention; conv_windows: (No, C + 2K, D) GLU outputs around each
        chunk (None without a convolution); conv_mask: (No, C + 2K). Returns (No, C, D).
        """
        if self.conv_module is not None and conv_windows is not None:
            x = x + self.dropout(self.conv_module(conv_windows, conv_mask))
        x = x + self.ff_scale * self.dropout(self.feed_forward(self.norm_ff(x)))
        if self.norm_final is not None:
            x = self.norm_final(x)
        return x


def _ragged(x: Tensor, lens: Tensor) -> list[Tensor]:
    """Padded (B, T, *) and (B,) -> list of B tensors (T_b, *)."""
    return [x[b, : int(n)] for b, n in enumerate(lens.tolist())]


def _padded(rows: list[Tensor], width: int | None = None) -> tuple[Tensor, Tensor]:
    """List of B tensors (T_b, *) -> padded (B, T, *) and lengths (B,)."""
    lens = torch.tensor([r.shape[0] for r in rows], dtype=torch.long, device=rows[0].device)
    t = max(int(lens.max()), width or 0)
    out = rows[0].new_zeros((len(rows), t, *rows[0].shape[1:]))
    for b, r in enumerate(rows):
        out[b, : r.shape[0]] = r
    return out, lens


class ChunkFormerEncoder(nn.Module):
    """8x subsampling, N ChunkFormer layers and a final norm, on normalised features.

    ``forward`` encodes whole utterances; ``forward_chunk`` continues streams from a state. Both
    give the same frames for the same audio, whatever the split.
    """

    subsampling = RATE
    receptive_field = RECEPTIVE_FIELD
    causal = False

    def __init__(self, cfg: ChunkFormerConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embed = DepthwiseStridingSubsampling(cfg.input_dim, cfg.output_size)
        self.embed_dropout = nn.Dropout(cfg.positional_dropout_rate)
        self.layers = nn.ModuleList([ChunkFormerLayer(cfg) for _ in range(cfg.num_blocks)])
        self.after_norm = nn.LayerNorm(cfg.output_size)
        self.reach = cfg.cnn_module_kernel // 2 if cfg.use_cnn_module else 0
        self.xscale = math.sqrt(cfg.output_size)
        self.pass_frames = 512  # frames of one stream a layer runs at a time (bounds memory)

    def output_size(self) -> int:
        return self.cfg.output_size

    def output_lengths(self, x_lens: Tensor) -> Tensor:
        """(B,) feature frames -> (B,) encoder frames: ``(n - 15) // 8 + 1``, 0 below 15."""
        return torch.where(x_lens >= RECEPTIVE_FIELD, (x_lens - RECEPTIVE_FIELD) // RATE + 1, 0)

    def check_context(self, context: ChunkContext) -> None:
        """Any chunk, left and right context works."""

    def conv_lookahead_chunks(self, context: ChunkContext) -> int:
        """Chunks past a chunk whose attention output the chunk's convolution reads.

        The convolution sees ``min(K, R)`` frames past its chunk, which belong to the next
        ``ceil(min(K, R) / C)`` chunks.
        """
        return -(-min(self.reach, context.right) // context.chunk)

    def layer_lookahead(self, context: ChunkContext) -> int:
        """Frames of layer input past a chunk that a layer needs before emitting the chunk.

        Its attention needs ``R`` frames; its convolution needs the attention output of the
        chunks it reaches into, which need ``R`` frames past themselves.
        """
        return self.conv_lookahead_chunks(context) * context.chunk + context.right

    def latency_frames(self, context: ChunkContext) -> int:
        """Encoder frames of audio past a chunk's end needed before the chunk is final.

        A layer commits whole chunks, each once ``layer_lookahead`` frames past it are in, so the
        layer below must have committed that many more frames, rounded up to whole chunks
        (``num_blocks * layer_lookahead`` when the lookahead is a multiple of the chunk).
        """
        c, lookahead = context.chunk, self.layer_lookahead(context)
        need = c  # frames the last layer must commit
        for _ in range(self.cfg.num_blocks):
            need = -(-need // c) * c + lookahead  # frames this layer's input must hold
        return need - c

    def _plan(self, start: int, waiting: _Waiting, final: bool, context: ChunkContext) -> _PassPlan | None:
        """For one stream at one layer: what the next pass computes, or None if it can emit
        nothing yet. ``waiting`` holds the frames at the layer's input (absolute ``start``)."""
        c = context.chunk
        available = waiting.inputs.shape[0]
        chunks = -(-available // c)
        max_chunks = max(1, self.pass_frames // c)
        if final and chunks <= max_chunks:
            commit, run, kv = available, chunks, chunks
        else:
            if final:  # every frame is known; later frames are masked as past the end
                commit = max_chunks * c
            else:
                commit = min(max_chunks, max(0, available - self.layer_lookahead(context)) // c) * c
            if commit == 0:
                return None
            run = min(chunks, commit // c + self.conv_lookahead_chunks(context))
            kv = min(chunks, run + -(-context.right // c))
        if commit == 0:
            return None
        return _PassPlan(
            start=start, available=available, commit=commit, kv_rows=min(available, kv * c), kv_chunks=kv,
            query_first=min(run, -(-waiting.attn.shape[0] // c)), run_chunks=run, out_chunks=-(-commit // c),
        )

    def init_state(self, batch: int, context: ChunkContext, device: torch.device | str = "cpu") -> ChunkFormerState:
        cfg, n = self.cfg, self.cfg.num_blocks
        heads, head_dim = cfg.attention_heads, cfg.output_size // cfg.attention_heads
        dtype = self.after_norm.weight.dtype

        def zeros(*shape: int) -> Tensor:
            return torch.zeros(*shape, dtype=dtype, device=device)

        def counts() -> Tensor:
            return torch.zeros(n, batch, dtype=torch.long, device=device)

        return ChunkFormerState(
            context=context,
            feat_pending=zeros(batch, RECEPTIVE_FIELD - 1, cfg.input_dim),
            feat_pending_lens=torch.zeros(batch, dtype=torch.long, device=device),
            pending=zeros(n, batch, 0, cfg.output_size),
            pending_lens=counts(),
            pending_macaron=zeros(n, batch, 0, cfg.output_size),
            pending_kv=zeros(n, batch, 0, heads, 2 * head_dim),
            kv_lens=counts(),
            pending_attn=zeros(n, batch, 0, cfg.output_size),
            pending_gated=zeros(n, batch, 0, cfg.output_size),
            attn_lens=counts(),
            att_cache=zeros(n, batch, context.left, heads, 2 * head_dim),
            conv_cache=zeros(n, batch, self.reach, cfg.output_size),
            offset=counts(),
        )

    def forward(self, x: Tensor, x_lens: Tensor, context: ChunkContext) -> tuple[Tensor, Tensor]:
        """Encode whole utterances as one masked batch.

        Args:
            x: (B, T, F) features, x_lens: (B,) valid frames.
        Returns:
            y: (B, T', D), y_lens: (B,) with ``T'_b = (x_lens_b - 15) // 8 + 1`` (0 if too short).
        """
        state = self.init_state(x.shape[0], context, x.device)
        final = torch.ones(x.shape[0], dtype=torch.bool, device=x.device)
        y, y_lens, _ = self.forward_chunk(x, x_lens, state, final)
        return y, y_lens

    def _subsample(self, feats: list[Tensor], chunk: int) -> list[Tensor]:
        """Normalised features per stream (T_b, F) -> new encoder-layer inputs (T'_b, D).

        Frames are made in groups of ``chunk`` from feature windows cut at multiples of 8.
        """
        counts = [subsampled_length(f.shape[0]) for f in feats]
        span = window_frames(chunk)  # features per group of `chunk` frames
        windows = []
        for f, n in zip(feats, counts):
            if n == 0:
                continue
            groups = -(-n // chunk)
            need = (groups - 1) * chunk * RATE + span
            f = F.pad(f[:need], (0, 0, 0, max(0, need - f.shape[0])))  # (need, F)
            windows.append(f.unfold(0, span, chunk * RATE).transpose(1, 2))  # (G, span, F)
        if not windows:
            empty = feats[0].new_zeros((0, self.cfg.output_size))
            return [empty for _ in feats]
        y = self.embed(torch.cat(windows)) * self.xscale  # (G_total, chunk, D)
        y = self.embed_dropout(y).flatten(0, 1)
        out, pos = [], 0
        for n in counts:
            groups = -(-n // chunk)
            out.append(y[pos : pos + n])
            pos += groups * chunk
        return out

    def forward_chunk(
        self, x: Tensor, x_lens: Tensor, state: ChunkFormerState, final: Tensor
    ) -> tuple[Tensor, Tensor, ChunkFormerState]:
        """Feed more features to each stream and collect the encoder frames that became final.

        Args:
            x: (B, T, F) new normalised feature frames, x_lens: (B,).
            state: the streams' state (batch B).
            final: (B,) True for streams whose input ends with these frames.
        Returns:
            y: (B, T', D) frames emitted by this call, y_lens: (B,), and the new state.
        """
        context = state.context
        new_feats = _ragged(x, x_lens)
        feats = [
            torch.cat([p, f]) for p, f in zip(_ragged(state.feat_pending, state.feat_pending_lens), new_feats)
        ]
        frames = self._subsample(feats, context.chunk)
        feat_rest = [f[RATE * fr.shape[0] :] for f, fr in zip(feats, frames)]
        feat_pending, feat_pending_lens = _padded(feat_rest, RECEPTIVE_FIELD - 1)

        pos_table = relative_position_table(
            self.cfg.output_size, chunk=context.chunk, left=context.left, right=context.right
        ).to(device=x.device, dtype=x.dtype)
        pos_table = self.embed_dropout(pos_table)
        finals = final.tolist()
        layer_states: list[tuple[list[_Waiting], Tensor, Tensor, list[int]]] = []
        for i, layer in enumerate(self.layers):
            waiting = [
                _Waiting(torch.cat([inputs, new]), macaron, kv, attn, gated)
                for inputs, new, macaron, kv, attn, gated in zip(
                    _ragged(state.pending[i], state.pending_lens[i]), frames,
                    _ragged(state.pending_macaron[i], state.kv_lens[i]), _ragged(state.pending_kv[i], state.kv_lens[i]),
                    _ragged(state.pending_attn[i], state.attn_lens[i]), _ragged(state.pending_gated[i], state.attn_lens[i]),
                )
            ]
            starts = state.offset[i].tolist()
            att, conv = state.att_cache[i], state.conv_cache[i]
            outputs: list[list[Tensor]] = [[] for _ in waiting]
            while True:  # passes of at most `pass_frames` frames per stream bound the memory used
                plans = [self._plan(s, w, fin, context) for s, w, fin in zip(starts, waiting, finals)]
                if not any(plans):
                    break
                idle = [_PassPlan(s, w.inputs.shape[0], 0, 0, 0, 0, 0, 0) for s, w in zip(starts, waiting)]
                ready = [p or q for p, q in zip(plans, idle)]
                emitted, waiting, att, conv = self._layer_pass(cast(ChunkFormerLayer, layer), context, ready, waiting, att, conv, pos_table)
                for collected, y in zip(outputs, emitted):
                    collected.append(y)
                starts = [s + p.commit for s, p in zip(starts, ready)]
            frames = [torch.cat(o) if o else w.inputs[:0] for o, w in zip(outputs, waiting)]
            layer_states.append((waiting, att, conv, starts))
        out, out_lens = _padded([self.after_norm(f) for f in frames], 0)
        return out, out_lens, self._new_state(context, feat_pending, feat_pending_lens, layer_states, x.device)

    def _layer_pass(
        self,
        layer: ChunkFormerLayer,
        context: ChunkContext,
        plans: list[_PassPlan],
        waiting: list[_Waiting],
        att_cache: Tensor,
        conv_cache: Tensor,
        pos_table: Tensor,
    ) -> tuple[list[Tensor], list[_Waiting], Tensor, Tensor]:
        """One pass of one layer over every stream: each frame's macaron feed-forward and
        keys/values, attention and gate are computed once (in whichever pass first can) and
        kept with the waiting frames until the frame is emitted.

        att_cache: (B, L, H, 2Dh), conv_cache: (B, K, D). Returns the frames emitted per stream
        ((commit, D) each), the frames still waiting, and the new caches.
        """
        c, d = context.chunk, self.cfg.output_size
        layout = _chunk_layout(context, self.reach, plans, att_cache.device)
        # 1. per frame: macaron feed-forward, keys and values (for frames not yet projected)
        todo = [w.inputs[w.kv.shape[0] : p.kv_rows] for w, p in zip(waiting, plans)]
        sizes = [t.shape[0] for t in todo]
        macaron, kv = [w.macaron for w in waiting], [w.kv for w in waiting]
        if sum(sizes):
            new_macaron, new_kv = layer.key_values(torch.cat(todo))  # (M, D), (M, H, 2Dh)
            macaron = [torch.cat([m, n]) for m, n in zip(macaron, new_macaron.split(sizes))]
            kv = [torch.cat([k, n]) for k, n in zip(kv, new_kv.split(sizes))]
        att_rows = _timeline(
            layout.att_length, att_cache, layout.att_cache_pos,
            torch.cat([k[: p.kv_rows] for k, p in zip(kv, plans)]), layout.att_frame_pos,
        )  # (A, H, 2Dh)
        new_att_cache = att_rows[layout.att_cache_take]  # (B, L, H, 2Dh)
        # 2. per chunk: attention and gate (for chunks not yet attended)
        attn, gated = [w.attn for w in waiting], [w.gated for w in waiting]
        counts = [p.run_chunks - p.query_first for p in plans]
        if sum(counts):
            queries = torch.cat([
                _rows(m, p.query_first * c, p.run_chunks * c) for m, p in zip(macaron, plans)
            ]).view(-1, c, d)  # (Nq, C, D)
            new_attn, new_gated = layer.attend(queries, att_rows[layout.att_windows], pos_table, layout.attn_mask)
            attn = [
                torch.cat([_rows(a, 0, p.query_first * c), n.flatten(0, 1)]) if n.shape[0] else a
                for a, n, p in zip(attn, new_attn.split(counts), plans)
            ]
            gated = [
                torch.cat([_rows(g, 0, p.query_first * c), n.flatten(0, 1)]) if n.shape[0] else g
                for g, n, p in zip(gated, new_gated.split(counts), plans)
            ]
        # 3. per chunk to emit: convolution, feed-forward, final norm
        new_conv_cache, conv_windows = conv_cache, None
        if layer.conv_module is not None:
            conv_rows = _timeline(
                layout.conv_length, conv_cache, layout.conv_cache_pos,
                torch.cat([_rows(g, 0, p.run_chunks * c) for g, p in zip(gated, plans)]), layout.conv_frame_pos,
            )  # (A', D)
            new_conv_cache = conv_rows[layout.conv_cache_take]  # (B, K, D)
            conv_windows = conv_rows[layout.conv_windows]  # (No, C + 2K, D)
        emit = torch.cat([_rows(a, 0, p.out_chunks * c) for a, p in zip(attn, plans)]).view(-1, c, d)
        y = layer.output(emit, conv_windows, layout.conv_mask).flatten(0, 1)  # (No * C, D)
        emitted, pos = [], 0
        for p in plans:
            emitted.append(y[pos : pos + p.commit])
            pos += p.out_chunks * c
        still = [
            _Waiting(w.inputs, m, k, a[: min(a.shape[0], p.available)], g[: min(g.shape[0], p.available)]).drop(p.commit)
            for w, m, k, a, g, p in zip(waiting, macaron, kv, attn, gated, plans)
        ]
        return emitted, still, new_att_cache, new_conv_cache

    def _new_state(
        self,
        context: ChunkContext,
        feat_pending: Tensor,
        feat_pending_lens: Tensor,
        layers: list[tuple[list[_Waiting], Tensor, Tensor, list[int]]],
        device: torch.device,
    ) -> ChunkFormerState:
        """The state after a call: per layer, the waiting frames (padded), caches and offsets."""

        def stacked(rows: list[list[Tensor]]) -> tuple[Tensor, Tensor]:
            """Per layer, per stream (P, *) -> (N, B, P_max, *) zero-padded, lengths (N, B)."""
            width = max(r.shape[0] for layer in rows for r in layer)
            padded = [_padded(layer, width) for layer in rows]
            return torch.stack([p for p, _ in padded]), torch.stack([n for _, n in padded])

        waiting = [w for w, _, _, _ in layers]
        pending, pending_lens = stacked([[w.inputs for w in ws] for ws in waiting])
        macaron, kv_lens = stacked([[w.macaron for w in ws] for ws in waiting])
        kv, _ = stacked([[w.kv for w in ws] for ws in waiting])
        attn, attn_lens = stacked([[w.attn for w in ws] for ws in waiting])
        gated, _ = stacked([[w.gated for w in ws] for ws in waiting])
        return ChunkFormerState(
            context=context,
            feat_pending=feat_pending,
            feat_pending_lens=feat_pending_lens,
            pending=pending,
            pending_lens=pending_lens,
            pending_macaron=macaron,
            pending_kv=kv,
            kv_lens=kv_lens,
            pending_attn=attn,
            pending_gated=gated,
            attn_lens=attn_lens,
            att_cache=torch.stack([att for _, att, _, _ in layers]),
            conv_cache=torch.stack([conv for _, _, conv, _ in layers]),
            offset=torch.tensor([starts for _, _, _, starts in layers], dtype=torch.long, device=device),
        )
