"""Parity with the reference ChunkFormer implementation through the chunkformer-tiny fixture.

The fixture holds the reference's CTC log-probabilities for each (chunk, left, right) setting and
file, from its masked batch (``batch``) and from its long-form decoding (``endless``), plus its
greedy texts and segments. Our masked batch and our long-form decoder must reproduce them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import echostream
from echostream.audio import load_audio
from echostream.encoders.base import ChunkContext
from echostream.frontend import compute_fbank

TOLERANCE = 1e-3  # the reference's own two paths differ by up to 1.1e-4
REFERENCE_MODES = ("batch", "endless")
SETTINGS = [(16, 32, 16), (8, 16, 0), (4, 8, 4)]  # checked against expected.json below
FILES = ["utt0.wav", "utt1.wav", "utt2.wav", "utt3.wav", "long.wav"]
BLOCK_SECONDS = (0.5, 2.0)


def _setting_id(setting: tuple[int, int, int]) -> str:
    c, left, right = setting
    return f"c{c}_l{left}_r{right}"


def _hhmmssms(seconds: float) -> str:
    """Seconds -> the reference's ``hh:mm:ss:ms`` (rounded to the millisecond)."""
    millis = round(seconds * 1000)
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}:{millis:03d}"


@pytest.fixture(scope="module")
def expected(fixture_dir: Path) -> dict[str, Any]:
    with open(fixture_dir / "expected.json", encoding="utf-8") as f:
        return json.load(f)


@pytest.fixture(scope="module")
def reference(fixture_dir: Path) -> dict[str, np.ndarray]:
    """``c{C}_l{L}_r{R}/{batch|endless}/{file}`` -> (T', V) reference log-probs."""
    with np.load(fixture_dir / "expected.npz") as npz:
        return {key: npz[key] for key in npz.files}


def test_fixture_lists_the_settings_and_files_tested_here(
    expected: dict[str, Any], reference: dict[str, np.ndarray]
) -> None:
    assert [tuple(s) for s in expected["settings"]] == SETTINGS
    assert expected["files"] == FILES
    keys = {
        f"{_setting_id(s)}/{mode}/{name}" for s in SETTINGS for mode in REFERENCE_MODES for name in FILES
    }
    assert set(reference) == keys


@pytest.fixture(scope="module")
def masked_batch(
    fixture_model: echostream.Model, fixture_dir: Path
) -> dict[tuple[int, int, int], list[np.ndarray]]:
    """All files in one masked batch through ``bundle.model``: setting -> per-file (T', V)."""
    bundle = fixture_model.bundle
    feats = [
        torch.from_numpy(compute_fbank(load_audio(fixture_dir / "audio" / name), bundle.fbank))
        for name in FILES
    ]  # each (T, 80)
    x = torch.nn.utils.rnn.pad_sequence(feats, batch_first=True)  # (B, T, 80)
    x_lens = torch.tensor([f.shape[0] for f in feats])
    out = {}
    with torch.inference_mode():
        for c, left, right in SETTINGS:
            log_probs, lens = bundle.model(x, x_lens, ChunkContext(chunk=c, left=left, right=right))
            out[(c, left, right)] = [log_probs[b, : int(n)].numpy() for b, n in enumerate(lens)]
    return out


def _compare(ours: np.ndarray, ref: np.ndarray, what: str) -> float:
    assert ours.shape == ref.shape, f"{what}: shape {ours.shape}, reference {ref.shape}"
    diff = float(np.abs(ours - ref).max()) if ref.size else 0.0
    assert diff <= TOLERANCE, f"{what}: max |diff| {diff:.3g} > {TOLERANCE}"
    return diff


@pytest.mark.parametrize("mode", REFERENCE_MODES)
@pytest.mark.parametrize("setting", SETTINGS, ids=_setting_id)
def test_masked_batch_matches_reference(
    masked_batch: dict[tuple[int, int, int], list[np.ndarray]],
    reference: dict[str, np.ndarray],
    setting: tuple[int, int, int],
    mode: str,
    record_property: Any,
) -> None:
    worst = 0.0
    for name, ours in zip(FILES, masked_batch[setting]):
        key = f"{_setting_id(setting)}/{mode}/{name}"
        worst = max(worst, _compare(ours, reference[key], key))
    record_property("max_abs_diff", worst)


@pytest.fixture(scope="module")
def longform() -> dict[tuple[tuple[int, int, int], float], list[np.ndarray]]:
    """Cache of long-form results, (setting, block_seconds) -> per-file (T', V), filled on use."""
    return {}


@pytest.mark.parametrize("mode", REFERENCE_MODES)
@pytest.mark.parametrize("block_seconds", BLOCK_SECONDS)
@pytest.mark.parametrize("setting", SETTINGS, ids=_setting_id)
def test_longform_matches_reference(
    fixture_model: echostream.Model,
    fixture_dir: Path,
    longform: dict[tuple[tuple[int, int, int], float], list[np.ndarray]],
    reference: dict[str, np.ndarray],
    setting: tuple[int, int, int],
    block_seconds: float,
    mode: str,
    record_property: Any,
) -> None:
    c, left, right = setting
    if (setting, block_seconds) not in longform:
        longform[(setting, block_seconds)] = [
            fixture_model.ctc_log_probs(
                fixture_dir / "audio" / name,
                chunk_size=c,
                left_context=left,
                right_context=right,
                block_seconds=block_seconds,
            )
            for name in FILES
        ]
    worst = 0.0
    for name, ours in zip(FILES, longform[(setting, block_seconds)]):
        key = f"{_setting_id(setting)}/{mode}/{name}"
        worst = max(worst, _compare(ours, reference[key], f"{key} (blocks of {block_seconds} s)"))
    record_property("max_abs_diff", worst)


@pytest.mark.parametrize("setting", SETTINGS, ids=_setting_id)
def test_greedy_text_and_segments_match_reference(
    fixture_model: echostream.Model,
    fixture_dir: Path,
    expected: dict[str, Any],
    setting: tuple[int, int, int],
) -> None:
    c, left, right = setting
    transcripts = fixture_model.transcribe(
        [fixture_dir / "audio" / name for name in FILES],
        chunk_size=c,
        left_context=left,
        right_context=right,
    )
    for name, transcript in zip(FILES, transcripts):
        key = f"{_setting_id(setting)}/{name}"
        assert transcript.ok, f"{key}: {transcript.error}"
        for mode in REFERENCE_MODES:
            assert transcript.text == expected["text"][key][mode], f"{key} ({mode})"
        ours = [(_hhmmssms(s.start), _hhmmssms(s.end), s.text) for s in transcript.segments]
        theirs = [(s["start"], s["end"], s["decode"]) for s in expected["segments"][key]]
        assert ours == theirs, key


def test_timestamp_format() -> None:
    assert _hhmmssms(0.0) == "00:00:00:000"
    assert _hhmmssms(29.76) == "00:00:29:760"
    assert _hhmmssms(0.08 * 3) == "00:00:00:240"  # 0.24000000000000002
    assert _hhmmssms(3723.004) == "01:02:03:004"
