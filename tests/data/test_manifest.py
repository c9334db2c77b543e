"""Tests for echostream.data.manifest: JSONL round trip, importers, validation, the CLI verbs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from echostream.cli.main import main
from echostream.data.manifest import (
    ManifestError,
    ProblemKind,
    Utterance,
    import_kaldi_dir,
    import_paired_dir,
    problem_counts,
    read_manifest,
    validate_manifest,
    write_manifest,
)


def _wav(path: Path, seconds: float, rate: int = 16000) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(round(seconds * rate)) / rate
    sf.write(path, (0.1 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), rate, subtype="PCM_16")
    return path


# --------------------------------------------------------------------------------------------
# Reading and writing
# --------------------------------------------------------------------------------------------


def test_round_trip_keeps_every_field(tmp_path: Path) -> None:
    audio = _wav(tmp_path / "audio" / "a.wav", 1.0)
    rows = [
        Utterance(id="a", audio=str(audio), text="xin chào", duration=1.0),
        Utterance(
            id="b",
            audio=str(audio),
            text="hello",
            duration=0.25,
            offset=0.5,
            speaker="spk1",
            language="en",
            channel=1,
        ),
    ]
    manifest = tmp_path / "lists" / "m.jsonl"
    write_manifest(manifest, rows)
    assert read_manifest(manifest) == rows
    first = json.loads(manifest.read_text(encoding="utf-8").splitlines()[0])
    # Relative to the manifest's folder, optional keys only when set, text not escaped.
    assert first == {"id": "a", "audio": "../audio/a.wav", "text": "xin chào", "duration": 1.0}
    assert "xin chào" in manifest.read_text(encoding="utf-8")


def test_relative_paths_resolve_against_the_manifest_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _wav(tmp_path / "corpus" / "wav" / "x.wav", 0.5)
    manifest = tmp_path / "corpus" / "m.jsonl"
    manifest.write_text('{"id": "x", "audio": "wav/x.wav", "text": "hi", "duration": 0.5}\n')
    monkeypatch.chdir(tmp_path)  # somewhere else than the manifest's folder
    (row,) = read_manifest("corpus/m.jsonl")
    assert Path(row.audio).resolve() == (tmp_path / "corpus" / "wav" / "x.wav").resolve()
    good, problems = validate_manifest([row])
    assert good == [row] and problems == []


def test_moving_manifest_and_audio_together_keeps_it_valid(tmp_path: Path) -> None:
    audio = _wav(tmp_path / "old" / "wav" / "x.wav", 0.5)
    write_manifest(
        tmp_path / "old" / "m.jsonl", [Utterance(id="x", audio=str(audio), text="hi", duration=0.5)]
    )
    (tmp_path / "old").rename(tmp_path / "new")
    good, problems = validate_manifest(read_manifest(tmp_path / "new" / "m.jsonl"))
    assert len(good) == 1 and not problems


def _linked_data_folder(tmp_path: Path) -> Path:
    """shared/x.wav, and repo/data: a link to disk/deeper/data (recipes link data/ to a bigger
    disk while their manifests point at ../shared audio); returns the audio."""
    audio = _wav(tmp_path / "shared" / "x.wav", 0.5)
    (tmp_path / "disk" / "deeper" / "data").mkdir(parents=True)
    (tmp_path / "repo").mkdir()
    (tmp_path / "repo" / "data").symlink_to(tmp_path / "disk" / "deeper" / "data")
    return audio


def test_a_manifest_in_a_linked_folder_finds_audio_outside_it_by_either_path(
    tmp_path: Path,
) -> None:
    audio = _linked_data_folder(tmp_path)
    row = Utterance(id="x", audio=str(audio), text="hi", duration=0.5)
    write_manifest(tmp_path / "repo" / "data" / "m.jsonl", [row])
    for path in (
        tmp_path / "repo" / "data" / "m.jsonl",
        tmp_path / "disk" / "deeper" / "data" / "m.jsonl",
    ):
        (read,) = read_manifest(path)
        assert Path(read.audio).resolve() == audio.resolve(), path


def test_a_manifest_written_relative_to_the_link_name_still_reads_through_the_link(
    tmp_path: Path,
) -> None:
    # written before paths were made relative to the folder on disk: "../../shared" from repo/data
    audio = _linked_data_folder(tmp_path)
    manifest = tmp_path / "repo" / "data" / "m.jsonl"
    manifest.write_text(
        '{"id": "x", "audio": "../../shared/x.wav", "text": "hi", "duration": 0.5}\n'
    )
    (read,) = read_manifest(manifest)
    assert Path(read.audio).resolve() == audio.resolve()


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"id": "a", "audio": "a.wav", "text": "t", "duration": 1, "extra": 1}', ":2: "),
        (
            '{"id": "a", "audio": "a.wav", "text": "t", "duration": 1, "extra": 1}',
            "extra: unknown key",
        ),
        ('{"id": "a", "audio": "a.wav", "text": "t"}', "duration: missing key"),
        (
            '{"id": "a", "audio": "a.wav", "text": "t", "duration": "1.0"}',
            "duration: expected float",
        ),
        ('{"id": "a", "audio": "a.wav", "text": 5, "duration": 1.0}', "text: expected str"),
        ('{"id": "a", "audio": "a.wav", "text": "t", "duration": -1}', "duration must be >= 0"),
        ('{"id": "a", "audio": "a.wav"', "not valid JSON"),
        ('["a", "a.wav"]', "expected a JSON object"),
    ],
)
def test_bad_lines_are_one_line_errors_naming_file_and_line(
    tmp_path: Path, line: str, message: str
) -> None:
    manifest = tmp_path / "m.jsonl"
    good = '{"id": "z", "audio": "z.wav", "text": "t", "duration": 1}'
    manifest.write_text(f"{good}\n{line}\n", encoding="utf-8")
    with pytest.raises(ManifestError) as err:
        read_manifest(manifest)
    assert message in str(err.value)
    assert f"{manifest}:2" in str(err.value) and "\n" not in str(err.value)


def test_missing_and_non_utf8_manifests(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="manifest not found"):
        read_manifest(tmp_path / "nope.jsonl")
    (tmp_path / "latin.jsonl").write_bytes(b'{"text": "caf\xe9"}\n')
    with pytest.raises(ManifestError, match="not UTF-8"):
        read_manifest(tmp_path / "latin.jsonl")


# --------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------


def test_validation_sets_bad_rows_aside_with_counts(tmp_path: Path) -> None:
    one = str(_wav(tmp_path / "one.wav", 1.0))
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"RIFF0000WAVEnot really audio at all")
    rows = [
        Utterance(id="ok", audio=one, text="fine", duration=1.05),  # within 0.1 s
        Utterance(id="seg", audio=one, text="part", duration=0.4, offset=0.5),
        Utterance(id="gone", audio=str(tmp_path / "missing.wav"), text="x", duration=1.0),
        Utterance(id="broken", audio=str(broken), text="x", duration=1.0),
        Utterance(id="silent", audio=one, text="  ", duration=1.0),
        Utterance(id="long", audio=one, text="x", duration=1.3),
        Utterance(id="late", audio=one, text="x", duration=0.5, offset=0.7),
        Utterance(id="ok", audio=one, text="again", duration=1.0),
    ]
    good, problems = validate_manifest(rows)
    assert [r.id for r in good] == ["ok", "seg"]
    assert [(p.id, p.kind) for p in problems] == [
        ("gone", ProblemKind.MISSING_AUDIO),
        ("broken", ProblemKind.UNREADABLE_AUDIO),
        ("silent", ProblemKind.EMPTY_TEXT),
        ("long", ProblemKind.DURATION_MISMATCH),
        ("late", ProblemKind.DURATION_MISMATCH),
        ("ok", ProblemKind.DUPLICATE_ID),
    ]
    assert problem_counts(problems) == {
        ProblemKind.DURATION_MISMATCH: 2,
        ProblemKind.MISSING_AUDIO: 1,
        ProblemKind.UNREADABLE_AUDIO: 1,
        ProblemKind.EMPTY_TEXT: 1,
        ProblemKind.DUPLICATE_ID: 1,
    }
    assert all("\n" not in str(p) for p in problems)
    assert "broken.wav" in str(problems[1])


def test_validation_tolerance_and_progress(tmp_path: Path) -> None:
    one = str(_wav(tmp_path / "one.wav", 1.0))
    rows = [Utterance(id="a", audio=one, text="x", duration=1.2)]
    assert validate_manifest(rows, tolerance=0.25)[0] == rows
    assert validate_manifest(rows)[0] == []
    ticks: list[int] = []
    validate_manifest(rows * 3, progress=ticks.append)
    assert ticks == [1, 1, 1]
    for bad in (-1.0, float("nan")):  # NaN would let every duration pass
        with pytest.raises(ValueError, match="duration tolerance must be"):
            validate_manifest(rows, tolerance=bad)


def test_validation_sets_aside_a_channel_the_file_does_not_have(tmp_path: Path) -> None:
    mono = str(_wav(tmp_path / "mono.wav", 1.0))
    rows = [Utterance(id="a", audio=mono, text="x", duration=1.0, channel=0),
            Utterance(id="b", audio=mono, text="x", duration=1.0, channel=1)]  # fmt: skip
    good, problems = validate_manifest(rows)
    assert [r.id for r in good] == ["a"]
    assert [p.id for p in problems] == ["b"] and "no channel 1" in problems[0].message


def test_decode_catches_corrupt_sample_data(tmp_path: Path) -> None:
    flac = _wav(tmp_path / "a.flac", 1.0)
    data = bytearray(flac.read_bytes())
    data[200:] = b"\x00" * (len(data) - 200)  # header intact, frames destroyed
    flac.write_bytes(bytes(data))
    rows = [Utterance(id="a", audio=str(flac), text="x", duration=1.0)]
    assert validate_manifest(rows)[0] == rows  # the header alone looks fine
    good, problems = validate_manifest(rows, decode=True)
    assert good == [] and problems[0].kind == ProblemKind.UNREADABLE_AUDIO


# --------------------------------------------------------------------------------------------
# Importers
# --------------------------------------------------------------------------------------------


def test_import_kaldi_whole_recordings(tmp_path: Path) -> None:
    _wav(tmp_path / "audio" / "r1.wav", 1.5)
    _wav(tmp_path / "audio" / "r 2.wav", 0.5)
    data = tmp_path / "data" / "train"
    data.mkdir(parents=True)
    (data / "wav.scp").write_text(
        "r1 audio/r1.wav\nr2 audio/r 2.wav\nr3 sph2pipe -f wav r3.sph |\n"
    )
    (data / "text").write_text("r1 HELLO THERE\nr2 xin chào\nr3 piped\nr4 no audio\n")
    (data / "utt2spk").write_text("r1 alice\nr2 bob\nr3 carol\nr4 dan\n")
    rows, problems = import_kaldi_dir(data, audio_root=tmp_path, language="en")
    assert [(r.id, r.text, r.speaker, r.offset, r.language) for r in rows] == [
        ("r1", "HELLO THERE", "alice", None, "en"),
        ("r2", "xin chào", "bob", None, "en"),
    ]
    assert rows[0].duration == pytest.approx(1.5)
    assert rows[1].audio.endswith("r 2.wav")
    assert [(p.id, p.kind) for p in problems] == [
        ("r3", ProblemKind.UNSUPPORTED_AUDIO),
        ("r4", ProblemKind.MISSING_AUDIO),
    ]


def test_import_kaldi_segments(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _wav(tmp_path / "rec.wav", 3.0)
    data = tmp_path / "data"
    data.mkdir()
    (data / "wav.scp").write_text(f"rec {tmp_path / 'rec.wav'}\n")
    bad = "u5 rec -1 1\nu6 rec 0 inf\nu7 rec nan 1\nu8 rec 0 5\n"  # set aside, the others imported
    (data / "segments").write_text("u1 rec 0.0 1.0\nu2 rec 1.5 -1\nu3 rec 2.0 2.0\n" + bad)
    (data / "text").write_text("u1 one\nu2 two\nu3 three\nu4 four\n" + "".join(f"u{i} x\n" for i in range(5, 9)))
    monkeypatch.chdir(tmp_path)
    rows, problems = import_kaldi_dir(data)
    assert [(r.id, r.offset, r.duration) for r in rows] == [("u1", 0.0, 1.0), ("u2", 1.5, 1.5)]
    assert [p.id for p in problems] == ["u3", "u4", "u5", "u6", "u7", "u8"]
    assert "lasts 3.000 s" in problems[-1].message
    assert validate_manifest(rows) == (rows, [])


def test_import_kaldi_errors(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="wav.scp: file not found"):
        import_kaldi_dir(tmp_path)
    (tmp_path / "wav.scp").write_text("a a.wav\na b.wav\n")
    (tmp_path / "text").write_text("a hi\n")
    with pytest.raises(ManifestError, match=r"wav.scp:2: a appears twice"):
        import_kaldi_dir(tmp_path)


def test_import_paired_folder(tmp_path: Path) -> None:
    _wav(tmp_path / "a.wav", 1.0)
    (tmp_path / "a.txt").write_text("  Hello\n  world \n", encoding="utf-8")
    _wav(tmp_path / "spk" / "b.flac", 0.5)
    (tmp_path / "spk" / "b.txt").write_text("Việt Nam", encoding="utf-8")
    _wav(tmp_path / "c.wav", 0.5)  # no transcript
    (tmp_path / "d.txt").write_text("no audio")
    (tmp_path / "notes.md").write_text("ignored")
    rows, problems = import_paired_dir(tmp_path, language="vi")
    assert [(r.id, r.text, r.language) for r in rows] == [
        ("a", "Hello world", "vi"),
        ("spk/b", "Việt Nam", "vi"),
    ]
    assert rows[1].duration == pytest.approx(0.5)
    assert [(p.id, p.kind) for p in problems] == [
        ("c", ProblemKind.MISSING_TEXT),
        ("d", ProblemKind.MISSING_AUDIO),
    ]


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------


def test_cli_import_and_validate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    corpus = tmp_path / "corpus"
    _wav(corpus / "a.wav", 1.0)
    (corpus / "a.txt").write_text("hello")
    _wav(corpus / "b.wav", 1.0)
    (corpus / "b.txt").write_text("")
    assert main(["manifest", "import-folder", str(corpus), "--out", str(tmp_path / "m.jsonl")]) == 0
    assert len(read_manifest(tmp_path / "m.jsonl")) == 2
    code = main(
        ["manifest", "validate", str(tmp_path / "m.jsonl"), "--out", str(tmp_path / "good.jsonl")]
    )
    err = capsys.readouterr().err
    assert code == 1
    assert "warning: b: empty text" in err and "1 good rows" in err and "1 empty text" in err
    assert [r.id for r in read_manifest(tmp_path / "good.jsonl")] == ["a"]
    assert main(["manifest", "validate", str(tmp_path / "good.jsonl")]) == 0


def test_cli_bad_manifest_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "m.jsonl").write_text("{oops\n")
    assert main(["manifest", "validate", str(tmp_path / "m.jsonl")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "m.jsonl:1: not valid JSON" in err
