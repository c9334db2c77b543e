"""Tests for the ``echostream`` command (echostream.cli.main), run in-process and once installed."""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import soundfile as sf

from echostream import Model, Transcript, load_model
from echostream.cli.main import main
from echostream.text.normalize import NormalizerConfig, normalize_text
from echostream.training.evaluation import word_errors
from echostream.transcript import FORMATS

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
FIXTURE = SHARED / "fixtures" / "chunkformer-tiny"
MODEL_DIR = FIXTURE / "model"
AUDIO_DIR = FIXTURE / "audio"

pytestmark = pytest.mark.skipif(
    not (MODEL_DIR / "config.yaml").is_file(), reason=f"fixture model missing: {MODEL_DIR}"
)

SRT_LINE = re.compile(r"^\d\d:\d\d:\d\d,\d\d\d --> \d\d:\d\d:\d\d,\d\d\d$")
VTT_LINE = re.compile(r"^\d\d:\d\d:\d\d\.\d\d\d --> \d\d:\d\d:\d\d\.\d\d\d$")


def _audio(name: str) -> Path:
    return AUDIO_DIR / name


def _run(capsys: pytest.CaptureFixture[str], *args: str | Path) -> tuple[int, str, str]:
    code = main(["transcribe", *(str(a) for a in args)])
    out, err = capsys.readouterr()
    return code, out, err


def _transcribe(capsys: pytest.CaptureFixture[str], *args: str | Path) -> tuple[int, str, str]:
    return _run(capsys, "--model", MODEL_DIR, *args)


def _assert_one_line_error(err: str, *words: str) -> None:
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("echostream: error: "), err
    for word in words:
        assert word in lines[0], err


@pytest.fixture(scope="module")
def model() -> Model:
    return load_model(MODEL_DIR)


@pytest.fixture(scope="module")
def reference(model: Model) -> dict[str, Transcript]:
    """What the API gives for the short fixture files, with the CLI's defaults."""
    names = ("utt0.wav", "utt1.wav", "utt2.wav", "utt3.wav")
    return dict(zip(names, model.transcribe([_audio(n) for n in names])))


@pytest.fixture
def audio_copies(tmp_path: Path) -> Path:
    """A folder with utt0.wav, utt2.wav, sub/utt1.wav and a non-audio notes.txt."""
    folder = tmp_path / "audio"
    (folder / "sub").mkdir(parents=True)
    shutil.copy(_audio("utt0.wav"), folder / "utt0.wav")
    shutil.copy(_audio("utt2.wav"), folder / "utt2.wav")
    shutil.copy(_audio("utt1.wav"), folder / "sub" / "utt1.wav")
    (folder / "notes.txt").write_text("not audio\n")
    return folder


def _tab_lines(out: str) -> dict[str, str]:
    """``source<TAB>text`` lines -> {source: text}."""
    rows = [line.split("\t") for line in out.splitlines()]
    assert all(len(r) == 2 for r in rows), out
    return dict(rows)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------- inputs


def test_one_file_prints_its_text(
    capsys: pytest.CaptureFixture[str], reference: dict[str, Transcript]
) -> None:
    code, out, err = _transcribe(capsys, _audio("utt0.wav"))
    assert code == 0, err
    assert out == reference["utt0.wav"].text + "\n"
    assert "1 of 1 files transcribed" in err and "real-time factor" in err


def test_several_files_print_source_and_text(
    capsys: pytest.CaptureFixture[str], reference: dict[str, Transcript]
) -> None:
    code, out, _ = _transcribe(capsys, _audio("utt2.wav"), _audio("utt0.wav"))
    assert code == 0
    assert out.splitlines() == [
        f"{_audio('utt2.wav')}\t{reference['utt2.wav'].text}",
        f"{_audio('utt0.wav')}\t{reference['utt0.wav'].text}",
    ]


def test_directory_expands_to_its_audio_files(
    capsys: pytest.CaptureFixture[str], reference: dict[str, Transcript], audio_copies: Path
) -> None:
    code, out, err = _transcribe(capsys, audio_copies)
    assert code == 0, err
    rows = _tab_lines(out)
    assert rows == {
        str(audio_copies / "sub" / "utt1.wav"): reference["utt1.wav"].text,
        str(audio_copies / "utt0.wav"): reference["utt0.wav"].text,
        str(audio_copies / "utt2.wav"): reference["utt2.wav"].text,
    }
    assert "3 of 3 files transcribed" in err


def test_directory_without_audio_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    (tmp_path / "readme.txt").write_text("nothing to hear\n")
    code, out, err = _transcribe(capsys, tmp_path)
    assert code == 2 and out == ""
    _assert_one_line_error(err, str(tmp_path), "no audio files")


def test_a_directory_without_audio_among_inputs_is_named_and_the_others_transcribed(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    (tmp_path / "empty").mkdir()
    code, out, err = _transcribe(capsys, tmp_path / "empty", _audio("utt2.wav"))
    assert code == 0 and out.strip() != ""
    assert f"warning: {tmp_path / 'empty'}: directory holds no audio files" in err and "1 of 1 files" in err


def test_list_file_paths_are_relative_to_the_working_directory(
    capsys: pytest.CaptureFixture[str],
    reference: dict[str, Transcript],
    audio_copies: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """As ``ls sub/*.wav > list.txt`` writes them, like every other CLI reads them."""
    listing = tmp_path / "lists" / "files.lst"
    listing.parent.mkdir()
    listing.write_text(
        f"# a comment\nutt2.wav\n\n  sub/utt1.wav  \n{_audio('utt3.wav')}\n", encoding="utf-8"
    )
    monkeypatch.chdir(audio_copies)
    code, out, err = _transcribe(capsys, "--list", listing)
    assert code == 0, err
    assert _tab_lines(out) == {
        "utt2.wav": reference["utt2.wav"].text,
        "sub/utt1.wav": reference["utt1.wav"].text,
        str(_audio("utt3.wav")): reference["utt3.wav"].text,
    }
    monkeypatch.chdir(tmp_path)  # from elsewhere the relative lines name nothing: an error each, no nan
    code, out, err = _transcribe(capsys, "--list", listing)
    assert code == 1
    assert "utt2.wav: file not found" in err and "sub/utt1.wav: file not found" in err
    assert "nan" not in err and "1 of 3 files transcribed" in err


def test_list_and_files_together(
    capsys: pytest.CaptureFixture[str], reference: dict[str, Transcript], tmp_path: Path
) -> None:
    listing = tmp_path / "one.txt"
    listing.write_text(f"{_audio('utt2.wav')}\n")
    code, out, _ = _transcribe(capsys, _audio("utt1.wav"), "--list", listing)
    assert code == 0
    assert list(_tab_lines(out)) == [str(_audio("utt1.wav")), str(_audio("utt2.wav"))]


def test_missing_list_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = _transcribe(capsys, "--list", tmp_path / "nope.lst")
    assert code == 2
    _assert_one_line_error(err, "nope.lst")


def test_list_file_that_is_not_text(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    listing = tmp_path / "files.lst"
    listing.write_bytes(b"utt2.wav\n\xff\xfe\x00\x81\n")
    code, out, err = _transcribe(capsys, "--list", listing)
    assert code != 0 and out == ""
    _assert_one_line_error(err, str(listing))


def test_no_inputs_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _transcribe(capsys)
    assert code == 2 and out == ""
    _assert_one_line_error(err, "no input files")


# --------------------------------------------------------------------------------- formats


def test_json_output_parses(
    capsys: pytest.CaptureFixture[str], reference: dict[str, Transcript]
) -> None:
    code, out, _ = _transcribe(capsys, "--format", "json", _audio("utt0.wav"))
    assert code == 0
    doc = json.loads(out)
    expected = reference["utt0.wav"]
    assert doc["source"] == str(_audio("utt0.wav"))
    assert doc["text"] == expected.text
    assert doc["duration"] == round(expected.duration, 3)
    assert [(s["start"], s["end"], s["text"]) for s in doc["segments"]] == [
        (round(s.start, 3), round(s.end, 3), s.text) for s in expected.segments
    ]
    assert [(k["token"], k["time"]) for k in doc["tokens"]] == [(k.token, round(k.time, 3)) for k in expected.tokens]
    assert [(w["word"], w["start"], w["end"]) for w in doc["words"]] == [
        (w.word, round(w.start, 3), round(w.end, 3)) for w in expected.words
    ]
    assert " ".join(w["word"] for w in doc["words"]) == doc["text"]


def test_json_of_several_files_on_stdout_is_json_lines(
    capsys: pytest.CaptureFixture[str], reference: dict[str, Transcript]
) -> None:
    code, out, _ = _transcribe(capsys, "--format", "json", _audio("utt0.wav"), _audio("utt1.wav"))
    assert code == 0
    docs = [json.loads(line) for line in out.splitlines()]
    assert [d["text"] for d in docs] == [reference["utt0.wav"].text, reference["utt1.wav"].text]


def test_srt_output(capsys: pytest.CaptureFixture[str], reference: dict[str, Transcript]) -> None:
    code, out, _ = _transcribe(capsys, "--format", "srt", _audio("utt3.wav"))
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == "1"
    assert SRT_LINE.match(lines[1]) and "," in lines[1], lines[1]
    times = [line for line in lines if "-->" in line]
    assert len(times) == len(reference["utt3.wav"].segments) >= 1
    assert all(SRT_LINE.match(line) for line in times)
    assert out == FORMATS["srt"](reference["utt3.wav"])


def test_vtt_output(capsys: pytest.CaptureFixture[str], reference: dict[str, Transcript]) -> None:
    code, out, _ = _transcribe(capsys, "--format", "vtt", _audio("utt3.wav"))
    assert code == 0
    assert out.startswith("WEBVTT\n")
    times = [line for line in out.splitlines() if "-->" in line]
    assert times and all(VTT_LINE.match(line) for line in times)
    assert out == FORMATS["vtt"](reference["utt3.wav"])


def test_several_files_in_srt_are_headed_by_their_source(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, _ = _transcribe(capsys, "--format", "srt", _audio("utt2.wav"), _audio("utt1.wav"))
    assert code == 0
    headers = [line for line in out.splitlines() if line.startswith("==> ")]
    assert headers == [f"==> {_audio('utt2.wav')} <==", f"==> {_audio('utt1.wav')} <=="]


def test_unknown_format_is_rejected(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["transcribe", "--model", str(MODEL_DIR), "--format", "docx", str(_audio("utt2.wav"))])
    assert info.value.code == 2
    assert "--format" in capsys.readouterr().err


@pytest.mark.parametrize("fmt", ["txt", "json", "srt", "vtt"])
def test_output_dir_writes_one_file_per_input(
    capsys: pytest.CaptureFixture[str],
    reference: dict[str, Transcript],
    audio_copies: Path,
    tmp_path: Path,
    fmt: str,
) -> None:
    out_dir = tmp_path / "out" / "nested"
    # two inputs share the stem "utt2": they get two files, not one overwritten
    inputs = [audio_copies / "utt2.wav", audio_copies / "sub" / "utt1.wav", _audio("utt2.wav")]
    code, out, err = _transcribe(capsys, "--format", fmt, "--output-dir", out_dir, *inputs)
    assert code == 0, err
    assert out == ""
    written = sorted(p.name for p in out_dir.iterdir())
    assert written == sorted([f"utt2.{fmt}", f"utt1.{fmt}", f"utt2-2.{fmt}"])
    for name in ("utt1", "utt2"):
        text = (out_dir / f"{name}.{fmt}").read_text(encoding="utf-8")
        expected = reference[f"{name}.wav"]
        if fmt == "json":
            assert json.loads(text)["text"] == expected.text
        elif fmt == "txt":
            assert text == expected.text + "\n"
        else:
            assert text == FORMATS[fmt](expected)
    assert "3 of 3 files transcribed" in err


# ------------------------------------------------------------------- shards and resumed runs


def _batch(audio_copies: Path) -> list[Path]:
    """Six inputs, two stems repeated (utt2 and utt0 twice each)."""
    return [audio_copies / "utt2.wav", _audio("utt3.wav"), audio_copies / "sub" / "utt1.wav", _audio("utt2.wav"),
            audio_copies / "utt0.wav", _audio("utt0.wav")]


def _written(folder: Path) -> dict[str, str]:
    """The outputs in ``folder`` (not the hidden .partial files of unfinished writes): name -> text."""
    return {p.name: p.read_text() for p in folder.iterdir() if not p.name.startswith(".")}


def _one_run(capsys: pytest.CaptureFixture[str], audio_copies: Path, out_dir: Path) -> tuple[list[Path], dict[str, str]]:
    """The batch's inputs, and what one plain run over them writes into ``out_dir``."""
    inputs = _batch(audio_copies)
    assert _transcribe(capsys, "--output-dir", out_dir, *inputs)[0] == 0
    return inputs, _written(out_dir)


def test_shards_split_the_inputs_and_together_write_what_one_run_writes(
    capsys: pytest.CaptureFixture[str], audio_copies: Path, tmp_path: Path
) -> None:
    inputs, expected = _one_run(capsys, audio_copies, tmp_path / "whole")
    assert len(expected) == 6
    shared, parts = tmp_path / "shards", []
    for k in (1, 2, 3):
        code, _, err = _transcribe(capsys, "--shard", f"{k}/3", "--output-dir", shared, *inputs)
        assert code == 0, err
        [(count, seconds)] = re.findall(rf"shard {k}/3: (\d+) of 6 inputs, ([\d.]+) s of audio", err)
        parts.append((int(count), float(seconds)))
    assert _written(shared) == expected  # disjoint, all, same names
    assert sum(n for n, _ in parts) == 6
    longest = max(sf.info(str(f)).duration for f in inputs)
    loads = [s for _, s in parts]
    assert max(loads) - min(loads) <= longest + 0.1  # balanced by duration (4.3 / 6.3 / 4.9 s here)


def test_resume_skips_the_inputs_already_written_and_redoes_the_rest(
    capsys: pytest.CaptureFixture[str], audio_copies: Path, tmp_path: Path
) -> None:
    out_dir = tmp_path / "out"
    inputs, expected = _one_run(capsys, audio_copies, out_dir)
    (out_dir / "utt2-2.txt").unlink()  # as if the run had been killed before these two
    (out_dir / "utt3.txt").unlink()
    (out_dir / ".utt3.txt.partial").write_text("half")  # what a kill mid-write leaves: not an output
    code, _, err = _transcribe(capsys, "--resume", "--output-dir", out_dir, *inputs)
    assert code == 0, err
    assert "resuming: 4 of 6 inputs already have their output" in err
    assert "2 of 2 files transcribed" in err
    assert _written(out_dir) == expected
    code, _, err = _transcribe(capsys, "--resume", "--output-dir", out_dir, *inputs)
    assert code == 0 and "nothing to transcribe" in err


@pytest.mark.parametrize(("args", "words"), [
    (["--shard", "0/2"], ["--shard", "1 <= K <= N", "'0/2'"]),
    (["--shard", "3/2"], ["--shard", "'3/2'"]),
    (["--shard", "half"], ["--shard must be K/N", "'half'"]),
    (["--resume"], ["--resume needs --output-dir"]),
])  # fmt: skip
def test_bad_shard_and_resume_options(capsys: pytest.CaptureFixture[str], args: list[str], words: list[str]) -> None:
    code, out, err = _transcribe(capsys, *args, _audio("utt2.wav"))
    assert code == 2 and out == ""
    _assert_one_line_error(err, *words)


# ------------------------------------------------------------------------------ bad inputs


def test_bad_file_among_good_ones(
    capsys: pytest.CaptureFixture[str], reference: dict[str, Transcript], tmp_path: Path
) -> None:
    bad = tmp_path / "broken.wav"
    bad.write_text("this is not a wave file\n")
    missing = tmp_path / "gone.wav"
    code, out, err = _transcribe(
        capsys, _audio("utt2.wav"), bad, _audio("utt0.wav"), missing, _audio("utt1.wav")
    )
    assert code == 1
    assert _tab_lines(out) == {
        str(_audio(n)): reference[n].text for n in ("utt2.wav", "utt0.wav", "utt1.wav")
    }
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 2, err
    assert str(bad) in errors[0] and "not an audio file" in errors[0]
    assert str(missing) in errors[1] and "not found" in errors[1]
    summary = [line for line in err.splitlines() if "real-time factor" in line]
    assert len(summary) == 1 and summary[0].startswith("3 of 5 files transcribed"), err


def test_bad_file_with_output_dir_writes_the_good_ones(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    out_dir = tmp_path / "out"
    code, _, err = _transcribe(capsys, "--output-dir", out_dir, empty, _audio("utt2.wav"))
    assert code == 1
    assert [p.name for p in out_dir.iterdir()] == ["utt2.txt"]
    assert f"error: {empty}: file is empty" in err


def test_only_bad_files(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, out, err = _transcribe(capsys, tmp_path / "a.wav", tmp_path / "b.wav")
    assert code == 1 and out == ""
    assert "Traceback" not in err
    assert "0 of 2 files transcribed" in err and "real-time factor" not in err and "nan" not in err


def test_invalid_chunk_size_is_a_one_line_error(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _transcribe(capsys, "--chunk-size", "0", _audio("utt2.wav"))
    assert code != 0 and out == ""
    _assert_one_line_error(err, "chunk_size")


def test_missing_model(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, out, err = _run(capsys, "--model", tmp_path / "no-model", _audio("utt2.wav"))
    assert code != 0 and out == ""
    _assert_one_line_error(err, "no-model")


def _model_copy(folder: Path, config: bytes) -> Path:
    """The fixture model with its config.yaml replaced (other files linked, not copied)."""
    folder.mkdir()
    for f in MODEL_DIR.iterdir():
        if f.name != "config.yaml":
            (folder / f.name).symlink_to(f)
    (folder / "config.yaml").write_bytes(config)
    return folder


@pytest.mark.parametrize(
    ("config", "words"),
    [
        pytest.param(b"{{{ : : garbage\n\t- [", ("config.yaml", "YAML"), id="not-yaml"),
        pytest.param(b"just a sentence\n", ("config.yaml", "mapping"), id="not-a-mapping"),
        pytest.param(b"", ("config.yaml",), id="empty"),
        pytest.param(b"encoder: conformer\n", ("config.yaml", "conformer"), id="wrong-encoder"),
        pytest.param(
            b"encoder: chunkformer\ninput_dim: 80\noutput_dim: 64\nencoder_conf: 5\n",
            ("config.yaml", "encoder_conf"),
            id="encoder-conf-not-a-mapping",
        ),
        pytest.param(
            b"\xff\xfe\x00garbage \x80\x81\x82 bytes\n",
            ("config.yaml",),
            id="not-utf8",
        ),
    ],
)
def test_malformed_model_folder(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, config: bytes, words: tuple[str, ...]
) -> None:
    folder = _model_copy(tmp_path / "model", config)
    code, out, err = _run(capsys, "--model", folder, _audio("utt2.wav"))
    assert code != 0 and out == ""
    _assert_one_line_error(err, *words)


# ------------------------------------------------------------------------ installed script


def _console_script() -> str | None:
    found = shutil.which("echostream")
    if found is None:
        candidate = Path(sys.executable).parent / "echostream"
        found = str(candidate) if candidate.is_file() and os.access(candidate, os.X_OK) else None
    return found


def test_installed_console_script(reference: dict[str, Transcript], tmp_path: Path) -> None:
    script = _console_script()
    if script is None:
        pytest.skip("the echostream console script is not installed on PATH or next to python")
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"")
    result = subprocess.run(
        [script, "transcribe", "--model", str(MODEL_DIR), str(_audio("utt2.wav")), str(bad)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 1, result.stderr
    assert result.stdout == f"{_audio('utt2.wav')}\t{reference['utt2.wav'].text}\n"
    assert f"error: {bad}: file is empty" in result.stderr
    assert "real-time factor" in result.stderr and "Traceback" not in result.stderr


# ---------------------------------------------------------------- hardening (issue 9)


@pytest.mark.parametrize("verb", ["transcribe", "serve", "eval"])
@pytest.mark.parametrize("device", ["cuda", "cuda:3", "tpu"])
def test_an_unusable_device_is_one_line(capsys: pytest.CaptureFixture[str], tmp_path: Path, verb: str,
                                        device: str) -> None:
    import torch

    if device.startswith("cuda") and torch.cuda.is_available() and torch.cuda.device_count() > 3:
        pytest.skip("this machine has that GPU")
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(json.dumps({"id": "a", "audio": str(_audio("utt0.wav")), "text": "a", "duration": 1.0}) + "\n")
    args = {"transcribe": [_audio("utt0.wav")], "serve": ["--port", "0"], "eval": ["--manifest", manifest]}[verb]
    code = main([verb, "--model", str(MODEL_DIR), "--device", device, *map(str, args)])
    _, err = capsys.readouterr()
    assert code != 0
    _assert_one_line_error(err, repr(device))


def test_train_on_an_unusable_device_is_one_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    config = Path(__file__).resolve().parents[1] / "configs" / "finetune.yaml"
    code = main(["train", "--config", str(config), "--init", str(MODEL_DIR), "--out", str(tmp_path / "exp"),
                 "--device", "cuda"])
    _, err = capsys.readouterr()
    assert code != 0
    _assert_one_line_error(err, "'cuda' is not available")


@pytest.mark.parametrize("flag", ["--chunk-size", "--left-context", "--right-context"])
def test_absurd_context_sizes_are_refused_at_once(capsys: pytest.CaptureFixture[str], flag: str) -> None:
    code, out, err = _transcribe(capsys, flag, "100000", _audio("utt2.wav"))
    assert code != 0 and out == ""
    _assert_one_line_error(err, "above the maximum of 1024 frames")
    code = main(["serve", "--model", str(MODEL_DIR), "--port", "0", flag, "100000"])
    _, err = capsys.readouterr()
    assert code == 2
    _assert_one_line_error(err, "above the maximum of 1024 frames")


def test_output_dir_is_checked_before_decoding(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    decoded: list[object] = []
    monkeypatch.setattr(Model, "transcribe_iter", lambda *a, **k: decoded.append(a) or iter(()))
    code, _, err = _transcribe(capsys, "--output-dir", blocker / "out", _audio("utt2.wav"))
    assert code == 2 and decoded == []
    _assert_one_line_error(err, f"{blocker} is a file")


def test_each_output_is_written_as_soon_as_its_file_is_done(tmp_path: Path) -> None:
    """Files decoded one after another (--batch-seconds = --block-seconds): interrupting the run
    once the first output exists keeps it, and what was finished is all there."""
    import signal
    import time

    exe = shutil.which("echostream") or str(Path(sys.executable).with_name("echostream"))
    if not Path(exe).exists():
        pytest.skip("the echostream console script is not installed on PATH or next to python")
    out_dir = tmp_path / "out"
    inputs = [str(_audio("long.wav"))] * 40  # about 20 s of work: the interrupt comes well before the end
    # a test runner started in the background by a shell ignores SIGINT, and its children inherit
    # that: the command is started with SIGINT's default restored
    restore = "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); os.execv(sys.argv[1], sys.argv[1:])"
    process = subprocess.Popen(
        [sys.executable, "-c", restore, exe, "transcribe", "--model", str(MODEL_DIR), "--output-dir", str(out_dir),
         "--threads", "1", "--batch-seconds", "2", "--block-seconds", "2", *inputs],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    deadline = time.monotonic() + 120
    while not (out_dir / "long.txt").exists():
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    written = sorted(p.name for p in out_dir.iterdir() if not p.name.startswith("."))
    assert process.returncode == 130 and "interrupted" in err, err
    assert 1 <= len(written) < 40
    expected = load_model(MODEL_DIR).transcribe(_audio("long.wav"))[0].text
    assert all((out_dir / name).read_text().strip() == expected for name in written)


def test_a_file_corrupt_mid_way_keeps_what_came_before(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                                       model: Model) -> None:
    bad = _corrupt_flac(tmp_path)
    out_dir = tmp_path / "out"
    code, _, err = _transcribe(capsys, "--block-seconds", "5", "--output-dir", out_dir, bad, _audio("utt2.wav"))
    assert code == 1
    assert "flac decoder lost sync" in err and "kept the transcript of its first 10.0 s" in err
    samples, rate = sf.read(_audio("long.wav"), dtype="float32")
    first_ten = model.transcribe((samples[: 10 * rate], rate), block_seconds=5)[0].text
    assert (out_dir / "bad.incomplete.txt").read_text().strip() == first_ten != ""
    assert (out_dir / "utt2.txt").is_file() and not (out_dir / "bad.txt").exists()
    # --resume does not take the cut-short transcript for done: it tries the file again
    code, _, err = _transcribe(capsys, "--block-seconds", "5", "--output-dir", out_dir, "--resume", bad,
                               _audio("utt2.wav"))
    assert code == 1 and "1 of 2 inputs already have their output" in err and "flac decoder lost sync" in err


def _corrupt_flac(folder: Path) -> Path:
    """long.wav as FLAC with bytes garbled half-way: libsndfile fails after 10 s of it."""
    samples, rate = sf.read(_audio("long.wav"), dtype="float32")
    path = folder / "bad.flac"
    sf.write(path, samples, rate)
    data = bytearray(path.read_bytes())
    rng = random.Random(0)
    for i in range(len(data) // 2, len(data) // 2 + 2000):
        data[i] = rng.randrange(256)
    path.write_bytes(bytes(data))
    return path


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert re.fullmatch(r"echostream \d+\.\d+\.\d+\S*\n", capsys.readouterr().out)


def test_bundled_model_by_name_in_every_verb(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    samples = Path(__file__).resolve().parents[1] / "samples"
    code, out, err = _run(capsys, "--model", "default", samples / "options_16k.wav")
    reference = normalize_text((samples / "options_16k.txt").read_text(), NormalizerConfig())
    assert code == 0 and word_errors(reference, normalize_text(out, NormalizerConfig())).rate <= 0.35, (out, err)
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(json.dumps({"id": "a", "audio": str(samples / "options_16k.wav"),
                                    "text": (samples / "options_16k.txt").read_text().strip(), "duration": 3.0}) + "\n")
    assert main(["eval", "--model", "default", "--manifest", str(manifest)]) == 0
    assert "WER" in capsys.readouterr().out


def test_every_flag_has_help_with_its_default() -> None:
    from echostream.cli.main import build_parser

    def parsers(parser: argparse.ArgumentParser) -> Iterator[tuple[str, argparse.ArgumentParser]]:
        yield parser.prog, parser
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for child in action.choices.values():
                    yield from parsers(child)

    missing = []
    for prog, parser in parsers(build_parser()):
        text = " ".join(parser.format_help().split())
        for action in parser._actions:
            if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction, argparse._VersionAction)):
                continue
            name = action.option_strings[-1] if action.option_strings else action.dest
            if not action.help:
                missing.append(f"{prog} {name}")
            elif action.default not in (None, False) and f"(default: {action.default})" not in text:
                missing.append(f"{prog} {name}: default {action.default!r} not shown")
    assert missing == []


def test_one_side_of_a_stereo_call(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """--channel and a manifest's channel pick one side of a call; the default averages both."""
    import numpy as np

    from echostream.audio import load_audio

    samples = Path(__file__).resolve().parents[1] / "samples"
    agent, customer = load_audio(samples / "options_16k.wav"), load_audio(samples / "booking_16k.wav")
    n = max(agent.size, customer.size)
    call = np.zeros((n, 2), np.float32)
    call[: agent.size, 0], call[: customer.size, 1] = agent, customer
    sf.write(tmp_path / "call.wav", call, 16000)
    texts = {}
    for side in ("left", "right"):
        code, out, err = _run(capsys, "--model", "small_en", "--channel", side, tmp_path / "call.wav")
        assert code == 0, err
        texts[side] = out.strip()
    for column, name in enumerate(("options", "booking")):
        sf.write(tmp_path / f"{name}.wav", call[:, column], 16000)  # the same side as a mono file
    alone = {name: _run(capsys, "--model", "small_en", tmp_path / f"{name}.wav")[1].strip()
             for name in ("options", "booking")}  # fmt: skip
    assert texts == {"left": alone["options"], "right": alone["booking"]}
    assert "press two" in texts["left"] and "booking" in texts["right"]
    code, _, err = _run(capsys, "--model", "small_en", "--channel", "3", tmp_path / "call.wav")
    assert code != 0 and "has 2 channels; there is no channel 3" in err
    rows = [{"id": side, "audio": str(tmp_path / "call.wav"), "text": (samples / f"{name}_16k.txt").read_text().strip(),
             "duration": n / 16000, "channel": channel}
            for side, name, channel in (("agent", "options", 0), ("customer", "booking", 1))]  # fmt: skip
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert main(["eval", "--model", "small_en", "--manifest", str(tmp_path / "m.jsonl"), "--out",
                 str(tmp_path / "r.jsonl")]) == 0  # fmt: skip
    results = {r["id"]: r["hypothesis"] for r in map(json.loads, (tmp_path / "r.jsonl").read_text().splitlines())}
    assert results == {"agent": alone["options"], "customer": alone["booking"]}
