"""The ASR model: an encoder, a CTC head, an optional attention decoder, and their losses.

Training and inference run the same encoder computation: :meth:`ASRModel.loss` calls
``encoder.forward(x, x_lens, context)``, the masked batch that batch and long-form inference use,
for the ``ChunkContext`` a :class:`ContextSampler` draws for the batch (limited-context training).

Shape legend: B batch, T feature frames, F bins, T' encoder frames, D model dim, V vocabulary,
S target tokens.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from torch import Tensor, nn

from echostream.encoders.base import ChunkContext
from echostream.encoders.chunkformer import ChunkFormerConfig, ChunkFormerEncoder
from echostream.heads.attention_decoder import AttentionDecoder, AttentionDecoderConfig
from echostream.heads.ctc import CTCHead
from echostream.heads.losses import (
    LossConfig,
    LossOutput,
    combine_losses,
    ctc_loss,
    label_smoothing_loss,
)
from echostream.nn.subsampling import subsampled_length


@dataclass(frozen=True, kw_only=True)
class ASRModelConfig:
    """An encoder configuration, the output vocabulary, the attention decoder (if any) and the
    loss weights. ``<sos>``/``<eos>`` is the last vocabulary id."""

    encoder: ChunkFormerConfig
    vocab_size: int
    blank_id: int = 0
    decoder: AttentionDecoderConfig | None = None
    loss: LossConfig = field(default_factory=LossConfig)

    def __post_init__(self) -> None:
        if self.vocab_size < 2:
            raise ValueError(f"vocab_size must be at least 2, got {self.vocab_size}")
        if not 0 <= self.blank_id < self.vocab_size:
            raise ValueError(f"blank_id {self.blank_id} is outside the vocabulary of {self.vocab_size}")
        if self.decoder is not None:
            if self.blank_id == self.vocab_size - 1:
                raise ValueError(f"blank_id {self.blank_id} is also <sos/eos> (the last id)")
            if self.encoder.output_size % self.decoder.attention_heads:
                raise ValueError(
                    f"decoder_conf.attention_heads {self.decoder.attention_heads} does not divide "
                    f"encoder_conf.output_size {self.encoder.output_size}"
                )
            if self.loss.reverse_weight > 0.0 and not self.decoder.bidirectional:
                raise ValueError(
                    f"model_conf.reverse_weight is {self.loss.reverse_weight} but the decoder has "
                    "no right-to-left direction"
                )


class ASRModel(nn.Module):
    """Encoder + CTC head (+ attention decoder). ``forward`` gives CTC log-probabilities."""

    def __init__(self, cfg: ASRModelConfig, encoder: ChunkFormerEncoder) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = encoder
        self.ctc = CTCHead(cfg.encoder.output_size, cfg.vocab_size, cfg.blank_id)
        self.decoder = (
            AttentionDecoder(cfg.decoder, cfg.vocab_size, cfg.encoder.output_size)
            if cfg.decoder is not None
            else None
        )

    def forward(self, x: Tensor, x_lens: Tensor, context: ChunkContext) -> tuple[Tensor, Tensor]:
        """x: (B, T, F), x_lens: (B,) -> log-probs (B, T', V), lengths (B,)."""
        y, y_lens = self.encoder(x, x_lens, context)
        return self.ctc(y), y_lens

    def loss(
        self, x: Tensor, x_lens: Tensor, ys: Tensor, ys_lens: Tensor, context: ChunkContext
    ) -> LossOutput:
        """The hybrid CTC / attention training loss (see :mod:`echostream.heads.losses`).

        Args:
            x: (B, T, F) features, x_lens: (B,).
            ys: (B, S) target token ids padded with -1, ys_lens: (B,).
            context: the chunk/context to encode with (e.g. drawn by a ContextSampler).
        """
        cfg = self.cfg.loss
        y, y_lens = self.encoder(x, x_lens, context)  # (B, T', D), (B,)
        ctc = None
        if cfg.ctc_weight > 0.0:
            ctc = ctc_loss(self.ctc(y), y_lens, ys, ys_lens, self.cfg.blank_id)
        l2r = r2l = None
        if cfg.ctc_weight < 1.0:
            if self.decoder is None:
                raise ValueError(
                    f"model_conf.ctc_weight is {cfg.ctc_weight} but the model has no attention decoder"
                )
            with_r2l = cfg.reverse_weight > 0.0
            logits, targets, r_logits, r_targets = self.decoder(y, y_lens, ys, ys_lens, with_r2l)
            l2r = label_smoothing_loss(logits, targets, cfg.lsm_weight, cfg.length_normalized_loss)
            if r_logits is not None and r_targets is not None:
                r2l = label_smoothing_loss(r_logits, r_targets, cfg.lsm_weight, cfg.length_normalized_loss)
        return combine_losses(cfg, ctc, l2r, r2l)


def encoder_lengths(x_lens: Tensor) -> list[int]:
    """Encoder frames each utterance of ``x_lens`` (B,) feature frames gives."""
    return [subsampled_length(int(n)) for n in x_lens.tolist()]


def full_context(max_frames: int) -> ChunkContext:
    """A context under which every frame attends to its whole utterance.

    One chunk spans the longest utterance (``max_frames`` encoder frames), so each utterance is a
    single chunk; ``left = right = 0`` since there is nothing outside it. The masked batch then
    masks only the frames past each utterance's end: unrestricted attention, and a convolution
    that sees the whole utterance (zeros outside it), as in full-context training.
    """
    return ChunkContext(chunk=max(1, max_frames), left=0, right=0)


@dataclass(frozen=True, kw_only=True)
class ContextSampler:
    """The (chunk, left, right) sets limited-context training draws from, one draw per batch.

    Sizes are in encoder frames. A chunk size of ``None`` means full context (see
    :func:`full_context`); left and right sizes are then not drawn. With ``right_below_chunk``
    only right sizes smaller than the chunk are drawn (ChunkFormer's ``streaming`` training).
    """

    chunk_sizes: tuple[int | None, ...] = (None, 16, 32, 64)
    left_sizes: tuple[int, ...] = (16, 32, 64, 128)
    right_sizes: tuple[int, ...] = (0, 8, 16, 32)
    right_below_chunk: bool = False

    def __post_init__(self) -> None:
        for name in ("chunk_sizes", "left_sizes", "right_sizes"):
            if not getattr(self, name):
                raise ValueError(f"ContextSampler.{name} is empty")
        if any(c is not None and c <= 0 for c in self.chunk_sizes):
            raise ValueError(f"ContextSampler.chunk_sizes must be positive or None, got {self.chunk_sizes}")
        if any(s < 0 for s in self.left_sizes + self.right_sizes):
            raise ValueError("ContextSampler left_sizes and right_sizes must be >= 0")
        if self.right_below_chunk:
            for chunk in self.chunk_sizes:
                if chunk is not None and not any(r < chunk for r in self.right_sizes):
                    raise ValueError(f"ContextSampler: no right size is below chunk size {chunk}")

    def draw(self, rng: random.Random, max_frames: int) -> ChunkContext:
        """The context of one batch whose longest utterance has ``max_frames`` encoder frames."""
        chunk = rng.choice(self.chunk_sizes)
        if chunk is None:
            return full_context(max_frames)
        left = rng.choice(self.left_sizes)
        rights = [r for r in self.right_sizes if r < chunk] if self.right_below_chunk else self.right_sizes
        return ChunkContext(chunk=chunk, left=left, right=rng.choice(rights))
