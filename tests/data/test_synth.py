"""Tests for echostream.data.synth: voice selection, planning, rendering with espeak-ng, failures."""

from __future__ import annotations

import os
import shutil
from collections import Counter
from pathlib import Path

import pytest
import soundfile as sf

from echostream.cli.main import main
from echostream.data.manifest import read_manifest, validate_manifest
from echostream.data.synth import (
    SynthConfig,
    SynthError,
    Voice,
    _plan,
    catalogue,
    is_evaluation_speaker,
    read_sentences,
    select_voices,
    synthesize,
)

SENTENCES = [
    "Good morning, how can I help you today?",
    "My account number is four five two one.",
    "Please call me back at half past three.",
]
HAVE_ESPEAK = shutil.which("espeak-ng") is not None and shutil.which("sox") is not None
needs_espeak = pytest.mark.skipif(
    not HAVE_ESPEAK, reason="espeak-ng or sox not installed (run .ci/install-tts)"
)


def _bin_with(tmp_path: Path, *tools: str) -> str:
    """A PATH holding only ``tools`` (links to the installed ones)."""
    folder = tmp_path / "bin"
    folder.mkdir(exist_ok=True)
    for tool in tools:
        found = shutil.which(tool)
        assert found is not None
        (folder / tool).symlink_to(found)
    return str(folder)


# --------------------------------------------------------------------------------------------
# Voices and planning (no engine needed)
# --------------------------------------------------------------------------------------------


def test_catalogue_names_the_documented_voices() -> None:
    espeak = {v.name for v in catalogue("espeak")}
    assert {"en-us", "en-gb-scotland+m7", "en-gb+f4", "en-029+m1"} <= espeak
    assert [v.speaker for v in catalogue("mbrola")] == [
        "mbrola:mb-us1",
        "mbrola:mb-us2",
        "mbrola:mb-us3",
        "mbrola:mb-en1",
    ]
    assert {"slt", "kal", "awb", "rms"} <= {v.name for v in catalogue("flite")}
    assert "kal_diphone" in {v.name for v in catalogue("festival")}
    with pytest.raises(SynthError, match="unknown TTS engine 'coqui'"):
        catalogue("coqui")


def test_selection_errors() -> None:
    with pytest.raises(SynthError, match="no flite voice matches 'zzz'"):
        select_voices("flite:zzz")
    with pytest.raises(SynthError, match="no voices named"):
        select_voices(" , ")


def test_missing_engines_are_reported_with_the_install_hint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no engine at all
    selection = select_voices("espeak:en-us,mbrola:mb-us1,flite:slt,festival:kal_diphone")
    assert selection.available == ()
    reasons = {m.voice.speaker: m.reason for m in selection.missing}
    assert reasons == {
        "espeak:en-us": "espeak-ng is not installed (run .ci/install-tts)",
        "mbrola:mb-us1": "espeak-ng is not installed (run .ci/install-tts)",
        "flite:slt": "flite is not installed (run .ci/install-tts)",
        "festival:kal_diphone": "festival is not installed (run .ci/install-tts)",
    }


def test_plan_balances_engines_and_depends_only_on_the_seed() -> None:
    voices = [Voice(engine="espeak", name=f"en-us+m{i}") for i in range(1, 8)]
    voices += [Voice(engine="mbrola", name="mb-us1"), Voice(engine="flite", name="slt")]
    sentences = [f"sentence {i}" for i in range(30)]
    config = SynthConfig(seed=7, renditions=2, id_prefix="t", rate=(0.9, 1.1), pitch=(-1.0, 1.0))
    jobs = _plan(sentences, voices, config)
    assert _plan(sentences, voices, config) == jobs
    assert _plan(sentences, voices, SynthConfig(seed=8, renditions=2, id_prefix="t")) != jobs
    assert Counter(j.voice.engine for j in jobs) == {"espeak": 20, "mbrola": 20, "flite": 20}
    assert len({j.voice for j in jobs if j.voice.engine == "espeak"}) == 7
    assert [j.id for j in jobs[:3]] == ["t-00000-0", "t-00000-1", "t-00001-0"]
    assert jobs[2].text == "sentence 1"
    assert all(0.9 <= j.rate <= 1.1 and -1 <= j.pitch <= 1 for j in jobs)


def test_config_and_sentence_file_checks(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="rate must satisfy"):
        SynthConfig(rate=(1.5, 1.0))
    with pytest.raises(ValueError, match="id_prefix"):
        SynthConfig(id_prefix="a b")
    (tmp_path / "s.txt").write_text("# comment\n\n  Hello   there. \nBye.\n", encoding="utf-8")
    assert read_sentences(tmp_path / "s.txt") == ["Hello there.", "Bye."]
    with pytest.raises(SynthError, match="sentence file not found"):
        read_sentences(tmp_path / "none.txt")


# --------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------


@needs_espeak
def test_three_sentences_with_espeak(tmp_path: Path) -> None:
    selection = select_voices("espeak:en-us+*,espeak:en-gb+*")
    assert selection.available and not selection.missing
    ticks: list[int] = []
    config = SynthConfig(seed=3, id_prefix="es")
    result = synthesize(
        SENTENCES, tmp_path / "out", selection.available, config, progress=ticks.append
    )
    assert result.failures == () and ticks == [1, 1, 1]
    rows = read_manifest(result.manifest)
    assert [r.id for r in rows] == ["es-00000", "es-00001", "es-00002"]
    assert [r.text for r in rows] == SENTENCES
    for row in rows:
        info = sf.info(row.audio)
        assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
        assert row.duration == pytest.approx(info.frames / 16000, abs=1e-3) and row.duration > 1.0
        assert row.speaker is not None and row.speaker.startswith("espeak:en-")
        assert row.language == "en" and Path(row.audio).parent == tmp_path / "out" / "wav"
    assert validate_manifest(rows) == (rows, [])
    # The same seed renders the same audio.
    again = synthesize(SENTENCES, tmp_path / "again", selection.available, config)
    assert [r.speaker for r in again.rows] == [r.speaker for r in rows]
    assert (tmp_path / "again" / "wav" / "es-00001.wav").read_bytes() == Path(
        rows[1].audio
    ).read_bytes()


@pytest.mark.skipif(
    shutil.which("flite") is None or shutil.which("sox") is None,
    reason="flite or sox not installed",
)
def test_a_failing_sentence_is_reported_and_skipped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = shutil.which("flite")
    fake = tmp_path / "bin" / "flite"
    fake.parent.mkdir()
    fake.write_text(
        "#!/bin/sh\n"
        'for a in "$@"; do case "$a" in *boom*) echo "cannot say that" >&2; exit 3;; esac; done\n'
        f'exec {real} "$@"\n'
    )
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}{os.pathsep}{os.environ['PATH']}")
    sentences = ["One two three.", "Say boom now.", "Four five six."]
    result = synthesize(
        sentences, tmp_path / "out", [Voice(engine="flite", name="slt")], SynthConfig(seed=1)
    )
    assert [r.id for r in result.rows] == ["synth-00000", "synth-00002"]
    (failure,) = result.failures
    assert failure.id == "synth-00001" and failure.speaker == "flite:slt"
    assert str(failure) == "synth-00001 (flite:slt): flite failed (exit 3): cannot say that"
    assert not (tmp_path / "out" / "wav" / "synth-00001.wav").exists()
    assert [r.id for r in read_manifest(result.manifest)] == ["synth-00000", "synth-00002"]


@needs_espeak
def test_cli_synth_warns_about_missing_voices(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "s.txt").write_text("\n".join(SENTENCES) + "\n")
    monkeypatch.setenv("PATH", _bin_with(tmp_path, "espeak-ng", "sox"))  # no mbrola, no flite
    code = main(
        [
            "synth",
            "--sentences",
            str(tmp_path / "s.txt"),
            "--out",
            str(tmp_path / "out"),
            "--voices",
            "espeak:en-gb-scotland+f?,mbrola:mb-us1,mbrola:mb-us2,flite:slt",
            "--rate",
            "0.9:1.1",
            "--pitch",
            "0",
            "--seed",
            "5",
        ]
    )
    err = capsys.readouterr().err
    assert code == 0
    assert "warning: 2 voices unavailable (mbrola is not installed (run .ci/install-tts)): " in err
    assert "mbrola:mb-us1, mbrola:mb-us2" in err and "flite:slt" in err
    assert "3 of 3 utterances" in err
    rows = read_manifest(tmp_path / "out" / "manifest.jsonl")
    assert [r.id for r in rows] == ["s-00000", "s-00001", "s-00002"]
    assert {r.speaker for r in rows} <= {f"espeak:en-gb-scotland+f{i}" for i in range(1, 5)}


def test_cli_synth_bad_range_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "s.txt").write_text("Hello.\n")
    code = main(
        [
            "synth",
            "--sentences",
            str(tmp_path / "s.txt"),
            "--out",
            str(tmp_path),
            "--rate",
            "fast",
            "--seed",
            "1",
        ]
    )
    assert code == 2 and "--rate: expected LOW:HIGH" in capsys.readouterr().err


@pytest.mark.skipif(shutil.which("flite") is None, reason="flite is not installed (.ci/install-tts)")
def test_cli_synth_names_the_evaluation_speaker(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "s.txt").write_text("Hello there.\n")
    args = ["synth", "--sentences", str(tmp_path / "s.txt"), "--seed", "1", "--pitch", "0", "--voices"]
    assert main([*args, "flite:slt", "--out", str(tmp_path / "slt")]) == 0
    assert "the CMU ARCTIC speaker slt is for evaluation only" in capsys.readouterr().err
    assert main([*args, "flite:awb", "--out", str(tmp_path / "awb")]) == 0
    assert "for evaluation only" not in capsys.readouterr().err


@pytest.mark.parametrize("engine,voice", [("rhvoice", "alan"), ("pico", "en-GB"), ("piper", "joe"), ("hibari", "heart")])
def test_rhvoice_pico_and_piper_render_at_the_rate_drawn(tmp_path: Path, engine: str, voice: str) -> None:
    chosen = select_voices(f"{engine}:{voice}")
    if not chosen.available:
        pytest.skip(f"{engine} not installed: {chosen.missing[0].reason}")
    durations = {}
    for rate in (0.8, 1.25):
        config = SynthConfig(rate=(rate, rate), pitch=(0.0, 0.0), seed=0, id_prefix=f"r{int(rate * 100)}")
        result = synthesize(SENTENCES[:1], tmp_path / str(rate), chosen.available, config)
        assert result.failures == () and result.rows[0].speaker == f"{engine}:{voice}"
        info = sf.info(result.rows[0].audio)
        assert info.samplerate == 16000 and info.channels == 1
        durations[rate] = result.rows[0].duration
    assert durations[0.8] > 1.15 * durations[1.25]  # slower speech lasts longer


def test_rhvoice_voices_and_their_evaluation_speaker() -> None:
    names = {v.name for v in catalogue("rhvoice")}
    assert names == {"alan", "bdl", "clb", "slt"}  # never evgeniy-eng or lyubov (non-commercial)
    assert is_evaluation_speaker(Voice(engine="rhvoice", name="slt"))
    assert not is_evaluation_speaker(Voice(engine="rhvoice", name="alan"))


@needs_espeak
def test_a_stopped_render_resumes_keeping_what_it_wrote(tmp_path: Path) -> None:
    voices = select_voices("espeak:en-us+m1").available
    config = SynthConfig(seed=2, id_prefix="r")
    whole = synthesize(SENTENCES, tmp_path / "whole", voices, config)
    out = tmp_path / "out"
    (out / "wav").mkdir(parents=True)
    kept = out / "wav" / "r-00001.wav"
    kept.write_bytes(Path(whole.rows[1].audio).read_bytes())  # what a stopped run had written
    before = kept.stat().st_mtime_ns
    resumed = synthesize(SENTENCES, out, voices, config)
    assert kept.stat().st_mtime_ns == before  # kept, not rendered again
    assert [(r.id, r.text, r.duration, r.speaker) for r in resumed.rows] == [
        (r.id, r.text, r.duration, r.speaker) for r in whole.rows
    ]
    for row, reference in zip(resumed.rows, whole.rows, strict=True):
        assert Path(row.audio).read_bytes() == Path(reference.audio).read_bytes()
