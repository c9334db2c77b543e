"""Decoding strategies: greedy, CTC prefix beam search, attention rescoring, and the
``Model.transcribe(decoding=...)`` long-form path that decodes piece by piece."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

import echostream
import echostream.model as model_module
from echostream.heads.attention_decoder import DecoderScores
from echostream.heads.search import (
    AttentionRescoring,
    CTCGreedySearch,
    CTCPrefixBeamSearch,
    Hypothesis,
    RescoringWeights,
)
from echostream.models.checkpoint import ModelBundle

NO_FRAMES = torch.zeros(0, 4)  # encoder output, unused by the CTC-only strategies
FILES = ("utt0.wav", "utt1.wav", "utt2.wav", "utt3.wav", "long.wav")


def _log_probs(rows: list[list[float]]) -> torch.Tensor:
    return torch.log(torch.tensor(rows))


def _random_log_probs(seed: int, frames: int = 60, vocab: int = 6) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(frames, vocab, generator=g) * 2.0
    logits[:, 0] += 1.0  # blank-heavy, like a CTC model
    return logits.log_softmax(-1)


@pytest.mark.parametrize("seed", range(5))
def test_beam_of_one_is_greedy(seed: int) -> None:
    log_probs = _random_log_probs(seed)
    (greedy,) = CTCGreedySearch()(log_probs, NO_FRAMES)
    (beam,) = CTCPrefixBeamSearch(beam_size=1)(log_probs, NO_FRAMES)
    assert greedy.tokens and beam.tokens == greedy.tokens
    assert beam.token_frames == greedy.token_frames and beam.token_end_frames == greedy.token_end_frames
    assert beam.score == pytest.approx(greedy.score, abs=1e-4)  # one path: all paths = best path


def test_beam_search_finds_the_sequence_greedy_misses() -> None:
    """Two frames over {blank, a}: P = (0.6, 0.4) then (0.55, 0.45). Greedy's best path "- -"
    (0.33) gives the empty sequence, but "a" has three paths: a a (0.18), a - (0.22) and
    - a (0.27), 0.67 in all; its best path "- a" puts the token on frame 1."""
    log_probs = _log_probs([[0.6, 0.4], [0.55, 0.45]])
    (greedy,) = CTCGreedySearch()(log_probs, NO_FRAMES)
    assert greedy.tokens == () and greedy.score == pytest.approx(math.log(0.33))
    nbest = CTCPrefixBeamSearch(beam_size=2)(log_probs, NO_FRAMES)
    assert [h.tokens for h in nbest] == [(1,), ()]
    assert nbest[0].score == pytest.approx(math.log(0.67)) and nbest[1].score == pytest.approx(math.log(0.33))
    assert nbest[0].token_frames == (1,) and nbest[0].token_end_frames == (1,)


def test_beam_search_sums_paths_and_keeps_repeats_apart() -> None:
    """Three frames over {blank, a}: the scores of all sequences are exact and sum to one; "a a"
    needs a blank between its tokens, so its only path is "a - a"."""
    p = [[0.5, 0.5], [0.7, 0.3], [0.4, 0.6]]
    nbest = CTCPrefixBeamSearch(beam_size=4)(_log_probs(p), NO_FRAMES)
    scores = {h.tokens: math.exp(h.score) for h in nbest}
    aa = p[0][1] * p[1][0] * p[2][1]
    empty = p[0][0] * p[1][0] * p[2][0]
    assert scores[(1, 1)] == pytest.approx(aa)
    assert scores[()] == pytest.approx(empty)
    assert scores[(1,)] == pytest.approx(1.0 - aa - empty)
    assert sum(scores.values()) == pytest.approx(1.0)
    by_tokens = {h.tokens: h for h in nbest}
    assert by_tokens[(1, 1)].token_frames == (0, 2)


def test_nbest_is_sorted_and_bounded() -> None:
    nbest = CTCPrefixBeamSearch(beam_size=4)(_random_log_probs(7), NO_FRAMES)
    assert len(nbest) == 4 and len({h.tokens for h in nbest}) == 4
    assert [h.score for h in nbest] == sorted((h.score for h in nbest), reverse=True)
    with pytest.raises(ValueError, match="beam_size"):
        CTCPrefixBeamSearch(beam_size=0)


class _FixedScorer:
    """A decoder stand-in: fixed left-to-right and right-to-left scores per hypothesis."""

    def __init__(self, l2r: dict[tuple[int, ...], float], r2l: dict[tuple[int, ...], float]) -> None:
        self.l2r, self.r2l = l2r, r2l
        self.calls: list[tuple[list[list[int]], bool]] = []

    def score(self, hyps: list[list[int]], memory: torch.Tensor, with_r2l: bool) -> DecoderScores:
        self.calls.append((hyps, with_r2l))
        return DecoderScores(
            l2r=torch.tensor([self.l2r[tuple(h)] for h in hyps]),
            r2l=torch.tensor([self.r2l[tuple(h)] for h in hyps]) if with_r2l else None,
        )


def test_rescoring_picks_the_best_combined_score() -> None:
    """CTC ranks "a" (log 0.64) over "" (log 0.36); the decoder prefers "" strongly enough."""
    log_probs = _log_probs([[0.6, 0.4], [0.6, 0.4]])  # "a": 0.16 + 0.24 + 0.24
    scorer = _FixedScorer(l2r={(1,): -3.0, (): -1.0}, r2l={(1,): -1.0, (): -2.0})
    weights = RescoringWeights(ctc_weight=0.5, reverse_weight=0.25)
    ranked = AttentionRescoring(scorer, weights, beam_size=2)(log_probs, torch.zeros(2, 4))
    # "a": 0.75 * -3 + 0.25 * -1 + 0.5 * log 0.64 = -2.7231; "": -1.25 + 0.5 * log 0.36 = -1.7608
    assert [h.tokens for h in ranked] == [(), (1,)]
    assert ranked[0].score == pytest.approx(0.75 * -1.0 + 0.25 * -2.0 + 0.5 * math.log(0.36))
    assert ranked[1].score == pytest.approx(0.75 * -3.0 + 0.25 * -1.0 + 0.5 * math.log(0.64))
    assert ranked[0].attention_score == pytest.approx(-1.25)
    assert ranked[0].ctc_score == pytest.approx(math.log(0.36))
    assert scorer.calls == [([[1], []], True)]

    # without the right-to-left decoder and with more CTC weight, CTC's choice stands
    scorer = _FixedScorer(l2r={(1,): -1.5, (): -1.0}, r2l={})
    ranked = AttentionRescoring(scorer, RescoringWeights(ctc_weight=2.0), beam_size=2)(log_probs, torch.zeros(2, 4))
    assert ranked[0].tokens == (1,) and scorer.calls[0][1] is False


def test_rescoring_with_a_decoder_of_one_candidate_is_the_beam(make_tiny_asr: Callable[..., object]) -> None:
    model = make_tiny_asr()
    log_probs = _random_log_probs(3, vocab=8)
    rescoring = AttentionRescoring(model.decoder, RescoringWeights(reverse_weight=0.5), beam_size=1)  # type: ignore[attr-defined]
    (best,) = rescoring(log_probs, torch.randn(60, 32))
    (beam,) = CTCPrefixBeamSearch(beam_size=1)(log_probs, NO_FRAMES)
    assert best.tokens == beam.tokens and best.attention_score is not None and math.isfinite(best.score)


# --------------------------------------------------------------------------- Model.transcribe


@pytest.fixture(scope="module")
def audio(fixture_dir: Path) -> list[str]:
    return [str(fixture_dir / "audio" / name) for name in FILES]


SETTINGS: dict[str, Any] = {"chunk_size": 8, "left_context": 16, "right_context": 0}


@pytest.mark.parametrize("piece_seconds", [30.0, 1.0])
def test_transcribe_with_a_beam_of_one_is_greedy(
    fixture_model: echostream.Model, audio: list[str], piece_seconds: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pieces of at most ``piece_seconds`` (1 s forces cuts inside speech) change nothing."""
    monkeypatch.setattr(model_module, "MAX_PIECE_SECONDS", piece_seconds)
    greedy = fixture_model.transcribe(audio, **SETTINGS)
    for decoding in ("prefix_beam", "attention_rescoring"):
        beam = fixture_model.transcribe(audio, **SETTINGS, decoding=decoding, beam_size=1)
        for g, b in zip(greedy, beam):
            assert (b.text, b.tokens, b.segments, b.duration) == (g.text, g.tokens, g.segments, g.duration)


def test_transcribe_with_beams(fixture_model: echostream.Model, audio: list[str]) -> None:
    beam = fixture_model.transcribe(audio[-1:], **SETTINGS, decoding="prefix_beam", beam_size=4)
    rescored = fixture_model.transcribe(
        audio[-1:], **SETTINGS, decoding="attention_rescoring", beam_size=4, ctc_weight=0.5, reverse_weight=0.3
    )
    for t in beam + rescored:
        assert t.ok and t.text and t.segments and t.duration == pytest.approx(29.9, abs=0.2)
        assert [k.time for k in t.tokens] == sorted(k.time for k in t.tokens)


def test_transcribe_reports_bad_inputs_and_options(
    fixture_model: echostream.Model, audio: list[str], tmp_path: Path,
    make_tiny_bundle: Callable[..., ModelBundle],
) -> None:
    missing = str(tmp_path / "missing.wav")
    results = fixture_model.transcribe([missing, audio[2]], **SETTINGS, decoding="prefix_beam", beam_size=2)
    assert results[0].error is not None and "missing.wav" in results[0].error
    assert results[1].ok and results[1].text
    with pytest.raises(ValueError, match="decoding 'beam'"):
        fixture_model.transcribe(audio[2], decoding="beam")
    with pytest.raises(ValueError, match="beam_size"):
        fixture_model.transcribe(audio[2], decoding="prefix_beam", beam_size=0)
    ctc_only = echostream.Model(make_tiny_bundle())
    with pytest.raises(ValueError, match="no attention decoder|has none"):
        ctc_only.transcribe(audio[2], decoding="attention_rescoring")


def test_hypothesis_is_frozen() -> None:
    h = Hypothesis(tokens=(1,), score=0.0, token_frames=(0,), token_end_frames=(0,))
    with pytest.raises(AttributeError):
        h.score = 1.0  # type: ignore[misc]
