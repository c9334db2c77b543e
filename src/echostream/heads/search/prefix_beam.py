"""CTC prefix beam search: the most probable token sequences, summing over all their CTC paths.

Each kept prefix carries the probability of all paths that produce it, split by whether the path
ends in blank or in its last token (a repeated token needs a blank in between), and the best
single path of each kind, which gives the token start frames.

Shape legend: T' encoder frames, V vocabulary, D model dim.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from torch import Tensor

from echostream.heads.search.base import Hypothesis, log_add

_NEG_INF = -math.inf


Spans = tuple[tuple[int, int], ...]  # (first, last) frame of each token along a path


@dataclass
class _PrefixScore:
    """Scores of one prefix after some frames (built up within one frame step)."""

    blank: float = _NEG_INF  # log P(all paths giving the prefix and ending in blank)
    token: float = _NEG_INF  # log P(all paths giving the prefix and ending in its last token)
    best_blank: float = _NEG_INF  # log P(best single such path ending in blank)
    best_token: float = _NEG_INF
    spans_blank: Spans = ()  # token frames along that best path
    spans_token: Spans = ()

    @property
    def score(self) -> float:
        return log_add(self.blank, self.token)

    def best_path(self) -> tuple[float, Spans]:
        if self.best_blank > self.best_token:
            return self.best_blank, self.spans_blank
        return self.best_token, self.spans_token


@dataclass(frozen=True, kw_only=True)
class CTCPrefixBeamSearch:
    """Keep the ``beam_size`` best prefixes after every frame, extending each with the
    ``beam_size`` most probable labels of the frame. Returns up to ``beam_size`` hypotheses."""

    beam_size: int = 10
    blank_id: int = 0

    def __post_init__(self) -> None:
        if self.beam_size < 1:
            raise ValueError(f"beam_size must be at least 1, got {self.beam_size}")

    def __call__(self, log_probs: Tensor, encoder_out: Tensor) -> list[Hypothesis]:
        """log_probs: (T', V); encoder_out (T', D) is not used."""
        k = min(self.beam_size, log_probs.shape[-1])
        top = log_probs.float().topk(k, dim=-1)  # (T', k)
        values: list[list[float]] = top.values.tolist()
        labels: list[list[int]] = top.indices.tolist()
        blank = self.blank_id
        beam: list[tuple[tuple[int, ...], _PrefixScore]] = [((), _PrefixScore(blank=0.0, best_blank=0.0))]
        for t, (frame_values, frame_labels) in enumerate(zip(values, labels)):
            nxt: dict[tuple[int, ...], _PrefixScore] = {}
            for prefix, old in beam:
                old_score = old.score
                old_best, old_spans = old.best_path()
                for u, lp in zip(frame_labels, frame_values):
                    if u == blank:  # the prefix stays, now ending in blank
                        new = nxt.setdefault(prefix, _PrefixScore())
                        new.blank = log_add(new.blank, old_score + lp)
                        if old_best + lp > new.best_blank:
                            new.best_blank, new.spans_blank = old_best + lp, old_spans
                    elif prefix and u == prefix[-1]:
                        # "a a" -> "a" (the token goes on) ...
                        new = nxt.setdefault(prefix, _PrefixScore())
                        new.token = log_add(new.token, old.token + lp)
                        if old.best_token + lp > new.best_token:
                            first = old.spans_token[-1][0]
                            new.best_token = old.best_token + lp
                            new.spans_token = old.spans_token[:-1] + ((first, t),)
                        # ... and "a - a" -> "a a" (a new token after a blank)
                        new = nxt.setdefault(prefix + (u,), _PrefixScore())
                        new.token = log_add(new.token, old.blank + lp)
                        if old.best_blank + lp > new.best_token:
                            new.best_token = old.best_blank + lp
                            new.spans_token = old.spans_blank + ((t, t),)
                    else:
                        new = nxt.setdefault(prefix + (u,), _PrefixScore())
                        new.token = log_add(new.token, old_score + lp)
                        if old_best + lp > new.best_token:
                            new.best_token, new.spans_token = old_best + lp, old_spans + ((t, t),)
            beam = sorted(nxt.items(), key=lambda item: item[1].score, reverse=True)[: self.beam_size]
        hyps = []
        for prefix, s in beam:
            spans = s.best_path()[1]
            hyps.append(
                Hypothesis(
                    tokens=prefix,
                    score=s.score,
                    token_frames=tuple(first for first, _ in spans),
                    token_end_frames=tuple(last for _, last in spans),
                    ctc_score=s.score,
                )
            )
        return hyps
