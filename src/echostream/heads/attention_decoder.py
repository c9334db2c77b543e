"""The attention decoder: Transformer decoders over the encoder output, left-to-right and
optionally right-to-left (WeNet's ``transformer`` and ``bitransformer`` decoders).

Each direction embeds tokens (``embedding * sqrt(D)`` plus absolute sinusoidal positions), runs
pre-norm layers of causal self-attention, cross-attention over the encoder frames and a
feed-forward block, then a final norm and a projection to the vocabulary. The right-to-left
decoder reads the token sequence reversed. ``<sos>`` and ``<eos>`` share the last vocabulary id.

Shape legend:
    B sequences   U tokens (``<sos>`` included)   T' encoder frames   D model dim
    H heads   Dh = D / H   V vocabulary   N hypotheses
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from echostream.masks import cross_attn_mask, decoder_self_attn_mask
from echostream.nn.feedforward import FeedForward

IGNORE_ID = -1  # padding of target token sequences


@dataclass(frozen=True, kw_only=True)
class AttentionDecoderConfig:
    """Shape of an attention decoder (names follow the released ``decoder_conf``).

    ``bidirectional`` adds a right-to-left decoder of ``r_num_blocks`` layers (released
    ``decoder: bitransformer``); without it there is only the left-to-right one
    (``decoder: transformer``) and ``r_num_blocks`` must be 0.
    """

    bidirectional: bool = True
    attention_heads: int = 4
    linear_units: int = 2048
    num_blocks: int = 6
    r_num_blocks: int = 0
    activation_type: str = "relu"
    dropout_rate: float = 0.1
    positional_dropout_rate: float = 0.1
    self_attention_dropout_rate: float = 0.0
    src_attention_dropout_rate: float = 0.0

    def __post_init__(self) -> None:
        for name in ("attention_heads", "linear_units"):
            if getattr(self, name) <= 0:
                raise ValueError(f"decoder_conf.{name} must be positive, got {getattr(self, name)}")
        for name in ("num_blocks", "r_num_blocks"):
            if getattr(self, name) < 0:
                raise ValueError(f"decoder_conf.{name} must be >= 0, got {getattr(self, name)}")
        if not self.bidirectional and self.r_num_blocks:
            raise ValueError(
                f"decoder_conf.r_num_blocks is {self.r_num_blocks} but the decoder has no "
                "right-to-left direction (bidirectional is false)"
            )
        if self.activation_type not in ("swish", "relu", "gelu"):
            raise ValueError(
                f"decoder_conf.activation_type {self.activation_type!r} is not one of swish, relu, gelu"
            )
        for name in (
            "dropout_rate", "positional_dropout_rate", "self_attention_dropout_rate",
            "src_attention_dropout_rate",
        ):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"decoder_conf.{name} must be in [0, 1), got {getattr(self, name)}")


def sinusoidal_positions(length: int, d_model: int) -> Tensor:
    """Absolute sinusoidal encodings of positions ``0 .. length-1`` (``sin`` even, ``cos`` odd).

    Returns:
        table: (length, D)

    >>> sinusoidal_positions(2, 4)[:, :2]
    tensor([[0.0000, 1.0000],
            [0.8415, 0.5403]])
    """
    position = torch.arange(length, dtype=torch.float32).unsqueeze(1)  # (U, 1)
    inv_freq = torch.exp(
        torch.arange(0, d_model, 2, dtype=torch.float32) * -(math.log(10000.0) / d_model)
    )  # (D/2,)
    table = torch.zeros(length, d_model)
    table[:, 0::2] = torch.sin(position * inv_freq)
    table[:, 1::2] = torch.cos(position * inv_freq)
    return table  # (U, D)


class MultiHeadAttention(nn.Module):
    """Scaled dot-product attention of queries over keys/values with a boolean mask.

    query: (B, Uq, D), memory: (B, Uk, D), attn_mask: (B, Uq or 1, Uk) True = attend
    -> (B, Uq, D). A query with no key to attend gets zeros (not NaN).
    """

    def __init__(self, d_model: int, num_heads: int, dropout: float) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = d_model // num_heads
        self.linear_q = nn.Linear(d_model, d_model)
        self.linear_k = nn.Linear(d_model, d_model)
        self.linear_v = nn.Linear(d_model, d_model)
        self.linear_out = nn.Linear(d_model, d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, query: Tensor, memory: Tensor, attn_mask: Tensor) -> Tensor:
        b, uq, d = query.shape
        uk = memory.shape[1]
        h, dh = self.num_heads, self.head_dim
        q = self.linear_q(query).view(b, uq, h, dh).transpose(1, 2)  # (B, H, Uq, Dh)
        k = self.linear_k(memory).view(b, uk, h, dh).transpose(1, 2)  # (B, H, Uk, Dh)
        v = self.linear_v(memory).view(b, uk, h, dh).transpose(1, 2)  # (B, H, Uk, Dh)
        scores = q @ k.transpose(-2, -1) / math.sqrt(dh)  # (B, H, Uq, Uk)
        blocked = ~attn_mask.unsqueeze(1)  # (B, 1, Uq or 1, Uk)
        scores = scores.masked_fill(blocked, float("-inf"))
        weights = torch.softmax(scores.float(), dim=-1).type_as(v).masked_fill(blocked, 0.0)
        out = self.dropout(weights) @ v  # (B, H, Uq, Dh)
        out = out.transpose(1, 2).reshape(b, uq, d)  # (B, Uq, D)
        return self.linear_out(out)


class DecoderLayer(nn.Module):
    """Pre-norm causal self-attention, cross-attention over the encoder, feed-forward."""

    def __init__(self, d_model: int, cfg: AttentionDecoderConfig) -> None:
        super().__init__()
        self.self_attn = MultiHeadAttention(d_model, cfg.attention_heads, cfg.self_attention_dropout_rate)
        self.src_attn = MultiHeadAttention(d_model, cfg.attention_heads, cfg.src_attention_dropout_rate)
        self.feed_forward = FeedForward(d_model, cfg.linear_units, cfg.dropout_rate, cfg.activation_type)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.norm3 = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(cfg.dropout_rate)

    def forward(self, x: Tensor, self_mask: Tensor, memory: Tensor, memory_mask: Tensor) -> Tensor:
        """x: (B, U, D), self_mask: (B, U, U), memory: (B, T', D), memory_mask: (B, 1, T')
        -> (B, U, D)."""
        h = self.norm1(x)
        x = x + self.dropout(self.self_attn(h, h, self_mask))
        x = x + self.dropout(self.src_attn(self.norm2(x), memory, memory_mask))
        return x + self.dropout(self.feed_forward(self.norm3(x)))


class TransformerDecoder(nn.Module):
    """One direction: token embedding + positions, N layers, final norm, output projection.

    tokens: (B, U) ids starting with ``<sos>`` (padding may hold any valid id), token_lens: (B,),
    memory: (B, T', D), memory_lens: (B,) -> logits (B, U, V).
    """

    def __init__(self, vocab_size: int, d_model: int, num_blocks: int, cfg: AttentionDecoderConfig) -> None:
        super().__init__()
        self.d_model = d_model
        self.embed = nn.Embedding(vocab_size, d_model)
        self.embed_dropout = nn.Dropout(cfg.positional_dropout_rate)
        self.layers = nn.ModuleList([DecoderLayer(d_model, cfg) for _ in range(num_blocks)])
        self.after_norm = nn.LayerNorm(d_model)
        self.output_layer = nn.Linear(d_model, vocab_size)

    def forward(self, tokens: Tensor, token_lens: Tensor, memory: Tensor, memory_lens: Tensor) -> Tensor:
        u = tokens.shape[1]
        positions = sinusoidal_positions(u, self.d_model).to(device=memory.device, dtype=memory.dtype)
        x = self.embed(tokens) * math.sqrt(self.d_model) + positions  # (B, U, D)
        x = self.embed_dropout(x)
        self_mask = decoder_self_attn_mask(token_lens, u)  # (B, U, U)
        memory_mask = cross_attn_mask(memory_lens, memory.shape[1])  # (B, 1, T')
        for layer in self.layers:
            x = layer(x, self_mask, memory, memory_mask)
        return self.output_layer(self.after_norm(x))  # (B, U, V)


def add_sos_eos(ys: Tensor, ys_lens: Tensor, sos: int, eos: int) -> tuple[Tensor, Tensor]:
    """Decoder inputs and targets of padded token sequences.

    Args:
        ys: (B, S) token ids padded with ``IGNORE_ID``, ys_lens: (B,).
    Returns:
        ys_in: (B, S + 1) ``<sos> y_1 .. y_n`` then ``<eos>`` padding (a valid id; masked anyway),
        ys_out: (B, S + 1) ``y_1 .. y_n <eos>`` then ``IGNORE_ID`` padding.

    >>> ys_in, ys_out = add_sos_eos(torch.tensor([[3, 4], [5, -1]]), torch.tensor([2, 1]), 9, 9)
    >>> ys_in.tolist(), ys_out.tolist()
    ([[9, 3, 4], [9, 5, 9]], [[3, 4, 9], [5, 9, -1]])
    """
    b, s = ys.shape
    position = torch.arange(s + 1, device=ys.device).unsqueeze(0)  # (1, S + 1)
    lens = ys_lens.unsqueeze(1)  # (B, 1)
    body = torch.cat([ys, ys.new_full((b, 1), IGNORE_ID)], dim=1)  # (B, S + 1)
    ys_out = torch.where(position < lens, body, torch.where(position == lens, eos, IGNORE_ID))
    shifted = torch.cat([ys.new_full((b, 1), sos), ys], dim=1)  # (B, S + 1)
    ys_in = torch.where(position <= lens, shifted, eos)
    return ys_in, ys_out


def reverse_tokens(ys: Tensor, ys_lens: Tensor) -> Tensor:
    """Each sequence's valid tokens reversed, padding (``IGNORE_ID``) left in place.

    ys: (B, S), ys_lens: (B,) -> (B, S)

    >>> reverse_tokens(torch.tensor([[1, 2, 3], [4, 5, -1]]), torch.tensor([3, 2])).tolist()
    [[3, 2, 1], [5, 4, -1]]
    """
    position = torch.arange(ys.shape[1], device=ys.device).unsqueeze(0)  # (1, S)
    lens = ys_lens.unsqueeze(1)  # (B, 1)
    source = (lens - 1 - position).clamp(min=0)  # (B, S)
    return torch.where(position < lens, ys.gather(1, source), IGNORE_ID)


@dataclass(frozen=True)
class DecoderScores:
    """Log-probabilities of whole hypotheses (each followed by ``<eos>``) under each direction."""

    l2r: Tensor  # (N,)
    r2l: Tensor | None  # (N,), None without a right-to-left decoder


class AttentionDecoder(nn.Module):
    """Left-to-right decoder ``l2r`` and, when bidirectional, right-to-left decoder ``r2l``."""

    def __init__(self, cfg: AttentionDecoderConfig, vocab_size: int, d_model: int) -> None:
        super().__init__()
        if d_model % cfg.attention_heads:
            raise ValueError(
                f"decoder_conf.attention_heads {cfg.attention_heads} does not divide the encoder "
                f"output size {d_model}"
            )
        self.cfg = cfg
        self.sos = self.eos = vocab_size - 1
        self.l2r = TransformerDecoder(vocab_size, d_model, cfg.num_blocks, cfg)
        self.r2l = (
            TransformerDecoder(vocab_size, d_model, cfg.r_num_blocks, cfg) if cfg.bidirectional else None
        )

    def forward(
        self, memory: Tensor, memory_lens: Tensor, ys: Tensor, ys_lens: Tensor, with_r2l: bool
    ) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None]:
        """Teacher-forced logits of both directions.

        Args:
            memory: (B, T', D) encoder output, memory_lens: (B,).
            ys: (B, S) target tokens padded with ``IGNORE_ID``, ys_lens: (B,).
            with_r2l: also run the right-to-left decoder (it must exist).
        Returns:
            l2r logits (B, S + 1, V), l2r targets (B, S + 1) (``IGNORE_ID`` padded), and the same
            for the reversed sequences (None unless ``with_r2l``).
        """
        ys_in, ys_out = add_sos_eos(ys, ys_lens, self.sos, self.eos)
        in_lens = ys_lens + 1
        logits = self.l2r(ys_in, in_lens, memory, memory_lens)  # (B, S + 1, V)
        if not with_r2l:
            return logits, ys_out, None, None
        if self.r2l is None:
            raise ValueError("this decoder has no right-to-left direction")
        r_in, r_out = add_sos_eos(reverse_tokens(ys, ys_lens), ys_lens, self.sos, self.eos)
        r_logits = self.r2l(r_in, in_lens, memory, memory_lens)  # (B, S + 1, V)
        return logits, ys_out, r_logits, r_out

    def score(self, hyps: list[list[int]], memory: Tensor, with_r2l: bool) -> DecoderScores:
        """Log-probability of each hypothesis (then ``<eos>``) given one utterance's frames.

        Args:
            hyps: N token sequences (no ``<sos>``/``<eos>``; may be empty).
            memory: (T', D) encoder output of the utterance (or piece).
            with_r2l: also score with the right-to-left decoder.
        """
        n = len(hyps)
        device = memory.device
        width = max((len(h) for h in hyps), default=0)
        ys = torch.full((n, width), IGNORE_ID, dtype=torch.long, device=device)
        for i, h in enumerate(hyps):
            ys[i, : len(h)] = torch.tensor(h, dtype=torch.long, device=device)
        ys_lens = torch.tensor([len(h) for h in hyps], dtype=torch.long, device=device)
        memory_b = memory.unsqueeze(0).expand(n, -1, -1)  # (N, T', D)
        memory_lens = torch.full((n,), memory.shape[0], dtype=torch.long, device=device)
        logits, out, r_logits, r_out = self(memory_b, memory_lens, ys, ys_lens, with_r2l)
        r2l = None if r_logits is None or r_out is None else _sequence_log_prob(r_logits, r_out)
        return DecoderScores(l2r=_sequence_log_prob(logits, out), r2l=r2l)


def _sequence_log_prob(logits: Tensor, targets: Tensor) -> Tensor:
    """Sum over valid positions of the target's log-probability: (N, U, V), (N, U) -> (N,)."""
    log_probs = torch.log_softmax(logits.float(), dim=-1)  # (N, U, V)
    valid = targets != IGNORE_ID  # (N, U)
    picked = log_probs.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)  # (N, U)
    return (picked * valid).sum(dim=-1)
