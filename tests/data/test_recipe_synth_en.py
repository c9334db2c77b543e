"""Tests for recipes/synth_en: the shipped sentences, their split, the FSDD manifests, the scripts."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from echostream.data.manifest import read_manifest
from echostream.text.normalize import normalize_text

REPO = Path(__file__).resolve().parents[2]
RECIPE = REPO / "recipes" / "synth_en"
SENTENCES = RECIPE / "sentences"
FSDD = REPO.parent / "shared" / "data" / "fsdd"


def _lines(name: str) -> list[str]:
    return (SENTENCES / name).read_text(encoding="utf-8").splitlines()


def _module(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_heldout_sentences_never_occur_in_training() -> None:
    train, heldout = _lines("train.txt"), _lines("heldout.txt")
    train_keys = {normalize_text(s) for s in train}
    heldout_keys = {normalize_text(s) for s in heldout}
    assert not train_keys & heldout_keys
    # Distinct within each file too, even ignoring case and punctuation.
    assert len(train_keys) == len(train) and len(heldout_keys) == len(heldout)


def test_sentence_files_are_speakable_and_sized() -> None:
    train, heldout = _lines("train.txt"), _lines("heldout.txt")
    assert len(train) + len(heldout) >= 3000 and 250 <= len(heldout) <= 400
    for sentence in train + heldout:
        # Spelled as spoken: no digits or symbols a TTS engine would expand on its own.
        assert re.fullmatch(r"[A-Z][A-Za-z' ,.?!:]+[.?!]", sentence), sentence
        assert 3 <= len(sentence.split()) <= 25, sentence


def test_sentence_files_match_their_generator() -> None:
    done = subprocess.run(
        [sys.executable, str(SENTENCES / "generate.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr


def test_generator_numbers_in_words() -> None:
    generate = _module(SENTENCES / "generate.py")
    assert generate.number_words(0) == "zero"
    assert generate.number_words(42) == "forty two"
    assert generate.number_words(105) == "one hundred and five"
    assert generate.number_words(2024) == "two thousand and twenty four"
    assert generate.number_words(1999) == "one thousand nine hundred and ninety nine"
    assert (
        generate.ordinal_words(23) == "twenty third" and generate.ordinal_words(30) == "thirtieth"
    )


def test_readme_states_the_licence() -> None:
    readme = (RECIPE / "README.md").read_text(encoding="utf-8")
    assert "written for echostream, CC0" in readme
    assert "CC BY-SA 4.0" in readme  # FSDD's licence, for anything derived from it


@pytest.mark.skipif(not FSDD.is_dir(), reason=f"FSDD data missing: {FSDD}")
def test_fsdd_manifests(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fsdd_manifest = _module(RECIPE / "fsdd_manifest.py")
    monkeypatch.setattr(
        sys, "argv", ["fsdd_manifest.py", "--fsdd", str(FSDD), "--out", str(tmp_path)]
    )
    assert fsdd_manifest.main() == 0
    train, test = read_manifest(tmp_path / "train.jsonl"), read_manifest(tmp_path / "test.jsonl")
    assert (len(train), len(test)) == (2250, 250)
    speakers = {r.speaker for r in test}
    assert len(speakers) == 5 and {r.speaker for r in train} == speakers
    for row in test:
        digit, _, index = Path(row.audio).stem.split("_")
        assert int(index) < 5 and row.text == fsdd_manifest.DIGIT_WORDS[int(digit)]
    assert all(int(Path(r.audio).stem.split("_")[2]) >= 5 for r in train)
    assert {r.text for r in train} == set(fsdd_manifest.DIGIT_WORDS)
    # Referenced in place by relative path, never copied.
    first = (tmp_path / "test.jsonl").read_text().splitlines()[0]
    assert '"audio": "../' in first
    assert Path(test[0].audio).resolve().parent == FSDD.resolve()



@pytest.mark.skipif(not FSDD.is_dir(), reason=f"FSDD data missing: {FSDD}")
def test_fsdd_can_hold_one_speaker_out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fsdd_manifest = _module(RECIPE / "fsdd_manifest.py")
    argv = ["fsdd_manifest.py", "--fsdd", str(FSDD), "--out", str(tmp_path), "--heldout-speaker", "lucas"]
    monkeypatch.setattr(sys, "argv", argv)
    assert fsdd_manifest.main() == 0
    train, test = read_manifest(tmp_path / "train.jsonl"), read_manifest(tmp_path / "test.jsonl")
    held = read_manifest(tmp_path / "heldout_speaker.jsonl")
    assert len(held) == 500 and {r.speaker for r in held} == {"fsdd:lucas"}
    assert "fsdd:lucas" not in {r.speaker for r in train + test} and len(train) + len(test) == 2000
    monkeypatch.setattr(sys, "argv", [*argv[:-1], "nobody"])
    assert fsdd_manifest.main() == 1


@pytest.mark.parametrize("script", [RECIPE / "prepare.sh", REPO / ".ci" / "install-tts"])
def test_shell_scripts_parse(script: Path) -> None:
    done = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr


def test_training_voices_exclude_festival_and_heldout_variants() -> None:
    script = (RECIPE / "prepare.sh").read_text(encoding="utf-8")
    train = re.search(r"^TRAIN_VOICES='([^']*)'", script, re.MULTILINE)
    new = re.search(r"^NEW_VOICES='([^']*)'", script, re.MULTILINE)
    assert train is not None and new is not None
    assert "festival" not in train.group(1)
    from echostream.data.synth import select_voices

    def speakers(spec: str) -> set[str]:
        selection = select_voices(spec)
        return {v.speaker for v in selection.available} | {
            m.voice.speaker for m in selection.missing
        }

    assert not speakers(train.group(1)) & speakers(new.group(1))
    for match in re.finditer(r"--voices \"\$(\w+)\"", script):
        if match.group(1) == "EVAL_ONLY_VOICES":
            assert '--out "$out/eval_festival"' in script[match.start() - 200 : match.start()]
