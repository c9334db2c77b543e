"""The ASR model: CMVN, an encoder, a CTC head, an optional attention decoder, and their losses.

Training and inference run the same encoder computation: :meth:`ASRModel.loss` calls
``encoder.forward(x, x_lens, context)``, the masked computation that batch and long-form inference
continue with ``forward_chunk``, for the ``ChunkContext`` a context sampler draws for the batch
(limited-context training). CMVN and the heads belong to the model; the encoder is any
registered one (``models/build.py``) and is never named here.

Shape legend: B batch, T feature frames, F bins, T' encoder frames, D model dim, V vocabulary,
S target tokens.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import Tensor, nn

from echostream.encoders.base import ChunkContext, EncoderConfig, EncoderState
from echostream.heads.attention_decoder import AttentionDecoder, AttentionDecoderConfig
from echostream.heads.ctc import CTCHead
from echostream.heads.losses import (
    LossConfig,
    LossOutput,
    combine_losses,
    ctc_loss,
    label_smoothing_loss,
)
from echostream.nn.normalization import GlobalCMVN


@dataclass(frozen=True, kw_only=True)
class ASRModelConfig:
    """An encoder configuration, the output vocabulary, the attention decoder (if any) and the
    loss weights. ``<sos>``/``<eos>`` is the last vocabulary id."""

    encoder: EncoderConfig
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
            if self.encoder_dim % self.decoder.attention_heads:
                raise ValueError(
                    f"decoder_conf.attention_heads {self.decoder.attention_heads} does not divide "
                    f"the encoder's output size {self.encoder_dim}"
                )
            if self.loss.reverse_weight > 0.0 and not self.decoder.bidirectional:
                raise ValueError(
                    f"model_conf.reverse_weight is {self.loss.reverse_weight} but the decoder has "
                    "no right-to-left direction"
                )

    @property
    def encoder_dim(self) -> int:
        """The encoder's output size D."""
        return int(self.encoder.output_size)  # type: ignore[attr-defined]

    @property
    def input_dim(self) -> int:
        """Feature bins F the encoder takes."""
        return int(self.encoder.input_dim)  # type: ignore[attr-defined]


class ASRModel(nn.Module):
    """CMVN + encoder + CTC head (+ attention decoder). ``forward`` gives CTC log-probabilities.

    Drivers (long-form, Recognizer, server) use :meth:`init_state` and :meth:`forward_chunk`;
    they never touch the encoder's internals.
    """

    def __init__(self, cfg: ASRModelConfig, encoder: nn.Module) -> None:
        super().__init__()
        self.cfg = cfg
        self.cmvn = GlobalCMVN(cfg.input_dim)
        self.encoder: Any = encoder  # a StreamingEncoder (models/build.py)
        self.ctc = CTCHead(cfg.encoder_dim, cfg.vocab_size, cfg.blank_id)
        self.decoder = (
            AttentionDecoder(cfg.decoder, cfg.vocab_size, cfg.encoder_dim)
            if cfg.decoder is not None
            else None
        )

    def encode(self, x: Tensor, x_lens: Tensor, context: ChunkContext) -> tuple[Tensor, Tensor]:
        """Raw features (B, T, F), (B,) -> encoder output (B, T', D), (B,)."""
        self.encoder.check_context(context)
        return self.encoder(self.cmvn(x), x_lens, context)  # type: ignore[no-any-return]

    def forward(self, x: Tensor, x_lens: Tensor, context: ChunkContext) -> tuple[Tensor, Tensor]:
        """x: (B, T, F), x_lens: (B,) -> log-probs (B, T', V), lengths (B,)."""
        y, y_lens = self.encode(x, x_lens, context)
        return self.ctc(y), y_lens

    def init_state(self, batch: int, context: ChunkContext, device: Any = "cpu") -> EncoderState:
        """The encoder state of ``batch`` new streams (``context`` is checked here)."""
        self.encoder.check_context(context)
        return self.encoder.init_state(batch, context, device)  # type: ignore[no-any-return]

    def forward_chunk(
        self, x: Tensor, x_lens: Tensor, state: EncoderState, final: Tensor
    ) -> tuple[Tensor, Tensor, EncoderState]:
        """More raw features of each stream (see ``StreamingEncoder.forward_chunk``)."""
        return self.encoder.forward_chunk(self.cmvn(x), x_lens, state, final)  # type: ignore[no-any-return]

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
        y, y_lens = self.encode(x, x_lens, context)  # (B, T', D), (B,)
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
