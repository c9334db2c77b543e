"""The ChunkFormer encoder: a Conformer whose attention sees [left, chunk, right] windows.

One computation serves training, batch inference, long-form and streaming. Every layer works on
*chunks* of ``C`` encoder frames: the chunks of all utterances of a batch are flattened into one
batch (the "masked batch"), each chunk gathering its key window and its convolution window from a
per-utterance *timeline* that begins with the cached frames of the previous call.

Layers advance as a wavefront. A layer emits a chunk only once its output can no longer change:
its attention needs ``R`` frames of layer input past the chunk, and (when ``R > 0``) its
convolution needs the first frames of the next chunk's attention output, so ``C + R`` frames past
the chunk. Inputs a layer cannot use yet wait in the state. Hence feeding a stream in pieces of any
size gives the same frames as feeding it whole, and nothing is computed twice beyond the
lookahead chunk of each call.

Shape legend:
    B streams/utterances   N layers (blocks)   T feature frames   F feature bins
    D model dim   H heads   Dh = D / H   C chunk, L left, R right context (encoder frames)
    K = cnn_module_kernel // 2   W = L + C + R   P pending frames
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

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
    """Everything a ChunkFormer stream carries between calls. Never edited in place."""

    context: ChunkContext
    feat_pending: Tensor  # (B, 14, F)        normalised feature frames not yet subsampled
    feat_pending_lens: Tensor  # (B,)
    pending: Tensor = field(metadata=BATCH_DIM_1)  # (N, B, P, D)         layer inputs received but not yet consumed
    pending_lens: Tensor = field(metadata=BATCH_DIM_1)  # (N, B)
    att_cache: Tensor = field(metadata=BATCH_DIM_1)  # (N, B, L, H, 2*Dh)  keys/values of the L frames before each layer's offset
    conv_cache: Tensor = field(metadata=BATCH_DIM_1)  # (N, B, K, D)        GLU outputs of the K frames before each layer's offset
    offset: Tensor = field(metadata=BATCH_DIM_1)  # (N, B)              frames each layer has emitted so far

    @property
    def frames_emitted(self) -> Tensor:
        """(B,) encoder frames the encoder has emitted for each stream."""
        return self.offset[-1]


@dataclass(frozen=True)
class _ChunkLayout:
    """Where one layer call's chunks come from and go to (index tensors, built per call).

    Per stream b the attention timeline is [att cache (L) | kv frames of its chunks | zeros (R)]
    and the convolution timeline [conv cache (K) | GLU frames of its run chunks | zeros (K)].
    """

    run: Tensor  # (Nr,) indices of the chunks to run among the Nk chunks given
    attn_mask: Tensor  # (Nr, W)
    conv_mask: Tensor  # (Nr, C + 2K)
    att_length: int
    att_cache_pos: Tensor  # (B * L,) timeline rows receiving the cache
    att_frame_pos: Tensor  # (Nk * C,) timeline rows receiving chunk frames
    att_windows: Tensor  # (Nr, W) timeline rows of each run chunk's key window
    att_cache_take: Tensor  # (B, L) timeline rows of the new cache
    conv_length: int
    conv_cache_pos: Tensor  # (B * K,)
    conv_frame_pos: Tensor  # (Nr * C,)
    conv_windows: Tensor  # (Nr, C + 2K)
    conv_cache_take: Tensor  # (B, K)


def _chunk_layout(
    context: ChunkContext,
    reach: int,
    starts: list[int],
    ends: list[int],
    kv_chunks: list[int],
    run_chunks: list[int],
    commits: list[int],
    device: torch.device,
) -> _ChunkLayout:
    """Index tensors for one layer call; ``starts``/``ends`` are absolute frame positions."""
    c, left, right = context.chunk, context.left, context.right
    att_cache_pos: list[int] = []
    att_frame_pos: list[int] = []
    att_starts: list[int] = []
    att_take: list[list[int]] = []
    conv_cache_pos: list[int] = []
    conv_frame_pos: list[int] = []
    conv_starts: list[int] = []
    conv_take: list[list[int]] = []
    run: list[int] = []
    chunk_index: list[int] = []
    chunk_end: list[int] = []
    att_base = conv_base = kv_base = 0
    for start, end, n_kv, n_run, commit in zip(starts, ends, kv_chunks, run_chunks, commits):
        att_cache_pos.extend(range(att_base, att_base + left))
        att_frame_pos.extend(range(att_base + left, att_base + left + n_kv * c))
        conv_cache_pos.extend(range(conv_base, conv_base + reach))
        conv_frame_pos.extend(range(conv_base + reach, conv_base + reach + n_run * c))
        for j in range(n_run):
            run.append(kv_base + j)
            chunk_index.append(start // c + j)
            chunk_end.append(end)
            att_starts.append(att_base + j * c)
            conv_starts.append(conv_base + j * c)
        att_take.append(list(range(att_base + commit, att_base + commit + left)))
        conv_take.append(list(range(conv_base + commit, conv_base + commit + reach)))
        kv_base += n_kv
        att_base += left + n_kv * c + right
        conv_base += reach + n_run * c + reach

    def tensor(values: list[int] | list[list[int]]) -> Tensor:
        return torch.tensor(values, dtype=torch.long, device=device)

    index = tensor(chunk_index)
    end_t = tensor(chunk_end)
    return _ChunkLayout(
        run=tensor(run),
        attn_mask=chunk_attn_mask(index, end_t, chunk=c, left=left, right=right),
        conv_mask=chunk_conv_mask(index, end_t, chunk=c, right=right, reach=reach),
        att_length=att_base,
        att_cache_pos=tensor(att_cache_pos),
        att_frame_pos=tensor(att_frame_pos),
        att_windows=tensor(att_starts).view(-1, 1) + torch.arange(left + c + right, device=device),
        att_cache_take=tensor(att_take).view(len(starts), left),
        conv_length=conv_base,
        conv_cache_pos=tensor(conv_cache_pos),
        conv_frame_pos=tensor(conv_frame_pos),
        conv_windows=tensor(conv_starts).view(-1, 1) + torch.arange(c + 2 * reach, device=device),
        conv_cache_take=tensor(conv_take).view(len(starts), reach),
    )


def _timeline(length: int, cache: Tensor, cache_pos: Tensor, frames: Tensor, frame_pos: Tensor) -> Tensor:
    """Rows of cache and frames placed at their timeline positions, zeros elsewhere.

    cache: (B, Lc, *), frames: (M, *) -> (length, *)
    """
    rows = frames.new_zeros((length, *frames.shape[1:]))
    rows = rows.index_copy(0, cache_pos, cache.flatten(0, 1).to(frames.dtype))
    return rows.index_copy(0, frame_pos, frames)


class ChunkFormerLayer(nn.Module):
    """Macaron feed-forward, chunked attention, chunked convolution, feed-forward, final norm."""

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

    def forward(
        self,
        x: Tensor,
        layout: _ChunkLayout,
        att_cache: Tensor,
        conv_cache: Tensor,
        pos_table: Tensor,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Run the chunks ``layout.run`` of ``x``; the others only lend their keys/values.

        Args:
            x: (Nk, C, D) layer input, chunked.
            att_cache: (B, L, H, 2Dh), conv_cache: (B, K, D) of this layer.
            pos_table: (2C + L + R - 1, D).
        Returns:
            y: (Nr, C, D) layer output of the run chunks, new att_cache, new conv_cache.
        """
        if self.feed_forward_macaron is not None and self.norm_ff_macaron is not None:
            x = x + self.ff_scale * self.dropout(self.feed_forward_macaron(self.norm_ff_macaron(x)))
        h = self.norm_mha(x)  # (Nk, C, D)
        kv = self.self_attn.key_values(h)  # (Nk, C, H, 2Dh)
        att_rows = _timeline(
            layout.att_length, att_cache, layout.att_cache_pos, kv.flatten(0, 1), layout.att_frame_pos
        )  # (A, H, 2Dh)
        new_att_cache = att_rows[layout.att_cache_take]  # (B, L, H, 2Dh)
        x, h = x[layout.run], h[layout.run]  # (Nr, C, D)
        x = x + self.dropout(
            self.self_attn(h, att_rows[layout.att_windows], pos_table, layout.attn_mask)
        )
        new_conv_cache = conv_cache
        if self.conv_module is not None and self.norm_conv is not None:
            gated = self.conv_module.gate(self.norm_conv(x))  # (Nr, C, D)
            conv_rows = _timeline(
                layout.conv_length, conv_cache, layout.conv_cache_pos, gated.flatten(0, 1),
                layout.conv_frame_pos,
            )  # (A', D)
            new_conv_cache = conv_rows[layout.conv_cache_take]  # (B, K, D)
            x = x + self.dropout(self.conv_module(conv_rows[layout.conv_windows], layout.conv_mask))
        x = x + self.ff_scale * self.dropout(self.feed_forward(self.norm_ff(x)))
        if self.norm_final is not None:
            x = self.norm_final(x)
        return x, new_att_cache, new_conv_cache


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

    def _plan(self, available: int, final: bool, context: ChunkContext) -> tuple[int, int, int]:
        """For one stream at one layer: frames to commit, chunks to run, chunks to project to
        keys/values, given ``available`` frames waiting at the layer's input."""
        c = context.chunk
        chunks = -(-available // c)
        max_chunks = max(1, self.pass_frames // c)
        if final and chunks <= max_chunks:
            return available, chunks, chunks
        if final:  # every frame is known; later frames are masked as past the end
            commit = max_chunks * c
        else:
            commit = min(max_chunks, max(0, available - self.layer_lookahead(context)) // c) * c
        if commit == 0:
            return 0, 0, 0
        run = min(chunks, commit // c + self.conv_lookahead_chunks(context))
        return commit, run, min(chunks, run + -(-context.right // c))

    def init_state(self, batch: int, context: ChunkContext, device: torch.device | str = "cpu") -> ChunkFormerState:
        cfg, n = self.cfg, self.cfg.num_blocks
        heads, head_dim = cfg.attention_heads, cfg.output_size // cfg.attention_heads
        dtype = self.after_norm.weight.dtype
        return ChunkFormerState(
            context=context,
            feat_pending=torch.zeros(batch, RECEPTIVE_FIELD - 1, cfg.input_dim, dtype=dtype, device=device),
            feat_pending_lens=torch.zeros(batch, dtype=torch.long, device=device),
            pending=torch.zeros(n, batch, 0, cfg.output_size, dtype=dtype, device=device),
            pending_lens=torch.zeros(n, batch, dtype=torch.long, device=device),
            att_cache=torch.zeros(n, batch, context.left, heads, 2 * head_dim, dtype=dtype, device=device),
            conv_cache=torch.zeros(n, batch, self.reach, cfg.output_size, dtype=dtype, device=device),
            offset=torch.zeros(n, batch, dtype=torch.long, device=device),
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
        c = context.chunk
        new_feats = _ragged(x, x_lens)
        feats = [
            torch.cat([p, f]) for p, f in zip(_ragged(state.feat_pending, state.feat_pending_lens), new_feats)
        ]
        frames = self._subsample(feats, c)
        feat_rest = [f[RATE * fr.shape[0] :] for f, fr in zip(feats, frames)]
        feat_pending, feat_pending_lens = _padded(feat_rest, RECEPTIVE_FIELD - 1)

        pos_table = relative_position_table(
            self.cfg.output_size, chunk=c, left=context.left, right=context.right
        ).to(device=x.device, dtype=x.dtype)
        pos_table = self.embed_dropout(pos_table)
        finals = final.tolist()
        pendings, pending_lens, att_caches, conv_caches, offsets = [], [], [], [], []
        for i, layer in enumerate(self.layers):
            avail = [
                torch.cat([p, f]) for p, f in zip(_ragged(state.pending[i], state.pending_lens[i]), frames)
            ]
            starts = state.offset[i].tolist()
            att, conv = state.att_cache[i], state.conv_cache[i]
            outputs: list[list[Tensor]] = [[] for _ in avail]
            while True:  # passes of at most `pass_frames` frames per stream bound the memory used
                plans = [self._plan(a.shape[0], fin, context) for a, fin in zip(avail, finals)]
                if not any(commit for commit, _, _ in plans):
                    break
                commits = [commit for commit, _, _ in plans]
                run_chunks = [run for _, run, _ in plans]
                kv_chunks = [kv for _, _, kv in plans]
                layout = _chunk_layout(
                    context, self.reach, starts, [s + a.shape[0] for s, a in zip(starts, avail)],
                    kv_chunks, run_chunks, commits, x.device,
                )
                x_chunks = torch.cat([
                    F.pad(a[: n * c], (0, 0, 0, n * c - min(a.shape[0], n * c))).view(n, c, self.cfg.output_size)
                    for a, n in zip(avail, kv_chunks)
                ])  # (Nk, C, D)
                y, att, conv = layer(x_chunks, layout, att, conv, pos_table)
                y = y.flatten(0, 1)  # (Nr * C, D)
                pos = 0
                for b, (n_run, commit) in enumerate(zip(run_chunks, commits)):
                    outputs[b].append(y[pos : pos + commit])
                    pos += n_run * c
                avail = [a[cm:] for a, cm in zip(avail, commits)]
                starts = [s + cm for s, cm in zip(starts, commits)]
            frames = [torch.cat(o) if o else a[:0] for o, a in zip(outputs, avail)]
            padded, lens = _padded(avail, 0)
            pendings.append(padded)
            pending_lens.append(lens)
            att_caches.append(att)
            conv_caches.append(conv)
            offsets.append(torch.tensor(starts, device=x.device))
        out, out_lens = _padded([self.after_norm(f) for f in frames], 0)
        width = max(p.shape[1] for p in pendings)
        new_state = ChunkFormerState(
            context=context,
            feat_pending=feat_pending,
            feat_pending_lens=feat_pending_lens,
            pending=torch.stack([F.pad(p, (0, 0, 0, width - p.shape[1])) for p in pendings]),
            pending_lens=torch.stack(pending_lens),
            att_cache=torch.stack(att_caches),
            conv_cache=torch.stack(conv_caches),
            offset=torch.stack(offsets),
        )
        return out, out_lens, new_state
