"""Scoring and ``echostream eval``."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import soundfile as sf

from echostream import load_model
from echostream.cli.main import main
from echostream.data.manifest import Utterance, read_manifest, write_manifest
from echostream.training.evaluation import (
    ErrorCounts,
    EvalReport,
    UtteranceResult,
    char_errors,
    evaluate,
    group_of,
    read_report,
    word_errors,
    write_results,
)
from model_folders import FIXTURE_MODEL

needs_model = pytest.mark.skipif(
    not (FIXTURE_MODEL / "config.yaml").is_file(), reason=f"fixture model missing: {FIXTURE_MODEL}"
)


def test_error_counts() -> None:
    w = word_errors("a b c d", "a x c d e")
    assert (w.substitutions, w.insertions, w.deletions, w.reference_length) == (1, 1, 0, 4)
    assert w.rate == 0.5
    assert word_errors("a b", "").deletions == 2
    assert char_errors("ab", "ab").rate == 0.0
    assert (
        ErrorCounts(deletions=1, reference_length=2) + ErrorCounts(insertions=2, reference_length=3)
    ).rate == 0.6


def test_a_written_report_reads_back_with_its_rates(tmp_path: Path) -> None:
    rows = [("a", "one two three", "one too three", 1.5, "espeak"), ("b", "four five", "four", 2.0, None)]
    report = EvalReport([UtteranceResult(i, r, h, word_errors(r, h), char_errors(r, h), d, g)
                         for i, r, h, d, g in rows], 3.5, 1.0)
    write_results(tmp_path / "r.jsonl", report)
    back = read_report(tmp_path / "r.jsonl")
    assert back.words == report.words == ErrorCounts(1, 0, 1, 5)
    assert back.chars.rate == report.chars.rate and back.audio_seconds == 3.5
    assert [u.group for u in back.utterances] == ["espeak", None]
    (tmp_path / "bad.jsonl").write_text('{"id": "a"}\n')
    with pytest.raises(ValueError, match="bad.jsonl:1: not a scored utterance"):
        read_report(tmp_path / "bad.jsonl")


def test_group_of_takes_the_prefix(corpus) -> None:  # type: ignore[no-untyped-def]
    assert [group_of(r, "speaker") for r in corpus.rows[:3]] == ["espeak", "espeak", "flite"]
    assert group_of(corpus.rows[0], None) is None
    with pytest.raises(ValueError, match="cannot group by"):
        group_of(corpus.rows[0], "text")


def test_eval_of_the_bundled_model_on_the_samples_counts_known_edits(tmp_path: Path) -> None:
    """The bundled model on the three samples, scored against references with known edits made
    to its own output (a word deleted, one substituted, one inserted): exactly those counts, for
    each utterance and in total."""
    model = load_model("default")
    samples = Path(__file__).resolve().parents[2] / "samples"
    files = sorted(samples.glob("*.wav"))
    rows = [Utterance(id=f.stem, audio=str(f), text="x", duration=sf.info(f).duration) for f in files]
    hypotheses = [model.transcribe(f, chunk_size=16, left_context=32, right_context=16)[0].text for f in files]
    assert all(len(h.split()) >= 4 for h in hypotheses)
    references = []
    for i, hyp in enumerate(hypotheses):
        words = hyp.split()
        if i == 0:
            words = words[1:]  # the hypothesis has one word the reference lacks: an insertion
        elif i == 1:
            words[2] = "zebra"  # a substitution
        else:
            words.insert(1, "quietly")  # the hypothesis lacks it: a deletion
        references.append(" ".join(words))
    report = evaluate(model, [replace(r, text=ref) for r, ref in zip(rows, references)],
                      chunk_size=16, left_context=32, right_context=16, normalizer=None)
    edits = [(u.words.insertions, u.words.substitutions, u.words.deletions) for u in report.utterances]
    assert edits == [(1, 0, 0), (0, 1, 0), (0, 0, 1)]
    assert report.words.errors == 3 and report.words.reference_length == sum(len(r.split()) for r in references)


@needs_model
def test_eval_command(corpus, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:  # type: ignore[no-untyped-def]
    rows = read_manifest(corpus.train)
    manifest = tmp_path / "m.jsonl"
    missing = replace(rows[1], id="gone", audio=str(tmp_path / "gone.wav"), text="x", offset=0.5)
    write_manifest(manifest, [*rows, missing])
    out = tmp_path / "results.jsonl"
    code = main([
        "eval", "--manifest", str(manifest), "--model", str(FIXTURE_MODEL), "--chunk-size", "8",
        "--left-context", "32", "--right-context", "8", "--group-by", "speaker", "--worst", "2", "--out", str(out),
    ])  # fmt: skip
    stdout, stderr = capsys.readouterr()
    assert code == 0
    lines = stdout.splitlines()
    assert lines[0].startswith("WER ") and "substitutions" in lines[0] and "insertions" in lines[0]
    assert lines[1].startswith("CER ")
    assert "real-time factor" in stdout and "left out: 1 unreadable" in stdout
    assert (
        "by speaker (up to the first ':'):" in stdout
        and "  espeak  WER" in stdout
        and "  mbrola  WER" in stdout
    )
    assert "worst 2 utterances:" in stdout and "ref: " in stdout and "hyp: " in stdout
    assert "warning: gone:" in stderr
    results = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in results] == [r.id for r in rows]
    assert {r["group"] for r in results} == {"espeak", "flite", "mbrola"}
    assert sum(r["word_errors"] for r in results) > 0


@needs_model
def test_eval_with_nothing_readable_reports_no_rate(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(
        json.dumps({"id": "a", "audio": "nowhere.wav", "text": "hi", "duration": 1.0}) + "\n"
    )
    code = main(["eval", "--manifest", str(manifest), "--model", str(FIXTURE_MODEL)])
    stdout, stderr = capsys.readouterr()
    assert code == 1
    assert (
        stdout.strip()
        == "no utterance could be scored (1 unreadable, 0 with an empty transcript): WER and CER undefined"
    )
    assert "warning: a:" in stderr and "not found" in stderr


@pytest.mark.parametrize("where", ["folder", "under_a_file"])
def test_eval_refuses_an_unwritable_out_before_decoding(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], where: str
) -> None:
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(json.dumps({"id": "a", "audio": "nowhere.wav", "text": "hi", "duration": 1.0}) + "\n")
    (tmp_path / "a_file").write_text("x")
    out = tmp_path if where == "folder" else tmp_path / "a_file" / "results.jsonl"
    code = main(["eval", "--manifest", str(manifest), "--model", "/nonexistent/model", "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1  # refused before the model is even looked for
    assert ("is a folder" in err) if where == "folder" else (f"{tmp_path / 'a_file'} is a file" in err)


def test_speechless_rows_count_the_words_output_for_them(corpus, tmp_path: Path,  # type: ignore[no-untyped-def]
                                                         capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    import numpy as np

    noise = tmp_path / "noise.wav"
    sf.write(noise, 0.3 * np.random.default_rng(0).standard_normal(32000), 16000)
    rows = [corpus.rows[0], Utterance(id="noise", audio=str(noise), text="", duration=2.0)]
    manifest = tmp_path / "m.jsonl"
    write_manifest(manifest, rows)
    model = load_model(FIXTURE_MODEL)
    plain = evaluate(model, rows, chunk_size=8, left_context=16, right_context=4, normalizer=None)
    scored = evaluate(model, rows, chunk_size=8, left_context=16, right_context=4, normalizer=None,
                      score_empty=True)  # fmt: skip
    assert plain.skipped_empty == 1 and [u.id for u in plain.utterances] == [rows[0].id]
    assert scored.skipped_empty == 0 and [u.id for u in scored.utterances] == [rows[0].id, "noise"]
    silent = scored.utterances[1]
    assert silent.words.reference_length == 0 and silent.words.insertions == len(silent.hypothesis.split())
    assert scored.words.reference_length == plain.words.reference_length
    assert main(["eval", "--manifest", str(manifest), "--model", str(FIXTURE_MODEL), "--score-empty",
                 "--chunk-size", "8", "--left-context", "16", "--right-context", "4"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert f"without speech: 1 utterances, {int(bool(silent.hypothesis))} with output, " in out
