"""Tests for echostream.data.dialogue: two-sided calls, one stereo file each, rows per turn."""

from __future__ import annotations

import itertools
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from echostream.cli.main import main
from echostream.data.dialogue import CallConfig, read_dialogues, render_dialogues
from echostream.data.manifest import read_manifest
from echostream.data.synth import SynthError, select_voices
from echostream.training.dataset import load_utterance

needs_espeak = pytest.mark.skipif(
    shutil.which("espeak-ng") is None or shutil.which("sox") is None,
    reason="espeak-ng or sox not installed (run .ci/install-tts)",
)
CALLS = [
    {"id": "c1", "turns": [{"role": "agent", "text": "Thank you for calling, how can I help?"},
                           {"role": "customer", "text": "My internet is down."},
                           {"role": "agent", "text": "I am sorry to hear that."}]},
    {"id": "c2", "turns": [{"role": "customer", "text": "Hello, is anyone there?"},
                           {"role": "agent", "text": "Yes, good morning."}]},
]  # fmt: skip


def write_calls(path: Path, calls: list[dict]) -> Path:
    path.write_text("".join(json.dumps(c) + "\n" for c in calls), encoding="utf-8")
    return path


def energy(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(x.astype(np.float64) ** 2))) if x.size else 0.0


@needs_espeak
def test_calls_are_stereo_with_one_row_per_turn_on_its_side(tmp_path: Path) -> None:
    voices = select_voices("espeak:en-us+m1,espeak:en-gb+f2").available
    dialogues = read_dialogues(write_calls(tmp_path / "calls.jsonl", CALLS))
    cfg = CallConfig(overlap_probability=0.0, seed=3)
    rows, failures = render_dialogues(dialogues, tmp_path / "out", voices, cfg)
    assert failures == [] and [r.id for r in rows] == ["c1-00", "c1-01", "c1-02", "c2-00", "c2-01"]
    assert read_manifest(tmp_path / "out" / "manifest.jsonl") == rows
    call, rate = sf.read(tmp_path / "out" / "wav" / "c1.wav")
    assert rate == 16000 and call.shape[1] == 2
    assert [r.channel for r in rows] == [0, 1, 0, 1, 0]  # agent left, customer right
    assert rows[0].speaker != rows[1].speaker and rows[0].speaker == rows[2].speaker  # a voice per side
    for row in rows[:3]:
        first, n = round(row.offset * rate), round(row.duration * rate)
        own, other = call[first : first + n, row.channel], call[first : first + n, 1 - row.channel]
        assert energy(own) > 0.01 and energy(other) == 0.0  # no overlap asked for: the other side is quiet
        np.testing.assert_allclose(load_utterance(row, 16000), own, atol=1 / 32768)  # training reads its side
    assert rows[1].offset > rows[0].offset + rows[0].duration + 0.2 - 1e-3  # a pause between turns
    render_dialogues(dialogues, tmp_path / "again", voices, cfg)
    assert np.array_equal(sf.read(tmp_path / "again" / "wav" / "c1.wav")[0], call)  # same seed, same call


@needs_espeak
def test_overlapping_turns_start_before_the_other_side_ends(tmp_path: Path) -> None:
    voices = select_voices("espeak:en-us+m1,espeak:en-gb+f2").available
    dialogues = read_dialogues(write_calls(tmp_path / "calls.jsonl", CALLS[:1]))
    rows, _ = render_dialogues(dialogues, tmp_path / "out", voices,
                               CallConfig(overlap_probability=1.0, overlap=(0.3, 0.3)))  # fmt: skip
    for before, after in itertools.pairwise(rows):
        assert after.offset == pytest.approx(before.offset + before.duration - 0.3, abs=2e-4)


@needs_espeak
def test_synth_dialogues_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    calls = write_calls(tmp_path / "calls.jsonl", CALLS)
    assert main(["synth", "--dialogues", str(calls), "--out", str(tmp_path / "out"), "--voices", "espeak:en-us+m[12]",
                 "--seed", "1"]) == 0  # fmt: skip
    assert "2 of 2 calls (5 turns" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"id": "a", "turns": [{"role": "caller", "text": "hi"}]}', "role 'caller' is not one of agent, customer"),
        ('{"id": "a", "turns": []}', "a call needs turns"),
        ('{"id": "a/b", "turns": [{"role": "agent", "text": "hi"}]}', "unique non-empty name"),
        ('{"turns": []}', 'expected {"id", "turns"'),
        ("not json", "calls.jsonl:1: expected"),
    ],
)
def test_bad_dialogue_files_are_one_line_errors(tmp_path: Path, line: str, message: str) -> None:
    path = tmp_path / "calls.jsonl"
    path.write_text(line + "\n", encoding="utf-8")
    with pytest.raises(SynthError, match=re.escape(message)):
        read_dialogues(path)
