"""The Zipformer encoder (Yao et al., ICLR 2024), chunk-causal so that it streams exactly.

A convolutional embedding takes 100 Hz features to 50 Hz; six stacks run at 50 Hz divided by
their downsampling factors (1, 2, 4, 8, 4, 2 by default), each with its own dimension, heads and
convolution kernel; the stacks' channel slices are merged and a last 2x downsampling gives
25 Hz (40 ms) output frames.

- Embedding: three 3x3 Conv2d (time unpadded, so each 50 Hz frame ``j`` is a function of feature
  frames ``2j .. 2j + 8`` alone), SwooshR, a linear layer and BiasNorm.
- Stack at factor ``d``: its input (the previous stack's output, channels cut or zero-padded to
  its dimension) is downsampled by a softmax-weighted sum of each ``d`` frames, goes through the
  stack's layers, is upsampled by repetition and mixed with the stack input by a learned
  per-channel bypass ``x + c * (y - x)``.
- Layer (the Zipformer block): attention weights computed once and shared by a non-linear
  attention module and two self-attention modules; three feed-forward modules (SwooshL); two
  convolution modules (SwooshR); a mid-layer bypass, BiasNorm, and a bypass of the whole layer.
  The attention scores get an explicit ``1 / sqrt(query_head_dim)`` scale: Zipformer's own
  optimiser (ScaledAdam) learns parameter scales that AdamW does not, and icefall's balancers
  and whiteners are training aids left out.
- Positions: a learned per-head bias of the clipped relative distance, at each stack's rate.

Streaming is chunk-causal: the audio is cut into chunks of ``C`` output frames (``2C`` frames at
50 Hz, ``2C / d`` at a stack of factor ``d``); a frame sees its whole chunk and ``L`` output
frames' worth of left context (``2L / d`` frames at each stack: the same span of time at every
rate), never anything after its chunk. So ``C`` and ``L`` must be multiples of the coarsest
stack (4 output frames, 160 ms, with the default factors) and there is no right context. The
convolutions are chunk-causal too (a causal kernel with cached left frames plus a kernel that
sees only the frame's own chunk). The state holds, per layer, the left context's keys, both
self-attention modules' values and the non-linear attention's values, and the causal
convolutions' last frames; plus the features and 50 Hz frames not yet made into a chunk.

One computation serves training and streaming: ``forward`` is ``forward_chunk`` on a fresh
state with every stream final, which runs every chunk of every utterance of the batch at once
per layer (the masked batch), each chunk attending to its own [left, chunk] window.

Shape legend:
    B streams   T feature frames   F feature bins   D stack dim   H heads   E cached row width
    C chunk, L left context (output frames of 40 ms); at a stack of factor d: c = 2C / d,
    l = 2L / d frames   n chunks computed in one call   T50 frames at 50 Hz
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
from echostream.masks import chunk_attn_mask, lengths_to_valid_mask
from echostream.nn.activation import swoosh_l, swoosh_r
from echostream.nn.normalization import BiasNorm

MASKED = -1e9  # score of a key that may not be attended (finite: a row of padding stays finite)


@dataclass(frozen=True, kw_only=True)
class ZipformerConfig(EncoderConfig):
    """Shape of a Zipformer encoder: one entry per stack in each tuple."""

    TYPE = "zipformer"
    type: str = "zipformer"
    input_dim: int = 80
    downsampling_factors: tuple[int, ...] = (1, 2, 4, 8, 4, 2)  # relative to 50 Hz
    encoder_dims: tuple[int, ...] = (192, 256, 384, 512, 384, 256)
    num_layers: tuple[int, ...] = (2, 2, 3, 4, 3, 2)
    attention_heads: tuple[int, ...] = (4, 4, 4, 8, 4, 4)
    feedforward_dims: tuple[int, ...] = (512, 768, 1024, 1536, 1024, 768)
    cnn_module_kernels: tuple[int, ...] = (31, 31, 15, 15, 15, 31)
    query_head_dim: int = 32
    value_head_dim: int = 12
    max_relative_position: int = 16  # distances beyond +-P (frames at the stack's rate) share a bias
    dropout_rate: float = 0.1

    def __post_init__(self) -> None:
        super().__post_init__()
        stacks = len(self.downsampling_factors)
        if stacks == 0:
            raise ValueError("encoder.downsampling_factors is empty")
        for name in ("downsampling_factors", "encoder_dims", "num_layers", "attention_heads", "feedforward_dims",
                     "cnn_module_kernels"):
            values = getattr(self, name)
            if len(values) != stacks:
                raise ValueError(f"encoder.{name} has {len(values)} entries for {stacks} stacks")
            if any(v <= 0 for v in values):
                raise ValueError(f"encoder.{name} must be positive, got {list(values)}")
        if any(k % 2 == 0 for k in self.cnn_module_kernels):
            raise ValueError(f"encoder.cnn_module_kernels must be odd, got {list(self.cnn_module_kernels)}")
        for name in ("input_dim", "query_head_dim", "value_head_dim"):
            if getattr(self, name) <= 0:
                raise ValueError(f"encoder.{name} must be positive, got {getattr(self, name)}")
        if self.input_dim < 7:
            raise ValueError(f"encoder.input_dim must be at least 7 (the embedding's convolutions), got {self.input_dim}")
        if self.max_relative_position < 0:
            raise ValueError(f"encoder.max_relative_position must be >= 0, got {self.max_relative_position}")
        if not 0.0 <= self.dropout_rate < 1.0:
            raise ValueError(f"encoder.dropout_rate must be in [0, 1), got {self.dropout_rate}")

    @property
    def output_size(self) -> int:
        """Output channels: the widest stack's (every stack's slices are merged)."""
        return max(self.encoder_dims)

    @property
    def granularity(self) -> int:
        """Chunk and left context must be multiples of this many output frames: ``2C`` frames at
        50 Hz must split into whole frames at every stack."""
        return math.lcm(*self.downsampling_factors, 2) // 2


@dataclass(frozen=True)
class ZipformerState(EncoderState):
    """What a stream carries from one call to the next.

    Tensors are batched over streams (dim 0, or dim 1 where layers come first); one entry per
    stack in the tuples.
    """

    context: ChunkContext
    feat_pending: Tensor  # (B, P, F) features the embedding has not used up
    feat_pending_lens: Tensor  # (B,)
    frames: Tensor  # (B, P50, D0) 50 Hz frames waiting for a whole chunk
    frames_lens: Tensor  # (B,)
    done: Tensor  # (B,) 50 Hz frames already through the stacks (whole chunks)
    attn_caches: tuple[Tensor, ...] = field(metadata=BATCH_DIM_1)  # (layers, B, l, E): keys and values
    conv_caches: tuple[Tensor, ...] = field(metadata=BATCH_DIM_1)  # (layers, B, K // 2, 2D): causal conv inputs


class Embedding(nn.Module):
    """Features (100 Hz) -> frames (50 Hz): ``(B, T, F) -> (B, (T - 7) // 2, D)``.

    No padding in time, so frame ``j`` depends on feature frames ``2j .. 2j + 8`` only.
    """

    def __init__(self, input_dim: int, dim: int, dropout: float) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, padding=(0, 1))
        self.conv2 = nn.Conv2d(8, 32, 3, stride=2)
        self.conv3 = nn.Conv2d(32, 128, 3, stride=(1, 2))
        bins = ((input_dim - 3) // 2 + 1 - 3) // 2 + 1
        self.out = nn.Linear(128 * bins, dim)
        self.norm = BiasNorm(dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        h = swoosh_r(self.conv1(x.unsqueeze(1)))  # (B, 8, T - 2, F)
        h = swoosh_r(self.conv2(h))  # (B, 32, T', F')
        h = swoosh_r(self.conv3(h))  # (B, 128, T'', F'')
        return self.dropout(self.norm(self.out(h.transpose(1, 2).flatten(2))))  # (B, T'', D)


class Bypass(nn.Module):
    """``x + c * (y - x)`` with a learned per-channel ``c`` in [0, 1] (starts at 0.5)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.full((dim,), 0.5))

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        return x + self.scale.clamp(0.0, 1.0) * (y - x)


def chunk_windows(cache: Tensor, rows: Tensor, chunk: int) -> Tensor:
    """Each chunk's [left context, chunk] rows: (B, l, E) cached rows and (B, n * c, E) rows of
    this call -> (B, n, l + c, E)."""
    timeline = torch.cat([cache, rows], dim=1)  # (B, l + n c, E)
    if torch.onnx.is_in_onnx_export():  # the exporter cannot follow unfold: gather the same rows
        width = cache.shape[1] + chunk
        index = (torch.arange(rows.shape[1] // chunk, device=rows.device) * chunk).unsqueeze(1) + torch.arange(
            width, device=rows.device)
        return timeline[:, index]  # (B, n, l + c, E)
    return timeline.unfold(1, cache.shape[1] + chunk, chunk).transpose(-1, -2)  # (B, n, l + c, E)


class AttentionWeights(nn.Module):
    """Per-head attention weights of each chunk's frames over its [left, chunk] window, computed
    once per layer and shared by the layer's three attention modules."""

    def __init__(self, dim: int, heads: int, head_dim: int, max_relative: int) -> None:
        super().__init__()
        self.heads, self.head_dim = heads, head_dim
        self.query = nn.Linear(dim, heads * head_dim)
        self.key = nn.Linear(dim, heads * head_dim)
        self.max_relative = max_relative
        self.position_bias = nn.Parameter(torch.zeros(heads, 2 * max_relative + 1)) if max_relative else None

    def forward(self, x: Tensor, key_cache: Tensor, window_mask: Tensor, chunk: int) -> tuple[Tensor, Tensor]:
        """x: (B, n c, D), key_cache: (B, l, H Dk), window_mask: (B, n, l + c).

        Returns weights (B, n, H, c, l + c) and this call's keys (B, n c, H Dk)."""
        b, t, _ = x.shape
        n, left, h, dk = t // chunk, key_cache.shape[1], self.heads, self.head_dim
        keys = self.key(x)  # (B, n c, H Dk)
        q = self.query(x).view(b, n, chunk, h, dk).permute(0, 1, 3, 2, 4)  # (B, n, H, c, Dk)
        k = chunk_windows(key_cache, keys, chunk).reshape(b, n, left + chunk, h, dk).permute(0, 1, 3, 4, 2)
        scores = torch.matmul(q, k) / math.sqrt(dk)  # (B, n, H, c, l + c)
        if self.position_bias is not None:
            distance = torch.arange(-left, chunk, device=x.device).view(1, -1) - torch.arange(chunk, device=x.device).view(-1, 1)
            index = distance.clamp(-self.max_relative, self.max_relative) + self.max_relative  # (c, l + c)
            scores = scores + self.position_bias[:, index]  # (H, c, l + c) broadcast
        scores = scores.masked_fill(~window_mask.view(b, n, 1, 1, left + chunk), MASKED)
        return torch.softmax(scores, dim=-1), keys


class SelfAttention(nn.Module):
    """Values of the [left, chunk] window weighted by shared attention weights."""

    def __init__(self, dim: int, heads: int, head_dim: int) -> None:
        super().__init__()
        self.heads, self.head_dim = heads, head_dim
        self.value = nn.Linear(dim, heads * head_dim)
        self.out = nn.Linear(heads * head_dim, dim)

    def forward(self, x: Tensor, weights: Tensor, value_cache: Tensor) -> tuple[Tensor, Tensor]:
        """x: (B, n c, D), weights: (B, n, H, c, l + c), value_cache: (B, l, H Dv) ->
        (B, n c, D) and this call's values (B, n c, H Dv)."""
        b, n, h, c, w = weights.shape
        values = self.value(x)  # (B, n c, H Dv)
        v = chunk_windows(value_cache, values, c).reshape(b, n, w, h, self.head_dim).transpose(2, 3)  # (B, n, H, w, Dv)
        attended = torch.matmul(weights, v).permute(0, 1, 3, 2, 4).reshape(b, n * c, h * self.head_dim)
        return self.out(attended), values


class NonlinAttention(nn.Module):
    """Zipformer's non-linear attention: ``out(attend(tanh(s) * v) * y)`` with the first head's
    weights, for hidden = 3/4 of the stack dim."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.hidden = 3 * dim // 4
        self.inputs = nn.Linear(dim, 3 * self.hidden)
        self.out = nn.Linear(self.hidden, dim)

    def forward(self, x: Tensor, weights: Tensor, value_cache: Tensor) -> tuple[Tensor, Tensor]:
        """x: (B, n c, D), weights: (B, n, H, c, l + c), value_cache: (B, l, hidden) ->
        (B, n c, D) and this call's values (B, n c, hidden)."""
        b, n, _, c, _ = weights.shape
        s, v, y = self.inputs(x).chunk(3, dim=-1)  # 3 x (B, n c, hidden)
        values = v * torch.tanh(s)
        window = chunk_windows(value_cache, values, c)  # (B, n, l + c, hidden)
        attended = torch.matmul(weights[:, :, 0], window).reshape(b, n * c, self.hidden)  # (B, n c, hidden)
        return self.out(attended * y), values


class ChunkCausalConv(nn.Module):
    """Gated depthwise convolution that never looks past the frame's chunk: a causal kernel of
    ``K // 2 + 1`` frames (its ``K // 2`` left frames cached across chunks) plus a centred kernel
    of ``K`` frames that sees only the frame's own chunk (zeros outside it)."""

    def __init__(self, dim: int, kernel: int) -> None:
        super().__init__()
        self.reach: int = kernel // 2
        self.inputs = nn.Linear(dim, 2 * dim)
        self.causal = nn.Conv1d(dim, dim, self.reach + 1, groups=dim)
        self.within = nn.Conv1d(dim, dim, kernel, padding=self.reach, groups=dim, bias=False)
        self.out = nn.Linear(dim, dim)

    def forward(self, x: Tensor, valid: Tensor, cache: Tensor, chunk: int) -> tuple[Tensor, Tensor]:
        """x: (B, n c, D), valid: (B, n c), cache: (B, K // 2, D) -> (B, n c, D) and the
        convolution's input timeline (B, K // 2 + n c, D) (the next cache is its tail)."""
        b, t, d = x.shape
        h, gate = self.inputs(x).chunk(2, dim=-1)
        h = h * torch.sigmoid(gate) * valid.unsqueeze(-1)  # (B, n c, D), padding zeroed
        timeline = torch.cat([cache, h], dim=1)  # (B, K // 2 + n c, D)
        causal = self.causal(timeline.transpose(1, 2))  # (B, D, n c)
        within = self.within(h.reshape(b * (t // chunk), chunk, d).transpose(1, 2))  # (B n, D, c)
        within = within.view(b, t // chunk, d, chunk).permute(0, 2, 1, 3).reshape(b, d, t)  # (B, D, n c)
        return self.out(swoosh_r(causal + within).transpose(1, 2)), timeline


class FeedForward(nn.Module):
    """``w2(dropout(SwooshL(w1(x))))``: (*, D) -> (*, D)."""

    def __init__(self, dim: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.w1, self.w2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.w2(self.dropout(swoosh_l(self.w1(x))))


class ZipformerLayer(nn.Module):
    """The Zipformer block, on the frames of whole chunks at one stack's rate."""

    def __init__(self, cfg: ZipformerConfig, stack: int) -> None:
        super().__init__()
        dim, heads, ff = cfg.encoder_dims[stack], cfg.attention_heads[stack], cfg.feedforward_dims[stack]
        self.weights = AttentionWeights(dim, heads, cfg.query_head_dim, cfg.max_relative_position)
        self.nonlin = NonlinAttention(dim)
        self.attn1 = SelfAttention(dim, heads, cfg.value_head_dim)
        self.attn2 = SelfAttention(dim, heads, cfg.value_head_dim)
        self.ff1 = FeedForward(dim, ff * 3 // 4, cfg.dropout_rate)
        self.ff2 = FeedForward(dim, ff, cfg.dropout_rate)
        self.ff3 = FeedForward(dim, ff * 5 // 4, cfg.dropout_rate)
        self.conv1 = ChunkCausalConv(dim, cfg.cnn_module_kernels[stack])
        self.conv2 = ChunkCausalConv(dim, cfg.cnn_module_kernels[stack])
        self.bypass_mid, self.bypass = Bypass(dim), Bypass(dim)
        self.norm = BiasNorm(dim)
        self.dropout = nn.Dropout(cfg.dropout_rate)
        hk, hv = heads * cfg.query_head_dim, heads * cfg.value_head_dim
        self.cache_split = (hk, hv, hv, self.nonlin.hidden)  # keys | values 1 | values 2 | non-linear values

    def forward(
        self, x: Tensor, valid: Tensor, window_mask: Tensor, attn_cache: Tensor, conv_cache: Tensor, chunk: int
    ) -> tuple[Tensor, Tensor, Tensor]:
        """x: (B, n c, D), valid: (B, n c), window_mask: (B, n, l + c), attn_cache: (B, l, E),
        conv_cache: (B, K // 2, 2D).

        Returns the output (B, n c, D), this call's attention rows (B, n c, E) and the two
        convolutions' input timelines (B, K // 2 + n c, 2D)."""
        keys_c, values1_c, values2_c, nonlin_c = attn_cache.split(self.cache_split, dim=-1)
        conv1_c, conv2_c = conv_cache.chunk(2, dim=-1)
        drop = self.dropout
        start = x
        weights, keys = self.weights(x, keys_c, window_mask, chunk)
        x = x + drop(self.ff1(x))
        y, nonlin_v = self.nonlin(x, weights, nonlin_c)
        x = x + drop(y)
        y, values1 = self.attn1(x, weights, values1_c)
        x = x + drop(y)
        y, conv1_t = self.conv1(x, valid, conv1_c, chunk)
        x = x + drop(y)
        x = x + drop(self.ff2(x))
        x = self.bypass_mid(start, x)
        y, values2 = self.attn2(x, weights, values2_c)
        x = x + drop(y)
        y, conv2_t = self.conv2(x, valid, conv2_c, chunk)
        x = x + drop(y)
        x = x + drop(self.ff3(x))
        x = self.bypass(start, self.norm(x)) * valid.unsqueeze(-1)
        return x, torch.cat([keys, values1, values2, nonlin_v], dim=-1), torch.cat([conv1_t, conv2_t], dim=-1)


def weighted_downsample(x: Tensor, valid: Tensor, logits: Tensor) -> Tensor:
    """Softmax-weighted sum of each ``d`` consecutive frames, over the valid ones only:
    x (B, T, D), valid (B, T), logits (d,) -> (B, T / d, D)."""
    b, t, d = x.shape
    factor = logits.shape[0]
    groups = valid.view(b, t // factor, factor)  # (B, T / d, d)
    weights = torch.softmax(logits.expand(b, t // factor, factor).masked_fill(~groups, MASKED), dim=-1)
    return (x.view(b, t // factor, factor, d) * weights.unsqueeze(-1)).sum(2)  # (B, T / d, D)


class ZipformerStack(nn.Module):
    """Layers at one rate: downsample by ``d``, the layers, upsample, bypass against the input."""

    def __init__(self, cfg: ZipformerConfig, stack: int) -> None:
        super().__init__()
        self.factor = cfg.downsampling_factors[stack]
        self.dim = cfg.encoder_dims[stack]
        self.logits = nn.Parameter(torch.zeros(self.factor)) if self.factor > 1 else None
        self.layers = nn.ModuleList([ZipformerLayer(cfg, stack) for _ in range(cfg.num_layers[stack])])
        self.out_bypass = Bypass(self.dim)

    def forward(
        self, x: Tensor, valid: Tensor, done: Tensor, context: ChunkContext, attn_cache: Tensor, conv_cache: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        """x: (B, T50, D) at 50 Hz (whole chunks), valid: (B, T50), done: (B,) 50 Hz frames of
        each stream before x; caches (layers, B, ...).

        Returns the output (B, T50, D) and the layers' new caches."""
        d = self.factor
        c, left = 2 * context.chunk // d, 2 * context.left // d
        h = weighted_downsample(x, valid, self.logits) if self.logits is not None else x  # (B, T50 / d, D)
        h_valid = valid.view(valid.shape[0], -1, d).any(-1)  # (B, T50 / d)
        b, t = h_valid.shape
        n = t // c
        first = done // d  # (B,) frames of this stack before x
        end = first + h_valid.sum(1)  # (B,) frames known after x
        index = (first // c).view(-1, 1) + torch.arange(n, device=x.device)  # (B, n) chunk numbers
        window_mask = chunk_attn_mask(index.flatten(), end.repeat_interleave(n), chunk=c, left=left, right=0)
        window_mask = window_mask.view(b, n, left + c)
        new_attn, new_conv = [], []
        for i, layer in enumerate(self.layers):
            h, rows, conv_timeline = layer(h, h_valid, window_mask, attn_cache[i], conv_cache[i], c)
            rows_timeline = torch.cat([attn_cache[i], rows], dim=1)  # (B, l + n c, E)
            new_attn.append(_tail(rows_timeline, left + h_valid.sum(1), left))
            new_conv.append(_tail(conv_timeline, conv_cache.shape[2] + h_valid.sum(1), conv_cache.shape[2]))
        up = h.repeat_interleave(d, dim=1) if d > 1 else h  # (B, T50, D)
        out = self.out_bypass(x, up) * valid.unsqueeze(-1)
        return out, torch.stack(new_attn), torch.stack(new_conv)


def _tail(timeline: Tensor, end: Tensor, length: int) -> Tensor:
    """Each stream's ``length`` rows before ``end``: (B, W, E), (B,) -> (B, length, E)."""
    index = end.view(-1, 1) - length + torch.arange(length, device=timeline.device)  # (B, length)
    return timeline.gather(1, index.unsqueeze(-1).expand(-1, -1, timeline.shape[2]))


def fit_channels(x: Tensor, dim: int) -> Tensor:
    """(B, T, D) -> (B, T, dim): channels cut, or zero-padded at the end."""
    return x[..., :dim] if x.shape[-1] >= dim else F.pad(x, (0, dim - x.shape[-1]))


class ZipformerEncoder(nn.Module):
    """Embedding, the stacks, channel merge, a final 2x downsampling to 40 ms frames."""

    causal = True

    def __init__(self, cfg: ZipformerConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.subsampling = 4  # 2x in the embedding, 2x at the output
        self.receptive_field = 9  # feature frames of the first output frame (its one 50 Hz frame)
        self.embed = Embedding(cfg.input_dim, cfg.encoder_dims[0], cfg.dropout_rate)
        self.stacks = nn.ModuleList([ZipformerStack(cfg, i) for i in range(len(cfg.encoder_dims))])
        self.out_logits = nn.Parameter(torch.zeros(2))
        self._output_size = cfg.output_size

    def output_size(self) -> int:
        return self._output_size

    def output_lengths(self, x_lens: Tensor) -> Tensor:
        """(B,) feature frames -> (B,) encoder frames: ``ceil(((n - 7) // 2) / 2)``."""
        return ((x_lens - 7).clamp(min=0) // 2 + 1) // 2

    def check_context(self, context: ChunkContext) -> None:
        """Chunk and left context in whole multiples of the coarsest stack; no right context."""
        g = self.cfg.granularity
        if context.right:
            raise ValueError(f"zipformer is chunk-causal: right_context must be 0, got {context.right}")
        if context.chunk % g or context.left % g:
            raise ValueError(
                f"zipformer needs chunk_size and left_context in multiples of {g} frames ({g * 40} ms), "
                f"got {context.chunk} and {context.left}"
            )

    def latency_frames(self, context: ChunkContext) -> int:
        """A chunk is final when its last 50 Hz frame's features are in: half an output frame
        of look-ahead in the embedding, rounded up to one."""
        return 1

    def init_state(self, batch: int, context: ChunkContext, device: torch.device | str = "cpu") -> ZipformerState:
        self.check_context(context)
        cfg, dtype = self.cfg, self.out_logits.dtype
        attn, conv = [], []
        stack: ZipformerStack
        for stack in self.stacks:  # type: ignore[assignment]
            layer: ZipformerLayer = stack.layers[0]  # type: ignore[assignment]
            left = 2 * context.left // stack.factor
            layers = len(stack.layers)
            attn.append(torch.zeros(layers, batch, left, sum(layer.cache_split), dtype=dtype, device=device))
            conv.append(torch.zeros(layers, batch, layer.conv1.reach, 2 * stack.dim, dtype=dtype, device=device))
        zeros = torch.zeros(batch, dtype=torch.long, device=device)
        return ZipformerState(
            context=context,
            feat_pending=torch.zeros(batch, 0, cfg.input_dim, dtype=dtype, device=device),
            feat_pending_lens=zeros,
            frames=torch.zeros(batch, 0, cfg.encoder_dims[0], dtype=dtype, device=device),
            frames_lens=zeros,
            done=zeros,
            attn_caches=tuple(attn),
            conv_caches=tuple(conv),
        )

    def forward(self, x: Tensor, x_lens: Tensor, context: ChunkContext) -> tuple[Tensor, Tensor]:
        """Encode whole utterances: x (B, T, F), x_lens (B,) -> (B, T', D), (B,)."""
        state = self.init_state(x.shape[0], context, x.device)
        final = torch.ones(x.shape[0], dtype=torch.bool, device=x.device)
        y, y_lens, _ = self.forward_chunk(x, x_lens, state, final)
        return y, y_lens

    def encode_chunks(
        self, x: Tensor, valid: Tensor, done: Tensor, context: ChunkContext,
        attn_caches: tuple[Tensor, ...], conv_caches: tuple[Tensor, ...],
    ) -> tuple[Tensor, tuple[Tensor, ...], tuple[Tensor, ...]]:
        """The stacks and the output downsampling over whole chunks: tensors only.

        Args:
            x: (B, n 2C, D0) 50 Hz frames of n chunks (a stream's last chunk may be partly
            padding), valid: (B, n 2C), done: (B,) 50 Hz frames before them (whole chunks).
        Returns:
            (B, n C, Dmax) output frames (padding rows are zeros) and the new caches.
        """
        outputs, new_attn, new_conv = [], [], []
        h = x
        stack: ZipformerStack
        for i, stack in enumerate(self.stacks):  # type: ignore[assignment]
            h, attn, conv = stack(fit_channels(h, stack.dim), valid, done, context, attn_caches[i], conv_caches[i])
            outputs.append(h)
            new_attn.append(attn)
            new_conv.append(conv)
        # every channel from the last stack that has it
        pieces, have = [outputs[-1]], self.cfg.encoder_dims[-1]
        for dim, out in zip(reversed(self.cfg.encoder_dims[:-1]), reversed(outputs[:-1])):
            if dim > have:
                pieces.append(out[..., have:dim])
                have = dim
        merged = torch.cat(pieces, dim=-1) if len(pieces) > 1 else pieces[0]
        if have < self._output_size:  # the widest stack is not the last of its width
            merged = fit_channels(merged, self._output_size)
        y = weighted_downsample(merged, valid, self.out_logits)  # (B, n C, Dmax)
        return y, tuple(new_attn), tuple(new_conv)

    def step(self, feats: Tensor, state: ZipformerState) -> tuple[Tensor, ZipformerState]:
        """One whole chunk of every stream, fixed shapes: the step an export runs.

        Buffering is the caller's: each call gets the ``4C + 7`` feature frames of one chunk
        (hopping ``4C``: consecutive windows overlap by 7 frames) and gives the ``C`` frames
        ``forward`` gives for that chunk. Only ``done`` and the caches of ``state`` are used and
        updated (its pending buffers are ``forward_chunk``'s).

        Args:
            feats: (B, 4C + 7, F) normalised features.
        Returns:
            y: (B, C, Dmax) and the new state.
        """
        context = state.context
        frames = self.embed(feats)  # (B, 2C, D0)
        valid = torch.ones(frames.shape[:2], dtype=torch.bool, device=feats.device)
        y, attn, conv = self.encode_chunks(frames, valid, state.done, context, state.attn_caches, state.conv_caches)
        new = ZipformerState(
            context=context, feat_pending=state.feat_pending, feat_pending_lens=state.feat_pending_lens,
            frames=state.frames, frames_lens=state.frames_lens, done=state.done + frames.shape[1],
            attn_caches=attn, conv_caches=conv,
        )
        return y, new

    def forward_chunk(
        self, x: Tensor, x_lens: Tensor, state: ZipformerState, final: Tensor
    ) -> tuple[Tensor, Tensor, ZipformerState]:
        """Feed more features to each stream and collect the encoder frames that became final.

        Args:
            x: (B, T, F) new normalised features, x_lens: (B,); state: batch B; final: (B,) bool.
        Returns:
            y: (B, T', D) frames emitted by this call, y_lens: (B,), and the new state.
        """
        context, device = state.context, x.device
        batch, span = x.shape[0], 2 * context.chunk  # 50 Hz frames per chunk

        # features -> 50 Hz frames; each stream keeps the features its next frame starts from
        feats = [torch.cat([state.feat_pending[b, : int(p)], x[b, : int(n)]])
                 for b, (p, n) in enumerate(zip(state.feat_pending_lens.tolist(), x_lens.tolist()))]
        made = [max(0, (f.shape[0] - 7) // 2) for f in feats]
        widest = max(f.shape[0] for f in feats)
        new_frames: list[Tensor] = [x.new_zeros(0, self.cfg.encoder_dims[0])] * batch
        if max(made) > 0:
            padded = torch.stack([F.pad(f, (0, 0, 0, widest - f.shape[0])) for f in feats])
            embedded = self.embed(padded)  # (B, max made, D0)
            new_frames = [embedded[b, :n] for b, n in enumerate(made)]
        feat_rest = [f[2 * n :] for f, n in zip(feats, made)]

        # 50 Hz frames -> whole chunks (a finished stream's last chunk may be short)
        frames = [torch.cat([state.frames[b, : int(state.frames_lens[b])], new_frames[b]]) for b in range(batch)]
        finals = final.tolist()
        used = [f.shape[0] if fin else f.shape[0] // span * span for f, fin in zip(frames, finals)]
        chunks = max(-(-u // span) for u in used)
        out_lens = torch.tensor([-(-u // 2) for u in used], device=device)
        if chunks:
            width = chunks * span
            timeline = torch.stack([F.pad(f[:u], (0, 0, 0, width - u)) for f, u in zip(frames, used)])
            valid = lengths_to_valid_mask(torch.tensor(used, device=device), width)
            y, attn, conv = self.encode_chunks(timeline, valid, state.done, context, state.attn_caches,
                                               state.conv_caches)
            y = y[:, : int(out_lens.max())]
        else:
            y, attn, conv = x.new_zeros(batch, 0, self._output_size), state.attn_caches, state.conv_caches
        rest = [f[u:] for f, u in zip(frames, used)]
        new_state = ZipformerState(
            context=context,
            feat_pending=_pad_stack(feat_rest, self.cfg.input_dim, x),
            feat_pending_lens=torch.tensor([f.shape[0] for f in feat_rest], device=device),
            frames=_pad_stack(rest, self.cfg.encoder_dims[0], x),
            frames_lens=torch.tensor([f.shape[0] for f in rest], device=device),
            done=state.done + torch.tensor(used, device=device),
            attn_caches=attn,
            conv_caches=conv,
        )
        return y, out_lens, new_state


class ZipformerStep(nn.Module):
    """:meth:`ZipformerEncoder.encode_chunks` on one chunk, in the layout every exported step
    shares (``StepLayout``): ``forward(feats, end, position, attn_0.., conv_0..) -> (y, position + C,
    attn_0.., conv_0..)``, with ``end`` the stream's *feature* frames once known (its 50 Hz frames
    past the end are masked, as ``forward_chunk`` does for a stream's last chunk), no delay."""

    def __init__(self, encoder: ZipformerEncoder, context: ChunkContext) -> None:
        super().__init__()
        encoder.check_context(context)
        self.encoder = encoder
        self.context = context

    @property
    def layout(self) -> StepLayout:
        zero = self.encoder.init_state(1, self.context)
        states = {f"attn_{i}": tuple(t.shape) for i, t in enumerate(zero.attn_caches)}
        states.update({f"conv_{i}": tuple(t.shape) for i, t in enumerate(zero.conv_caches)})
        c = self.context.chunk
        return StepLayout(feature_frames=4 * c + 7, feature_hop=4 * c, step_frames=c, delay=0, states=states)

    def init_state(self, batch: int, device: torch.device | str = "cpu") -> tuple[Tensor, ...]:
        """``(position, attn_0.., conv_0..)`` of ``batch`` streams that have seen nothing."""
        zero = self.encoder.init_state(batch, self.context, device)
        return torch.zeros(batch, dtype=torch.long, device=device), *zero.attn_caches, *zero.conv_caches

    def forward(self, feats: Tensor, end: Tensor, position: Tensor, *caches: Tensor) -> tuple[Tensor, ...]:
        enc, stacks = self.encoder, len(self.encoder.stacks)
        frames = enc.embed(feats)  # (B, 2C, D0)
        done = 2 * position  # 50 Hz frames before this chunk
        end_50hz = (end - 7).clamp(min=0) // 2  # (B,) the stream's 50 Hz frames (huge until known)
        valid = (done.unsqueeze(1) + torch.arange(frames.shape[1], device=feats.device)) < end_50hz.unsqueeze(1)
        y, attn, conv = enc.encode_chunks(frames, valid, done, self.context, caches[:stacks], caches[stacks:])
        return y, position + self.context.chunk, *attn, *conv


def _pad_stack(rows: list[Tensor], dim: int, like: Tensor) -> Tensor:
    """Rows of different lengths -> (B, longest, dim), zero-padded."""
    longest = max(r.shape[0] for r in rows)
    if longest == 0:
        return like.new_zeros(len(rows), 0, dim)
    return torch.stack([F.pad(r, (0, 0, 0, longest - r.shape[0])) for r in rows])
