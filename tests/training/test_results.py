"""Recipe result tables summed from `echostream eval --out` files."""

import json
from pathlib import Path

import pytest

from echostream.training.evaluation import char_errors, word_errors
from echostream.training.results import BEGIN, END, fill_block, groups_table, sets_table


def _write(path: Path, pairs: list[tuple[str, str, str]]) -> None:
    """Rows as `eval --out` writes them, scored by the evaluation's own functions."""
    lines = []
    for reference, hypothesis, group in pairs:
        w, c = word_errors(reference, hypothesis), char_errors(reference, hypothesis)
        lines.append(json.dumps({
            "id": reference, "reference": reference, "hypothesis": hypothesis,
            "word_errors": w.errors, "substitutions": w.substitutions, "insertions": w.insertions,
            "deletions": w.deletions, "words": w.reference_length, "char_errors": c.errors,
            "chars": c.reference_length, "duration": 1.0, "group": group,
        }))  # fmt: skip
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def test_tables_sum_errors_over_utterances_not_rates(tmp_path: Path) -> None:
    # 1 error in 4 words + 2 errors in 1 word = 3/5 = 60 %, not the mean of 25 % and 200 %
    _write(tmp_path / "test_c64_l128_r128.jsonl",
           [("the cat sat down", "the bat sat down", "espeak"), ("yes", "no no", "flite")])  # fmt: skip
    _write(tmp_path / "quiet_c64_l128_r128.jsonl", [("", "", "noise"), ("", "uh huh", "noise"), ("", "", "tone")])
    table = sets_table(tmp_path, {"test": "held-out", "quiet": "no speech", "absent": "x"},
                       ["c64_l128_r128", "c8_l32_r8"])  # fmt: skip
    rows = table.splitlines()
    assert rows[0] == "| set | utterances | WER 64/128/128 | CER 64/128/128 | WER 8/32/8 | CER 8/32/8 |"
    assert rows[2].startswith("| held-out | 2 | 60.00 | ")
    assert rows[2].endswith("| - | - |")  # the 8/32/8 file does not exist
    assert rows[3] == "| no speech | 3 | 1 of 3 clips with output | 2 words | - | - |"
    assert len(rows) == 4  # a set with no file at all is left out
    groups = groups_table(tmp_path, ["test", "quiet"], ["c64_l128_r128"]).splitlines()
    assert groups[2:] == ["| test | espeak | 25.00 |", "| test | flite | 200.00 |"]


def test_fill_block_replaces_only_the_block(tmp_path: Path) -> None:
    results = tmp_path / "RESULTS.md"
    results.write_text(f"# r\nhand text\n{BEGIN}\nold\n{END}\nafter\n", encoding="utf-8")
    fill_block(results, "new table\n")
    assert results.read_text(encoding="utf-8") == f"# r\nhand text\n{BEGIN}\nnew table\n{END}\nafter\n"
    results.write_text("no block", encoding="utf-8")
    with pytest.raises(ValueError, match="no <!-- results:begin -->"):
        fill_block(results, "x")


def test_run_summary_reports_best_validation_and_hours_over_resumes(tmp_path: Path) -> None:
    from echostream.training import experiment as ex
    from echostream.training.results import run_summary

    for step, wall in ((20, 100.0), (40, 200.0), (60, 50.0)):  # resumed after step 40
        ex.append_record(tmp_path / ex.TRAIN_LOG, {"step": step, "audio_per_second": 40.0, "wall_seconds": wall})
    for step, wer in ((40, 0.5), (60, 0.4)):
        ex.record_validation(tmp_path, ex.Validation(step=step, epoch=1, loss=3.0, wer=wer, cer=0.2, utterances=9))
    assert run_summary(tmp_path, "valid") == [
        "- Training: 60 steps (1 complete epochs); best validation (valid, 64/128/128) at step 60: WER 40.00%, loss 3.000.",
        "- Cost: 0.1 hours of training on this machine; 40.0 audio seconds per wall second at the end.",
    ]  # 250 s; no average.pt: no model line


def test_fill_block_makes_a_missing_file_when_given_a_title(tmp_path: Path) -> None:
    results = tmp_path / "RESULTS.md"
    fill_block(results, "table", "recipe: results")
    assert results.read_text(encoding="utf-8") == f"# recipe: results\n\n{BEGIN}\ntable\n{END}\n"


def test_validation_curve_sums_hours_over_resumes(tmp_path: Path) -> None:
    from echostream.training import experiment as ex
    from echostream.training.results import validation_curve

    for step, wall in ((20, 360.0), (40, 720.0), (60, 360.0)):  # resumed after step 40
        ex.append_record(tmp_path / ex.TRAIN_LOG, {"step": step, "audio_per_second": 40.0, "wall_seconds": wall})
    for step, wer in ((40, 0.5), (50, 0.45), (60, 0.4)):
        ex.record_validation(tmp_path, ex.Validation(step=step, epoch=1, loss=3.0, wer=wer, cer=0.2, utterances=9))
    assert validation_curve(tmp_path) == [(0.2, 40, 0.5, 0.2), (0.2, 50, 0.45, 0.2), (0.3, 60, 0.4, 0.2)]


def test_plots_are_written_as_png(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib", reason="plots need matplotlib (echostream[bench])")
    from echostream.training import experiment as ex
    from echostream.training.results import plot_sets, plot_validation

    ex.append_record(tmp_path / ex.TRAIN_LOG, {"step": 10, "audio_per_second": 40.0, "wall_seconds": 60.0})
    ex.record_validation(tmp_path, ex.Validation(step=10, epoch=0, loss=3.0, wer=0.5, cer=0.2, utterances=9))
    plot_validation({"run": tmp_path}, tmp_path / "valid.png")
    _write(tmp_path / "test_c64_l128_r128.jsonl", [("the cat", "the bat", "espeak")])
    _write(tmp_path / "quiet_c64_l128_r128.jsonl", [("", "", "noise")])
    plot_sets(tmp_path, {"test": "t", "quiet": "q"}, ["c64_l128_r128", "c8_l32_r8"], tmp_path / "sets.png")
    for name in ("valid.png", "sets.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
