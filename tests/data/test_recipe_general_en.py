"""Tests for recipes/general_en: text cleaning, the voice lists, and the targets table of
results.py (the recipe's corpus and model are made by run.sh, not here)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from echostream.data.manifest import Utterance, write_manifest
from echostream.training.evaluation import char_errors, word_errors

REPO = Path(__file__).resolve().parents[2]
RECIPE = REPO / "recipes" / "general_en"


def _module(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"general_en_{path.stem}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def text() -> ModuleType:
    return _module(RECIPE / "text.py")


@pytest.fixture(scope="module")
def results() -> ModuleType:
    return _module(RECIPE / "results.py")


def test_clean_spells_small_numbers_and_drops_what_a_voice_would_not_read(text: ModuleType) -> None:
    assert text.clean("I have 3 cats and 12 dogs.") == "I have three cats and twelve dogs."
    assert text.clean("It cost 1500 dollars in total.") is None  # a number it does not spell
    assert text.clean("See https://example.com for more.") is None
    assert text.clean("Too short.") is None
    assert text.clean("Tea costs 2.50 here today.") is None  # a decimal is not a small number
    assert text.clean("Caf\u00e9 au lait is nice.") is None  # not ASCII: engines differ on it
    assert text.clean("It\u2019s a \u201cgood\u201d day, isn\u2019t it?") == "It's a \"good\" day, isn't it?"


def test_training_voices_never_include_evaluation_voices() -> None:
    """festival and slt are evaluation-only (every engine); the held-out variants are not trained on."""
    out = subprocess.run(["bash", "-c", f'source "{RECIPE}/voices.sh"; echo "$TRAIN_VOICES"; echo "$NEW_VOICES"'],
                         capture_output=True, text=True, check=True).stdout.splitlines()  # fmt: skip
    train, new = (set(line.split(",")) for line in out)
    assert not any("festival" in v or "slt" in v for v in train | new)
    assert not train & new
    assert "espeak:*+m[1-5]" in train and "espeak:*+m[67]" in new  # variants split, not shared


def _rows(path: Path, pairs: list[tuple[str, str, str]]) -> None:
    lines = []
    for uid, reference, hypothesis in pairs:
        w, c = word_errors(reference, hypothesis), char_errors(reference, hypothesis)
        lines.append(json.dumps({
            "id": uid, "reference": reference, "hypothesis": hypothesis, "word_errors": w.errors,
            "substitutions": w.substitutions, "insertions": w.insertions, "deletions": w.deletions,
            "words": w.reference_length, "char_errors": c.errors, "chars": c.reference_length, "duration": 1.0,
        }))  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def test_targets_compare_measurements_with_the_issue(results: ModuleType, tmp_path: Path) -> None:
    evals, data = tmp_path / "exp" / "general" / "eval", tmp_path / "data"
    ctx = "c64_l128_r128"
    ten = "one two three four five six seven eight nine ten"
    _rows(evals / f"test_festival_{ctx}.jsonl", [("a", ten, ten.replace("two", "too"))])  # 10 %
    _rows(evals / f"test_new_voices_{ctx}.jsonl", [("a", ten, "one two three four five six seven")])  # 30 %
    _rows(evals / f"longform_parts_{ctx}.jsonl", [("a", ten, ten.replace("two", "too"))])  # 10 %
    _rows(evals / f"test_longform_{ctx}.jsonl", [("a", ten, ten.replace("two", "too").replace("six", "sex"))])  # 20 %
    _rows(evals / f"test_speechless_{ctx}.jsonl", [("q1", "", ""), ("q2", "", "uh")])
    write_manifest(data / "test_speechless" / "manifest.jsonl", [
        Utterance(id="q1", audio="q1.wav", text="", duration=1.0, speaker="speechless:silence"),
        Utterance(id="q2", audio="q2.wav", text="", duration=1.0, speaker="speechless:white")])  # fmt: skip
    table = results.targets(evals)
    assert "| festival (unseen engine) WER <= 20% | 10.00% | yes |" in table
    assert "| new voices of the training engines WER <= 12% | 30.00% | no |" in table
    assert "| 10-minute file WER within 1.3x of its sentences one by one | 2.00x | no |" in table
    assert "| silence, noise, tones: no words | 1 words on 2 clips | no |" in table
    assert not any("FSDD" in line for line in table)  # not measured: no row rather than a made-up one
    kinds = results.speechless_kinds(evals, data)
    assert kinds == ["- 64/128/128: silence 0 of 1 clips with output (0 words); white 1 of 1 clips with output (1 words)"]


@pytest.mark.parametrize("script", ["general_en/run.sh", "general_en/voices.sh", "callbot/run.sh",
                                    "synth_en/run.sh", "synth_en/compare_encoders.sh", "common.sh", "python.sh"])
def test_recipe_scripts_parse(script: str) -> None:
    done = subprocess.run(["bash", "-n", str(REPO / "recipes" / script)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
