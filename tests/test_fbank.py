"""Tests for echostream.frontend.fbank: offline fbank, its scaling, and streaming equality."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import kaldi_native_fbank as knf
import numpy as np
import pytest

from echostream.audio import load_audio
from echostream.frontend import (
    FbankConfig,
    FbankState,
    compute_fbank,
    fbank_step,
    init_fbank_state,
)

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared"
FIXTURE = SHARED / "fixtures" / "chunkformer-tiny"
FIXTURE_FILES = ["utt0", "utt1", "utt2", "utt3", "long"]


@pytest.fixture(scope="module")
def utterance() -> np.ndarray:
    """(N,) float32 16 kHz speech."""
    return load_audio(FIXTURE / "audio" / "utt0.wav")


def _stream(samples: np.ndarray, cut_points: np.ndarray, cfg: FbankConfig) -> np.ndarray:
    """Feed ``samples`` split at ``cut_points``; return the concatenated (T, F) frames."""
    state = init_fbank_state()
    outputs = []
    for chunk in np.split(samples, cut_points):
        frames, new_state = fbank_step(chunk, state, cfg)
        assert frames.shape == (new_state.frames_emitted - state.frames_emitted, cfg.num_mel_bins)
        outputs.append(frames)
        state = new_state
    joined = np.concatenate(outputs)  # (T, F)
    assert state.frames_emitted == joined.shape[0]
    assert state.pending.size == samples.size - cfg.window_shift * joined.shape[0]
    return joined


def test_shape_follows_snip_edges(utterance: np.ndarray) -> None:
    cfg = FbankConfig()
    feats = compute_fbank(utterance, cfg)
    assert feats.dtype == np.float32
    assert feats.shape == (1 + (utterance.size - 400) // 160, 80)
    for n, frames in [(0, 0), (399, 0), (400, 1), (559, 1), (560, 2)]:
        assert compute_fbank(utterance[:n], cfg).shape == (frames, 80)


def test_values_match_the_fixture_cmvn_statistics() -> None:
    """The fixture's global CMVN was accumulated over exactly these files with the reference
    front end, so our per-bin mean and variance must reproduce it."""
    cmvn = json.loads((FIXTURE / "model" / "global_cmvn").read_text())
    per_file = [load_audio(FIXTURE / "audio" / f"{u}.wav") for u in FIXTURE_FILES]
    feats = np.concatenate([compute_fbank(x, FbankConfig()) for x in per_file])  # (T, F)
    feats = feats.astype(np.float64)
    assert feats.shape[0] == cmvn["frame_num"]
    mean = np.asarray(cmvn["mean_stat"]) / cmvn["frame_num"]
    var = np.asarray(cmvn["var_stat"]) / cmvn["frame_num"] - mean**2
    np.testing.assert_allclose(feats.mean(axis=0), mean, atol=1e-3)
    np.testing.assert_allclose(feats.var(axis=0), var, rtol=1e-3)
    assert np.isfinite(feats).all() and 5 < feats.mean() < 25


def test_samples_are_scaled_to_the_int16_range(utterance: np.ndarray) -> None:
    opts = knf.FbankOptions()
    opts.frame_opts.dither = 0.0
    opts.frame_opts.snip_edges = True
    opts.mel_opts.num_bins = 80
    opts.energy_floor = 0.0
    reference = knf.OnlineFbank(opts)
    reference.accept_waveform(16000, (utterance * 32768).tolist())
    reference.input_finished()
    expected = np.stack([reference.get_frame(i) for i in range(reference.num_frames_ready)])
    np.testing.assert_array_equal(compute_fbank(utterance, FbankConfig()), expected)
    np.testing.assert_array_equal(
        compute_fbank(utterance.astype(np.float64), FbankConfig()), expected
    )


@pytest.mark.parametrize("seed", range(6))
def test_streaming_equals_offline_for_random_splits(utterance: np.ndarray, seed: int) -> None:
    rng = np.random.default_rng(seed)
    cfg = FbankConfig()
    max_chunk = [1, 50, 160, 400, 1000, 9000][seed]
    sizes = rng.integers(0, max_chunk + 1, size=utterance.size)  # zero-length chunks included
    cut_points = np.cumsum(sizes)
    cut_points = cut_points[cut_points < utterance.size]
    if seed == 0:
        cut_points = cut_points[:3000]  # one-sample chunks: keep the test fast
        signal = utterance[: int(cut_points[-1]) + 700]
    else:
        signal = utterance
    streamed = _stream(signal, cut_points, cfg)
    assert np.array_equal(streamed, compute_fbank(signal, cfg))


@pytest.mark.parametrize(
    "cfg",
    [
        FbankConfig(num_mel_bins=40, frame_length_ms=20.0, frame_shift_ms=8.0),
        FbankConfig(num_mel_bins=23, sample_rate=8000, energy_floor=1.0),
        FbankConfig(frame_length_ms=25.0, frame_shift_ms=12.5, sample_rate=22050),
    ],
)
def test_streaming_equals_offline_for_other_configs(
    cfg: FbankConfig, utterance: np.ndarray
) -> None:
    rng = np.random.default_rng(1)
    signal = utterance[:20000]
    cut_points = np.sort(rng.choice(signal.size, size=60, replace=False))
    offline = compute_fbank(signal, cfg)
    assert offline.shape == (
        1 + (signal.size - cfg.window_size) // cfg.window_shift,
        cfg.num_mel_bins,
    )
    assert np.array_equal(_stream(signal, cut_points, cfg), offline)


def test_step_leaves_the_old_state_alone(utterance: np.ndarray) -> None:
    cfg = FbankConfig()
    _, state = fbank_step(utterance[:1000], init_fbank_state(), cfg)
    pending_before = state.pending.copy()
    frames_a, state_a = fbank_step(utterance[1000:1500], state, cfg)
    frames_b, state_b = fbank_step(utterance[1000:1500], state, cfg)  # replay from the same state
    np.testing.assert_array_equal(state.pending, pending_before)
    assert state.frames_emitted == 4
    np.testing.assert_array_equal(frames_a, frames_b)
    assert state_a.frames_emitted == state_b.frames_emitted == 4 + 3
    with pytest.raises(dataclasses.FrozenInstanceError):
        state.frames_emitted = 0  # type: ignore[misc]


def test_short_input_gives_no_frames_and_keeps_samples() -> None:
    frames, state = fbank_step(np.zeros(399, dtype=np.float32), init_fbank_state(), FbankConfig())
    assert frames.shape == (0, 80)
    assert isinstance(state, FbankState) and state.pending.size == 399
    assert state.frames_emitted == 0


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("num_mel_bins", 0),
        ("num_mel_bins", 80.0),
        ("frame_length_ms", 0.0),
        ("frame_shift_ms", -10.0),
        ("dither", -1.0),
        ("energy_floor", float("nan")),
        ("sample_rate", 0),
    ],
)
def test_config_validation_names_the_field(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=f"FbankConfig.{field}"):
        FbankConfig(**{field: value})  # type: ignore[arg-type]


def test_config_rejects_shift_longer_than_window() -> None:
    with pytest.raises(ValueError, match="frame_shift_ms"):
        FbankConfig(frame_length_ms=10.0, frame_shift_ms=20.0)


def test_rejects_non_float_or_non_1d_input() -> None:
    with pytest.raises(ValueError, match="1-D float"):
        compute_fbank(np.zeros(1000, dtype=np.int16), FbankConfig())
    with pytest.raises(ValueError, match="1-D float"):
        fbank_step(np.zeros((1000, 2)), init_fbank_state(), FbankConfig())
