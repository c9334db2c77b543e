"""``transcribe --ray-workers``: a local Ray cluster of two workers writes what a local run
writes, reports a bad input and goes on."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from echostream.cli.main import main

pytest.importorskip("ray")

FIXTURE = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures" / "chunkformer-tiny"


def test_two_ray_workers_write_what_one_local_run_writes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    audio = tmp_path / "audio"
    (audio / "b").mkdir(parents=True)
    for name in ("utt0", "utt1", "utt2", "utt3"):
        shutil.copy(FIXTURE / "audio" / f"{name}.wav", audio / f"{name}.wav")
    shutil.copy(FIXTURE / "audio" / "utt2.wav", audio / "b" / "utt2.wav")  # a repeated stem
    (audio / "broken.wav").write_text("not audio\n")
    model = ["--model", str(FIXTURE / "model")]
    assert main(["transcribe", *model, "--output-dir", str(tmp_path / "local"), str(audio)]) == 1
    capsys.readouterr()
    code = main(["transcribe", *model, "--ray-workers", "2", "--output-dir", str(tmp_path / "ray"), str(audio)])
    err = capsys.readouterr().err
    assert code == 1  # the broken file
    assert f"error: {audio / 'broken.wav'}: " in err and "5 of 6 files transcribed" in err
    local = {p.name: p.read_text() for p in (tmp_path / "local").iterdir()}
    assert len(local) == 5
    assert {p.name: p.read_text() for p in (tmp_path / "ray").iterdir()} == local


def test_bad_ray_options(capsys: pytest.CaptureFixture[str]) -> None:
    wav = str(FIXTURE / "audio" / "utt2.wav")
    assert main(["transcribe", "--ray-workers", "0", wav]) == 2
    assert "--ray-workers must be at least 1, got 0" in capsys.readouterr().err
    assert main(["transcribe", "--ray-address", "auto", wav]) == 2
    assert "--ray-address needs --ray-workers" in capsys.readouterr().err
