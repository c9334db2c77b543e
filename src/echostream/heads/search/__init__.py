"""Decoding strategies, one interface (:class:`SearchStrategy`): CTC greedy search, CTC prefix
beam search, and attention rescoring of the prefix beam search n-best."""

from echostream.heads.search.base import Hypothesis, SearchStrategy
from echostream.heads.search.greedy import CTCGreedySearch
from echostream.heads.search.pieces import piece_end
from echostream.heads.search.prefix_beam import CTCPrefixBeamSearch
from echostream.heads.search.rescoring import AttentionRescoring, HypothesisScorer, RescoringWeights

__all__ = [
    "AttentionRescoring",
    "CTCGreedySearch",
    "CTCPrefixBeamSearch",
    "Hypothesis",
    "HypothesisScorer",
    "RescoringWeights",
    "SearchStrategy",
    "piece_end",
]
