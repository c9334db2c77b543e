"""Tests for echostream.data.compose: joined long-form files and clips without speech."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from echostream.audio import load_audio
from echostream.cli.main import main
from echostream.data.compose import JoinConfig, join_utterances, speechless
from echostream.data.manifest import Utterance, read_manifest, write_manifest


@pytest.fixture
def sentences(tmp_path: Path) -> list[Utterance]:
    rows = []
    for i in range(6):
        path = tmp_path / f"s{i}.wav"
        tone = 0.2 * np.sin(2 * np.pi * (200 + 50 * i) * np.arange(8000 + 1600 * i) / 16000)
        sf.write(path, tone, 16000, subtype="PCM_16")
        rows.append(Utterance(id=f"s{i}", audio=str(path), text=f"sentence {i}", duration=(8000 + 1600 * i) / 16000,
                              speaker="espeak:en-us"))  # fmt: skip
    return rows


def test_joined_files_hold_their_sentences_in_order_with_pauses(tmp_path: Path, sentences: list[Utterance]) -> None:
    cfg = JoinConfig(sentences=(2, 4), pause=(0.5, 0.5), noise_db=None, seed=3)
    rows, failures = join_utterances(sentences, tmp_path / "out", 5, cfg)
    assert failures == [] and read_manifest(tmp_path / "out" / "manifest.jsonl") == rows
    listed = [json.loads(line) for line in (tmp_path / "out" / "parts.jsonl").read_text().splitlines()]
    for row, entry in zip(rows, listed, strict=True):
        parts = [sentences[int(word)] for word in row.text.split()[1::2]]
        assert 2 <= len(parts) <= 4 and row.text == " ".join(p.text for p in parts)
        assert entry == {"id": row.id, "parts": [p.id for p in parts]} and len(set(entry["parts"])) == len(parts)
        audio = load_audio(row.audio)
        expected = np.concatenate(
            [x for j, p in enumerate(parts) for x in ([np.zeros(8000, np.float32)] if j else []) + [load_audio(p.audio)]]
        )
        np.testing.assert_array_equal(audio, expected)  # the sentences, and digital silence between
        assert row.speaker == "espeak:en-us"


def test_pauses_can_hold_quiet_noise(tmp_path: Path, sentences: list[Utterance]) -> None:
    cfg = JoinConfig(sentences=(2, 2), pause=(1.0, 1.0), noise_db=(-60.0, -60.0), seed=1)
    (row,), _ = join_utterances(sentences, tmp_path / "out", 1, cfg)
    first = sentences[int(row.text.split()[1])]
    gap = load_audio(row.audio)[round(first.duration * 16000) : round(first.duration * 16000) + 16000]
    assert 20 * np.log10(np.sqrt(np.mean(gap.astype(np.float64) ** 2))) == pytest.approx(-60.0, abs=1.0)


def test_an_unreadable_row_is_left_out_and_every_file_still_written(tmp_path: Path, sentences: list[Utterance]) -> None:
    (tmp_path / "bad.wav").write_bytes(b"not audio")
    rows = [*sentences[:2], Utterance(id="bad", audio=str(tmp_path / "bad.wav"), text="x", duration=1.0)]
    written, failures = join_utterances(rows, tmp_path / "out", 6, JoinConfig(sentences=(2, 2), seed=0))
    assert len(written) == 6 and [w.id for w in written] == [f"joined-{i:05d}" for i in range(6)]
    assert len(failures) == 1 and failures[0].startswith("bad: ") and "bad.wav" in failures[0]
    assert all("x" not in w.text.split() for w in written)
    (only_bad,) = rows[2:]
    assert join_utterances([only_bad], tmp_path / "none", 2, JoinConfig(seed=0))[0] == []


def test_speechless_clips(tmp_path: Path) -> None:
    rows = speechless(tmp_path / "out", 10, level_db=(-30.0, -30.0), seed=2)
    assert [r.speaker for r in rows[:5]] == [f"speechless:{k}" for k in ("silence", "white", "pink", "brown", "tones")]
    assert all(r.text == "" and 1.0 <= r.duration <= 8.0 for r in rows)
    for row in rows:
        audio = load_audio(row.audio)
        if row.speaker == "speechless:silence":
            assert not np.any(audio)
        else:
            level = 20 * np.log10(np.sqrt(np.mean(audio.astype(np.float64) ** 2)))
            assert level == pytest.approx(-30.0, abs=0.5)
    with pytest.raises(ValueError, match="speechless kinds must be some of"):
        speechless(tmp_path / "x", 1, kinds=["applause"])
    for duration in ((0.0, 0.0), (1e9, 1e9), (float("nan"), 1.0), (-2.0, -1.0), (3.0, 2.0)):
        with pytest.raises(ValueError, match="speechless duration must be a range"):
            speechless(tmp_path / "x", 1, duration=duration)
    with pytest.raises(ValueError, match="speechless level must be a range"):
        speechless(tmp_path / "x", 1, level_db=(-10.0, 5.0))


def test_manifest_join_and_speechless_commands(tmp_path: Path, sentences: list[Utterance],
                                               capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    write_manifest(tmp_path / "in.jsonl", sentences)
    assert main(["manifest", "join", str(tmp_path / "in.jsonl"), "--out", str(tmp_path / "j"), "--count", "3",
                 "--seed", "1"]) == 0  # fmt: skip
    assert len(read_manifest(tmp_path / "j" / "manifest.jsonl")) == 3
    assert main(["manifest", "speechless", "--out", str(tmp_path / "q"), "--count", "4", "--kinds", "silence,tones"]) == 0
    assert "4 clips without speech" in capsys.readouterr().err
    assert main(["manifest", "join", str(tmp_path / "in.jsonl"), "--out", str(tmp_path / "z"), "--count", "0"]) == 2
