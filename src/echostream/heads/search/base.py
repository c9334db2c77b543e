"""What every decoding strategy returns, and the interface they share.

A strategy decodes one utterance (or one piece of a long one) at a time: CTC log-probabilities and
the encoder frames they came from in, an n-best list (best first) out.

Shape legend: T' encoder frames, V vocabulary, D model dim.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

from torch import Tensor


@dataclass(frozen=True)
class Hypothesis:
    """A decoded token sequence.

    ``score`` is what the strategy ranks by: the CTC log-probability of the prefix (greedy: of
    its best path; prefix beam: summed over all paths), or the combined rescoring score.
    ``token_frames`` / ``token_end_frames`` are the first / last frame (relative to the decoded
    frames' start) of each token on the best CTC path of the sequence, as for greedy decoding.
    """

    tokens: tuple[int, ...]
    score: float
    token_frames: tuple[int, ...]
    token_end_frames: tuple[int, ...]
    ctc_score: float = -math.inf  # CTC log-probability (all paths for prefix beam search)
    attention_score: float | None = None  # combined decoder score when rescored


class SearchStrategy(Protocol):
    """Decode one utterance: log_probs (T', V), encoder_out (T', D) -> n-best, best first."""

    def __call__(self, log_probs: Tensor, encoder_out: Tensor) -> list[Hypothesis]: ...


def best_path_frames(labels: list[int], blank_id: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """First and last frame of each token of a best path (repeats merged, blanks dropped).

    >>> best_path_frames([0, 3, 3, 0, 3, 5, 5, 0], 0)
    ((1, 4, 5), (2, 4, 6))
    """
    firsts: list[int] = []
    lasts: list[int] = []
    previous = blank_id
    for t, label in enumerate(labels):
        if label != blank_id:
            if label != previous:
                firsts.append(t)
                lasts.append(t)
            else:
                lasts[-1] = t
        previous = label
    return tuple(firsts), tuple(lasts)


def log_add(a: float, b: float) -> float:
    """``log(exp(a) + exp(b))`` without overflow; ``-inf`` is the log of zero.

    >>> round(log_add(math.log(0.25), math.log(0.5)), 6) == round(math.log(0.75), 6)
    True
    """
    if a == -math.inf:
        return b
    if b == -math.inf:
        return a
    if a < b:
        a, b = b, a
    return a + math.log1p(math.exp(b - a))
