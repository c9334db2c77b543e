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
