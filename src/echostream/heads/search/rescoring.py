"""Attention rescoring: re-rank the CTC prefix beam search n-best with the attention decoder.

For each candidate ``y`` the left-to-right decoder gives ``log P(y, <eos>)`` and, when
``reverse_weight > 0``, the right-to-left decoder the same for the reversed sequence. The
candidate with the best

    (1 - reverse_weight) * l2r + reverse_weight * r2l + ctc_weight * ctc

wins, ``ctc`` being the prefix beam search score (all CTC paths of ``y``).

Shape legend: T' encoder frames, V vocabulary, D model dim, N candidates.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Protocol

import torch
from torch import Tensor

from echostream.heads.attention_decoder import DecoderScores
from echostream.heads.search.base import Hypothesis
from echostream.heads.search.prefix_beam import CTCPrefixBeamSearch


class HypothesisScorer(Protocol):
    """Scores whole hypotheses given one utterance's encoder frames (an AttentionDecoder)."""

    def score(self, hyps: list[list[int]], memory: Tensor, with_r2l: bool) -> DecoderScores: ...


@dataclass(frozen=True, kw_only=True)
class RescoringWeights:
    """How decoder and CTC scores combine (see the module docstring)."""

    ctc_weight: float = 0.3
    reverse_weight: float = 0.0

    def __post_init__(self) -> None:
        if self.ctc_weight < 0.0:
            raise ValueError(f"ctc_weight must be >= 0, got {self.ctc_weight}")
        if not 0.0 <= self.reverse_weight <= 1.0:
            raise ValueError(f"reverse_weight must be in [0, 1], got {self.reverse_weight}")

    def combine(self, l2r: float, r2l: float | None, ctc: float) -> tuple[float, float]:
        """(attention score, total score) of one candidate.

        >>> RescoringWeights(ctc_weight=0.5, reverse_weight=0.25).combine(-4.0, -8.0, -2.0)
        (-5.0, -6.0)
        """
        attention = l2r
        if self.reverse_weight > 0.0:
            if r2l is None:
                raise ValueError("reverse_weight > 0 needs right-to-left decoder scores")
            attention = (1.0 - self.reverse_weight) * l2r + self.reverse_weight * r2l
        return attention, attention + self.ctc_weight * ctc


@dataclass(frozen=True)
class AttentionRescoring:
    """CTC prefix beam search, then the decoder re-ranks the n-best (best first)."""

    scorer: HypothesisScorer
    weights: RescoringWeights
    beam_size: int = 10
    blank_id: int = 0

    def __call__(self, log_probs: Tensor, encoder_out: Tensor) -> list[Hypothesis]:
        """log_probs: (T', V), encoder_out: (T', D) the frames the decoder attends to."""
        nbest = CTCPrefixBeamSearch(beam_size=self.beam_size, blank_id=self.blank_id)(log_probs, encoder_out)
        with_r2l = self.weights.reverse_weight > 0.0
        with torch.no_grad():
            scores = self.scorer.score([list(h.tokens) for h in nbest], encoder_out, with_r2l)
        l2r = scores.l2r.tolist()
        r2l = scores.r2l.tolist() if scores.r2l is not None else [None] * len(nbest)
        rescored = []
        for hyp, left, right in zip(nbest, l2r, r2l):
            attention, total = self.weights.combine(left, right, hyp.ctc_score)
            rescored.append(replace(hyp, score=total, attention_score=attention))
        return sorted(rescored, key=lambda h: h.score, reverse=True)
