"""CTC greedy search: the best label of every frame, repeats merged and blanks removed.

Shape legend: T' encoder frames, V vocabulary, D model dim.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from echostream.heads.ctc import collapse_ctc
from echostream.heads.search.base import Hypothesis, best_path_frames


@dataclass(frozen=True, kw_only=True)
class CTCGreedySearch:
    """The best path; its score is the path's log-probability. Returns one hypothesis."""

    blank_id: int = 0

    def __call__(self, log_probs: Tensor, encoder_out: Tensor) -> list[Hypothesis]:
        """log_probs: (T', V); encoder_out (T', D) is not used."""
        best, labels = log_probs.max(dim=-1)  # (T',), (T',)
        path = labels.tolist()
        alignment = collapse_ctc(path, self.blank_id)
        firsts, lasts = best_path_frames(path, self.blank_id)
        score = float(best.double().sum())
        return [
            Hypothesis(
                tokens=tuple(alignment.tokens),
                score=score,
                token_frames=firsts,
                token_end_frames=lasts,
                ctc_score=score,
            )
        ]
