"""The ASR model: an encoder and a CTC head.

Shape legend: B batch, T feature frames, F bins, T' encoder frames, D model dim, V vocabulary.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from echostream.encoders.base import ChunkContext
from echostream.encoders.chunkformer import ChunkFormerConfig, ChunkFormerEncoder
from echostream.heads.ctc import CTCHead


@dataclass(frozen=True, kw_only=True)
class ASRModelConfig:
    """An encoder configuration plus the output vocabulary size."""

    encoder: ChunkFormerConfig
    vocab_size: int
    blank_id: int = 0

    def __post_init__(self) -> None:
        if self.vocab_size < 2:
            raise ValueError(f"vocab_size must be at least 2, got {self.vocab_size}")
        if not 0 <= self.blank_id < self.vocab_size:
            raise ValueError(f"blank_id {self.blank_id} is outside the vocabulary of {self.vocab_size}")


class ASRModel(nn.Module):
    """Encoder + CTC head. ``forward`` gives CTC log-probabilities of whole utterances."""

    def __init__(self, cfg: ASRModelConfig, encoder: ChunkFormerEncoder) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = encoder
        self.ctc = CTCHead(cfg.encoder.output_size, cfg.vocab_size, cfg.blank_id)

    def forward(self, x: Tensor, x_lens: Tensor, context: ChunkContext) -> tuple[Tensor, Tensor]:
        """x: (B, T, F), x_lens: (B,) -> log-probs (B, T', V), lengths (B,)."""
        y, y_lens = self.encoder(x, x_lens, context)
        return self.ctc(y), y_lens
