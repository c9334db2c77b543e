"""The Emformer encoder (Shi et al., ICASSP 2021): segments, a left-context key/value cache, a
memory bank, and a right context that does not grow with depth.

Input frames (4 stacked 10 ms feature frames, 40 ms) are cut into *segments* of ``C`` frames. At
every layer, segment k is computed from:

- its own ``C`` rows and a *right-context block* of ``R`` rows: the layer input of the ``R``
  frames after the segment. Layer n's block is layer n-1's output for the block (computed
  alongside segment k), never layer n-1's output of segment k+1, so look-ahead stays ``R`` frames
  however deep the stack is;
- the keys/values of the ``L`` segment rows before it at this layer (the left-context cache);
- a memory bank of ``M`` vectors, one per earlier segment: at layer 0 the mean of each segment's
  input; at layer n > 0 the (clamped) attention output of a *summary query* (the mean of the
  segment's rows) at layer n-1. The summary attends to its segment and right context only.

Each layer: pre-norm attention over [memory, left, segment, right context] with a clipped
relative-position bias (memory keys have none), optionally a causal convolution module
(ConvEmformer, ``conv_kernel`` > 0), pre-norm feed-forward; a final norm after the stack. Segment
queries and block queries attend to the same keys. The convolution is causal in time: a segment
row sees the ``kernel - 1`` rows before it (from earlier segments: a cache of the last ones), a
block row the rows of its segment and block before it; so, like attention, it never lets
look-ahead grow with depth.

One computation serves training and streaming: ``forward`` is ``forward_chunk`` on a fresh state
with every stream final, which computes all segments of all utterances of the batch at once per
layer (the masked batch). Streaming runs a segment once ``C + R`` frames are there; the cache, the
memory bank and the frames not yet consumed are the state, so feeding a stream in pieces of any
size gives the same frames as feeding it whole.

Shape legend:
    B streams   N layers   T feature frames   F feature bins   D model dim   H heads
    C segment (chunk), L left context, R right context, M memory size (frames of 40 ms)
    S segments computed in one call   Q = R + C + 1 queries   K = M + L + C + R keys
    G = conv_kernel - 1 rows a convolution sees before a row
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from echostream.encoders.base import (
    BATCH_DIM_1,
    ChunkContext,
    EncoderConfig,
    EncoderState,
    StepLayout,
)
from echostream.masks import emformer_attn_mask
from echostream.nn.convolution import ChunkConvolution
from echostream.nn.feedforward import FeedForward


@dataclass(frozen=True, kw_only=True)
class EmformerConfig(EncoderConfig):
    """Shape of an Emformer encoder."""

    TYPE = "emformer"
    type: str = "emformer"
    input_dim: int = 80
    output_size: int = 256
    attention_heads: int = 4
    linear_units: int = 1024
    num_blocks: int = 12
    frame_stack: int = 4  # feature frames stacked into one encoder frame (40 ms)
    memory_size: int = 4  # M: memory vectors (earlier segments) each segment attends to
    memory_clamp: float = 10.0  # memory vectors are clamped to [-c, c] (0: not clamped)
    max_relative_position: int = 32  # relative positions beyond +-P share a bias (0: no bias)
    activation_type: str = "gelu"
    conv_kernel: int = 0  # depthwise kernel of a causal convolution module per layer (ConvEmformer); 0: none
    dropout_rate: float = 0.1
    attention_dropout_rate: float = 0.1

    def __post_init__(self) -> None:
        super().__post_init__()
        self.check_shape(("input_dim", "output_size", "attention_heads", "linear_units", "num_blocks", "frame_stack"))
        if self.conv_kernel != 0 and (self.conv_kernel < 3 or self.conv_kernel % 2 == 0):
            raise ValueError(f"encoder.conv_kernel must be 0 (no convolution) or odd and >= 3, got {self.conv_kernel}")
        for name in ("memory_size", "max_relative_position"):
            if getattr(self, name) < 0:
                raise ValueError(f"encoder.{name} must be >= 0, got {getattr(self, name)}")
        if self.memory_clamp < 0:
            raise ValueError(f"encoder.memory_clamp must be >= 0, got {self.memory_clamp}")


@dataclass(frozen=True)
class EmformerState(EncoderState):
    """Everything an Emformer stream carries between calls. Never edited in place."""

    context: ChunkContext
    feat_pending: Tensor  # (B, P0, F)  feature frames not yet stacked (P0 < frame_stack)
    feat_pending_lens: Tensor  # (B,)
    frames: Tensor  # (B, P, D)  layer-0 input from the next segment's start on
    frames_lens: Tensor  # (B,)
    left_kv: Tensor = field(metadata=BATCH_DIM_1)  # (N, B, L, 2D)  keys/values of the last L segment rows per layer
    memory: Tensor = field(metadata=BATCH_DIM_1)  # (N, B, M, D)   memory vectors of the last M segments per layer
    segments: Tensor  # (B,) segments emitted
    conv_cache: Tensor | None = field(default=None, metadata=BATCH_DIM_1)  # (N, B, G, D) convolution
    # inputs (GLU outputs) of the last G segment rows per layer; None without a convolution module


@dataclass(frozen=True)
class _Segments:
    """The segments one call computes, and where their rows come from (index tensors)."""

    stream: Tensor  # (S,) stream of each segment
    index: Tensor  # (S,) segment number in its stream
    local: Tensor  # (S,) segment number within this call
    remaining: Tensor  # (S,) frames of its stream from its first frame on (so far)
    s_valid: Tensor  # (S, C) segment rows before the stream's end
    rc_valid: Tensor  # (S, R) right-context rows before the stream's end
    counts: list[int]  # segments per stream


class EmformerLayer(nn.Module):
    """Attention over [memory, left, segment, right context], optionally a causal convolution
    module, and a feed-forward, all pre-norm.

    The encoder runs a layer in steps, since the convolution's window reaches into rows that
    earlier segments computed at this layer: :meth:`prepare`, :meth:`attend`, :meth:`gate` (with a
    convolution), :meth:`finish`."""

    def __init__(self, cfg: EmformerConfig) -> None:
        super().__init__()
        d, self.heads = cfg.output_size, cfg.attention_heads
        self.head_dim = d // cfg.attention_heads
        self.norm_attn = nn.LayerNorm(d)
        self.query = nn.Linear(d, d)
        self.key_value = nn.Linear(d, 2 * d)
        self.out = nn.Linear(d, d)
        self.norm_conv = nn.LayerNorm(d) if cfg.conv_kernel else None
        self.conv = (ChunkConvolution(d, cfg.conv_kernel, "layer_norm", cfg.activation_type, causal=True)
                     if cfg.conv_kernel else None)
        self.norm_ff = nn.LayerNorm(d)
        self.feed_forward = FeedForward(d, cfg.linear_units, cfg.dropout_rate, cfg.activation_type)
        self.dropout = nn.Dropout(cfg.dropout_rate)
        self.attention_dropout = cfg.attention_dropout_rate
        self.clamp = cfg.memory_clamp
        self.max_relative = cfg.max_relative_position
        self.relative_bias = (
            nn.Parameter(torch.zeros(cfg.attention_heads, 2 * cfg.max_relative_position + 1))
            if cfg.max_relative_position > 0 else None
        )

    def position_bias(self, distance: Tensor, memory: int) -> Tensor | None:
        """(H, Q, K) attention bias from the (R + C, L + C + R) relative distances of block and
        segment queries to left, segment and block keys (:func:`relative_distances`); memory keys
        and the summary query get none."""
        if self.relative_bias is None:
            return None
        bias = self.relative_bias[:, distance.clamp(-self.max_relative, self.max_relative) + self.max_relative]
        return F.pad(bias, (memory, 0, 0, 1))

    def prepare(self, seg: Tensor, block: Tensor, valid: Tensor) -> tuple[Tensor, Tensor]:
        """The normed queries' input and the keys/values of the rows of S segments.

        Args:
            seg: (S, C, D), block: (S, R, D) layer input; valid: (S, C) segment rows that exist.
        Returns:
            h: (S, Q, D) normed [block, segment, summary] rows; kv: (S, C + R, 2D) keys/values of
            [segment, block] (the segment's go to the left-context cache).
        """
        r, c = block.shape[1], seg.shape[1]
        summary = (seg * valid.unsqueeze(-1)).sum(1) / valid.sum(1, keepdim=True).clamp(min=1)  # (S, D)
        h = self.norm_attn(torch.cat([block, seg, summary.unsqueeze(1)], dim=1))  # (S, Q, D)
        return h, self.key_value(torch.cat([h[:, r : r + c], h[:, :r]], dim=1))

    def attend(
        self, seg: Tensor, block: Tensor, h: Tensor, kv: Tensor, memory: Tensor, left_kv: Tensor,
        mask: Tensor, bias: Tensor | None,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """The attention of S segments, after :meth:`prepare`, with its residual.

        Args:
            seg, block: the layer input; h, kv: from :meth:`prepare`; memory: (S, M, D) each
            segment's memory; left_kv: (S, L, 2D) keys/values of its left context;
            mask: (S, 1, Q, K) additive attention mask (0 or -inf); bias: (H, Q, K) or None.
        Returns:
            segment rows (S, C, D), block rows (S, R, D), and the memory vectors the summaries
            give the layer above (S, D).
        """
        s, c, d = seg.shape
        r = block.shape[1]
        keys_values = torch.cat([self.key_value(memory), left_kv, kv], dim=1)  # (S, K, 2D)
        q = self.query(h).view(s, h.shape[1], self.heads, self.head_dim).transpose(1, 2)  # (S, H, Q, Dh)
        k, v = keys_values.view(s, keys_values.shape[1], self.heads, 2 * self.head_dim).transpose(1, 2).chunk(2, dim=-1)
        scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(self.head_dim) + mask  # (S, H, Q, K)
        if bias is not None:
            scores = scores + bias
        weights = F.dropout(torch.softmax(scores, dim=-1), self.attention_dropout, self.training)
        attended = self.out(torch.matmul(weights, v).transpose(1, 2).reshape(s, h.shape[1], d))  # (S, Q, D)
        rows = torch.cat([block, seg], dim=1) + self.dropout(attended[:, : r + c])  # (S, R + C, D)
        memory_out = attended[:, -1]
        if self.clamp > 0:
            memory_out = memory_out.clamp(-self.clamp, self.clamp)
        return rows[:, r:], rows[:, :r], memory_out

    def gate(self, seg: Tensor, block: Tensor) -> Tensor:
        """(S, C + R, D) the convolution's inputs (GLU outputs) of [segment, block] rows, in time order."""
        assert self.conv is not None and self.norm_conv is not None
        return self.conv.gate(self.norm_conv(torch.cat([seg, block], dim=1)))

    def finish(
        self, seg: Tensor, block: Tensor, before: Tensor | None, gated: Tensor | None, rows_valid: Tensor
    ) -> tuple[Tensor, Tensor]:
        """The convolution (if any) and the feed-forward of S segments, after :meth:`attend`.

        Args:
            seg: (S, C, D), block: (S, R, D) rows after attention; before: (S, G, D) the
            convolution inputs of the G segment rows ahead of each segment (zeros before a
            stream's start); gated: (S, C + R, D) from :meth:`gate`; rows_valid: (S, C + R) rows
            before the stream's end. ``before`` and ``gated`` are None without a convolution.
        Returns:
            the layer's segment output (S, C, D) and block output (S, R, D).
        """
        c, r = seg.shape[1], block.shape[1]
        if self.conv is not None:
            assert before is not None and gated is not None
            window = torch.cat([before, gated], dim=1)  # (S, G + C + R, D) in time order
            usable = F.pad(rows_valid, (before.shape[1], 0), value=True)  # (S, G + C + R)
            conv = self.dropout(self.conv(window, usable))  # (S, C + R, D)
            seg, block = seg + conv[:, :c], block + conv[:, c:]
        rows = torch.cat([block, seg], dim=1)  # (S, R + C, D)
        rows = rows + self.dropout(self.feed_forward(self.norm_ff(rows)))
        return rows[:, r:], rows[:, :r]


def relative_distances(context: ChunkContext, device: torch.device) -> Tensor:
    """(R + C, L + C + R) key position minus query position, for block queries then segment
    queries against left, segment and block keys (positions relative to the segment's start)."""
    c, left, right = context.chunk, context.left, context.right
    queries = torch.cat([torch.arange(c, c + right, device=device), torch.arange(c, device=device)])
    keys = torch.arange(-left, c + right, device=device)
    return keys.view(1, -1) - queries.view(-1, 1)


class EmformerEncoder(nn.Module):
    """Frame stacking + linear projection, N Emformer layers, a final norm."""

    causal = False

    def __init__(self, cfg: EmformerConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.subsampling = cfg.frame_stack
        self.receptive_field = cfg.frame_stack
        self.embed = nn.Linear(cfg.frame_stack * cfg.input_dim, cfg.output_size)
        self.embed_dropout = nn.Dropout(cfg.dropout_rate)
        self.layers = nn.ModuleList([EmformerLayer(cfg) for _ in range(cfg.num_blocks)])
        self.after_norm = nn.LayerNorm(cfg.output_size)

    def output_size(self) -> int:
        return self.cfg.output_size

    def output_lengths(self, x_lens: Tensor) -> Tensor:
        """(B,) feature frames -> (B,) encoder frames: ``n // frame_stack``."""
        return x_lens // self.cfg.frame_stack

    def check_context(self, context: ChunkContext) -> None:
        """Any segment, left and right context works (the memory size is the model's)."""

    def latency_frames(self, context: ChunkContext) -> int:
        """A segment is final once its right context has arrived: ``R`` frames, at any depth."""
        return context.right

    def init_state(self, batch: int, context: ChunkContext, device: torch.device | str = "cpu") -> EmformerState:
        cfg, n, d = self.cfg, self.cfg.num_blocks, self.cfg.output_size
        dtype = self.after_norm.weight.dtype
        return EmformerState(
            context=context,
            feat_pending=torch.zeros(batch, cfg.frame_stack - 1, cfg.input_dim, dtype=dtype, device=device),
            feat_pending_lens=torch.zeros(batch, dtype=torch.long, device=device),
            frames=torch.zeros(batch, 0, d, dtype=dtype, device=device),
            frames_lens=torch.zeros(batch, dtype=torch.long, device=device),
            left_kv=torch.zeros(n, batch, context.left, 2 * d, dtype=dtype, device=device),
            memory=torch.zeros(n, batch, cfg.memory_size, d, dtype=dtype, device=device),
            segments=torch.zeros(batch, dtype=torch.long, device=device),
            conv_cache=(torch.zeros(n, batch, cfg.conv_kernel - 1, d, dtype=dtype, device=device)
                        if cfg.conv_kernel else None),
        )

    def forward(self, x: Tensor, x_lens: Tensor, context: ChunkContext) -> tuple[Tensor, Tensor]:
        """Encode whole utterances: x (B, T, F), x_lens (B,) -> (B, T // 4, D), (B,)."""
        state = self.init_state(x.shape[0], context, x.device)
        final = torch.ones(x.shape[0], dtype=torch.bool, device=x.device)
        y, y_lens, _ = self.forward_chunk(x, x_lens, state, final)
        return y, y_lens

    def step(
        self, feats: Tensor, caches: tuple[Tensor, ...], index: Tensor, context: ChunkContext,
        remaining: Tensor | None = None,
    ) -> tuple[Tensor, tuple[Tensor, ...], Tensor]:
        """One segment of every stream, tensors only and fixed shapes: the step an export runs.

        Buffering is the caller's: each call gets the ``(C + R) * frame_stack`` normalised
        feature frames of one segment and its right context, hopping ``C * frame_stack`` frames
        per call, and ``forward_chunk`` finishes a stream (its last, possibly short, segment).
        It gives the frames ``forward`` gives for the same segment.

        Args:
            feats: (B, (C + R) * frame_stack, F); caches: ``(left_kv, memory)`` of the state,
            ``(left_kv, memory, conv_cache)`` with a convolution: (N, B, L, 2D), (N, B, M, D),
            (N, B, G, D); index: (B,) segments each stream has done (its first: 0); remaining:
            (B,) frames of each stream from the segment's first on, if it ends within the window
            (the rows past it are masked, as ``forward_chunk`` does for a stream's last segment).
        Returns:
            y: (B, C, D), the new caches (same layout) and index.
        """
        c, left, r, m = context.chunk, context.left, context.right, self.cfg.memory_size
        batch, stack = feats.shape[0], self.cfg.frame_stack
        left_kv, memory = caches[0], caches[1]
        if remaining is None:
            remaining = torch.full_like(index, c + r)
        rows = torch.arange(c + r, device=feats.device) < remaining.view(-1, 1)  # (B, C + R) rows that exist
        frames = self.embed(feats.reshape(batch, c + r, stack * feats.shape[2])) * rows.unsqueeze(-1)  # (B, C + R, D)
        seg, block = frames[:, :c], frames[:, c:]
        valid = rows[:, :c]
        mask = _additive(emformer_attn_mask(index, remaining, chunk=c, left=left, right=r, memory=m), feats.dtype)
        distance = relative_distances(context, feats.device)
        mem_in = seg.sum(1) / valid.sum(1, keepdim=True).clamp(min=1)  # layer 0's memory vector of this segment
        new_left, new_memory, new_conv = [], [], []
        layer: EmformerLayer
        for i, layer in enumerate(self.layers):  # type: ignore[assignment]
            h, kv = layer.prepare(seg, block, valid)
            new_left.append(torch.cat([left_kv[i], kv[:, :c]], dim=1)[:, c:])
            new_memory.append(torch.cat([memory[i], mem_in.unsqueeze(1)], dim=1)[:, 1:])
            seg, block, mem_in = layer.attend(seg, block, h, kv, memory[i], left_kv[i], mask, layer.position_bias(distance, m))
            before = gated = None
            if layer.conv is not None:
                gated, before = layer.gate(seg, block), caches[2][i]  # (B, C + R, D), (B, G, D)
                new_conv.append(torch.cat([before, gated[:, :c] * valid.unsqueeze(-1)], dim=1)[:, c:])
            seg, block = layer.finish(seg, block, before, gated, rows)
        new = (torch.stack(new_left), torch.stack(new_memory), *([torch.stack(new_conv)] if new_conv else []))
        return self.after_norm(seg), new, index + 1

    def _embed(self, x: Tensor, x_lens: Tensor, state: EmformerState) -> tuple[list[Tensor], Tensor, Tensor]:
        """New features -> each stream's layer-0 input from its next segment on, and the new
        feature remainder (B, P0, F), (B,)."""
        stack, batch = self.cfg.frame_stack, x.shape[0]
        feats = [torch.cat([state.feat_pending[b, : int(p)], x[b, : int(n)]])
                 for b, (p, n) in enumerate(zip(state.feat_pending_lens.tolist(), x_lens.tolist()))]
        made = [f.shape[0] // stack for f in feats]
        stacked = torch.cat([f[: n * stack].reshape(n, stack * f.shape[1]) for f, n in zip(feats, made)])
        new = self.embed_dropout(self.embed(stacked)).split(made)
        frames = [torch.cat([state.frames[b, : int(state.frames_lens[b])], new[b]]) for b in range(batch)]
        rest = x.new_zeros(batch, stack - 1, x.shape[2])
        for b, (f, n) in enumerate(zip(feats, made)):
            rest[b, : f.shape[0] - n * stack] = f[n * stack :]
        rest_lens = torch.tensor([f.shape[0] - n * stack for f, n in zip(feats, made)], device=x.device)
        return frames, rest, rest_lens

    def _segments(self, lengths: list[int], finals: list[bool], done: list[int], context: ChunkContext,
                  device: torch.device) -> _Segments:
        """The segments to compute: those whose rows and right context are all there, and for a
        finished stream every segment left (its last possibly short, its blocks cut at the end)."""
        c, r = context.chunk, context.right
        counts = [-(-n // c) if fin else max(0, (n - r) // c) for n, fin in zip(lengths, finals)]
        stream = torch.repeat_interleave(torch.arange(len(counts), device=device), torch.tensor(counts, device=device))
        local = torch.cat([torch.arange(n, device=device) for n in counts]) if counts else stream
        remaining = torch.tensor(lengths, device=device)[stream] - local * c  # (S,) frames from each start on
        rows = torch.arange(c + r, device=device) < remaining.view(-1, 1)  # (S, C + R) rows that exist
        return _Segments(
            stream=stream,
            index=torch.tensor(done, device=device)[stream] + local,
            local=local,
            remaining=remaining,
            s_valid=rows[:, :c],
            rc_valid=rows[:, c:],
            counts=counts,
        )

    def forward_chunk(
        self, x: Tensor, x_lens: Tensor, state: EmformerState, final: Tensor
    ) -> tuple[Tensor, Tensor, EmformerState]:
        """Feed more features to each stream and collect the encoder frames that became final.

        Args:
            x: (B, T, F) new normalised features, x_lens: (B,); state: batch B; final: (B,) bool.
        Returns:
            y: (B, T', D) frames emitted by this call, y_lens: (B,), and the new state.
        """
        context, device = state.context, x.device
        c, left, r, m = context.chunk, context.left, context.right, self.cfg.memory_size
        batch, d = x.shape[0], self.cfg.output_size
        frames, feat_rest, feat_rest_lens = self._embed(x, x_lens, state)
        plan = self._segments([f.shape[0] for f in frames], final.tolist(), state.segments.tolist(), context, device)
        counts = plan.counts
        most = max(counts)

        # layer-0 rows of every segment, gathered from each stream's frames (zeros past the end)
        width = most * c + r
        timeline = torch.stack([F.pad(f[:width], (0, 0, 0, width - min(width, f.shape[0]))) for f in frames])
        rows = plan.stream.view(-1, 1) * width + plan.local.view(-1, 1) * c  # (S, 1)
        flat = timeline.flatten(0, 1)
        seg = flat[rows + torch.arange(c, device=device)] * plan.s_valid.unsqueeze(-1)  # (S, C, D)
        block = flat[rows + c + torch.arange(r, device=device)] * plan.rc_valid.unsqueeze(-1)  # (S, R, D)

        # which keys each query may attend to: [memory M | left L | segment C | block R]
        mask = _additive(emformer_attn_mask(plan.index, plan.remaining, chunk=c, left=left, right=r, memory=m), x.dtype)
        distance = relative_distances(context, device)

        # per stream, where a segment's memory, left context and convolution inputs before it lie in
        # the [state | this call] timelines of its stream, and which rows the new state keeps
        counts_t = torch.tensor(counts, device=device)

        def places(width: int, per: int) -> tuple[Tensor, Tensor]:
            """(S, width) rows before each segment, (B, width) last rows of each stream, in the
            flattened timelines of a ``width``-row cache followed by ``per`` rows per segment."""
            span = width + most * per
            take = (plan.stream * span + plan.local * per).view(-1, 1) + torch.arange(width, device=device)
            keep = (torch.arange(batch, device=device) * span + counts_t * per).view(-1, 1) + torch.arange(
                width, device=device)
            return take, keep

        mem_take, mem_keep = places(m, 1)
        left_take, left_keep = places(left, c)
        if self.cfg.conv_kernel:
            conv_take, conv_keep = places(self.cfg.conv_kernel - 1, c)
        rows_valid = torch.cat([plan.s_valid, plan.rc_valid], dim=1)  # (S, C + R)

        def timeline_of(cache: Tensor, new: Tensor) -> Tensor:
            """(B, Lc, *) cache and (S, per, *) rows of this call -> (B * (Lc + most * per), *)."""
            per = new.shape[1]
            out = torch.cat([cache, cache.new_zeros(batch, most * per, *cache.shape[2:])], dim=1)
            where = cache.shape[1] + plan.local.view(-1, 1) * per + torch.arange(per, device=device)
            return out.index_put((plan.stream.view(-1, 1), where), new.to(out.dtype)).flatten(0, 1)

        memory = seg.sum(1) / plan.s_valid.sum(1, keepdim=True).clamp(min=1)  # layer 0: mean of each input segment
        new_left, new_memory, new_conv = [], [], []
        layer: EmformerLayer
        for i, layer in enumerate(self.layers):  # type: ignore[assignment]
            mem_rows = timeline_of(state.memory[i], memory.unsqueeze(1))
            h, kv = layer.prepare(seg, block, plan.s_valid)
            left_rows = timeline_of(state.left_kv[i], kv[:, :c])
            seg, block, memory = layer.attend(
                seg, block, h, kv, mem_rows[mem_take], left_rows[left_take], mask, layer.position_bias(distance, m)
            )
            new_memory.append(mem_rows[mem_keep])
            new_left.append(left_rows[left_keep])
            before = gated = None
            if layer.conv is not None:
                assert state.conv_cache is not None
                gated = layer.gate(seg, block)  # (S, C + R, D)
                conv_rows = timeline_of(state.conv_cache[i], gated[:, :c] * plan.s_valid.unsqueeze(-1))
                before = conv_rows[conv_take]  # (S, G, D)
                new_conv.append(conv_rows[conv_keep])
            seg, block = layer.finish(seg, block, before, gated, rows_valid)
        y = self.after_norm(seg)  # (S, C, D)

        out_lens = torch.zeros(batch, dtype=torch.long, device=device).index_add(0, plan.stream, plan.s_valid.sum(1))
        out = y.new_zeros(batch, int(out_lens.max()) if batch else 0, d)
        rows_at = plan.local.view(-1, 1) * c + torch.arange(c, device=device)  # (S, C) output row of each
        streams_at = plan.stream.view(-1, 1).expand_as(rows_at)
        out = out.index_put((streams_at[plan.s_valid], rows_at[plan.s_valid]), y[plan.s_valid])
        rest = [f[n * c :] if not fin else f[:0] for f, n, fin in zip(frames, counts, final.tolist())]
        rest_width = max(f.shape[0] for f in rest)
        new_state = EmformerState(
            context=context,
            feat_pending=feat_rest,
            feat_pending_lens=feat_rest_lens,
            frames=torch.stack([F.pad(f, (0, 0, 0, rest_width - f.shape[0])) for f in rest]),
            frames_lens=torch.tensor([f.shape[0] for f in rest], device=device),
            left_kv=torch.stack(new_left),
            memory=torch.stack(new_memory),
            segments=state.segments + counts_t,
            conv_cache=torch.stack(new_conv) if new_conv else None,
        )
        return out, out_lens, new_state


class EmformerStep(nn.Module):
    """:meth:`EmformerEncoder.step` in the layout every exported step shares (``StepLayout``):
    ``forward(feats, end, position, left_kv, memory[, conv_cache]) -> (y, position + C, left_kv,
    memory[, conv_cache])``,
    one segment per call with no delay; ``end`` (the stream's feature frames once known) masks the
    rows past a stream's end."""

    def __init__(self, encoder: EmformerEncoder, context: ChunkContext) -> None:
        super().__init__()
        encoder.check_context(context)
        self.encoder = encoder
        self.context = context

    @property
    def layout(self) -> StepLayout:
        cfg, c, r = self.encoder.cfg, self.context.chunk, self.context.right
        n, d = cfg.num_blocks, cfg.output_size
        states: dict[str, tuple[int, ...]] = {
            "left_kv": (n, 1, self.context.left, 2 * d), "memory": (n, 1, cfg.memory_size, d)}
        if cfg.conv_kernel:
            states["conv_cache"] = (n, 1, cfg.conv_kernel - 1, d)
        return StepLayout(
            feature_frames=(c + r) * cfg.frame_stack, feature_hop=c * cfg.frame_stack, step_frames=c, delay=0,
            states=states,
        )

    def init_state(self, batch: int, device: torch.device | str = "cpu") -> tuple[Tensor, ...]:
        """``(position, left_kv, memory[, conv_cache])`` of ``batch`` streams that have seen nothing."""
        state = self.encoder.init_state(batch, self.context, device)
        caches = (state.left_kv, state.memory, *([state.conv_cache] if state.conv_cache is not None else []))
        return torch.zeros(batch, dtype=torch.long, device=device), *caches

    def forward(self, feats: Tensor, end: Tensor, position: Tensor, *caches: Tensor) -> tuple[Tensor, ...]:
        c = self.context.chunk
        index = torch.div(position, c, rounding_mode="floor")
        remaining = self.encoder.output_lengths(end) - position
        y, caches, _ = self.encoder.step(feats, caches, index, self.context, remaining)
        return y, position + c, *caches


def _additive(mask: Tensor, dtype: torch.dtype) -> Tensor:
    """(S, Q, K) True = may attend -> (S, 1, Q, K) 0 / -inf, added to every head's scores."""
    return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(~mask, float("-inf")).unsqueeze(1)
