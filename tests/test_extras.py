"""The core install transcribes without any extra, and a verb that needs a missing extra says
which one in one line. A subprocess hides the extras' packages (as if only the core were
installed) with an import hook."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from echostream.extras import EXTRAS

ROOT = Path(__file__).resolve().parents[1]
HIDE = f"""
import importlib.abc, sys
HIDDEN = {sorted({m for ms in EXTRAS.values() for m in ms} | {"multipart", "starlette", "torch.utils.tensorboard"})!r}

class Hide(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name in HIDDEN or name.split(".")[0] in HIDDEN:
            raise ModuleNotFoundError(f"No module named {{name!r}}")
        return None

sys.meta_path.insert(0, Hide())
"""


def _core_only(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", HIDE + code], capture_output=True, text=True, cwd=ROOT,
                          timeout=300, check=False)


def _cli(*argv: str) -> subprocess.CompletedProcess[str]:
    return _core_only(f"from echostream.cli.main import main\nsys.exit(main({list(argv)!r}))")


def test_the_core_transcribes_and_streams_without_any_extra() -> None:
    done = _cli("transcribe", "samples/booking_16k.wav")
    assert done.returncode == 0, done.stderr
    expected = (ROOT / "samples" / "booking_16k.txt").read_text().split()
    assert len(done.stdout.split()) >= len(expected) // 2  # the bundled model's transcript, not nothing
    streamed = _core_only(
        "import numpy as np, soundfile as sf, echostream\n"
        "audio, rate = sf.read('samples/booking_16k.wav', dtype='float32')\n"
        "recognizer = echostream.Recognizer(echostream.load_model())\n"
        "stream = recognizer.create_stream()\n"
        "stream.accept_waveform(rate, audio); stream.input_finished()\n"
        "while recognizer.is_ready(stream): recognizer.decode_stream(stream)\n"
        "print(stream.result.text)\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('fastapi', 'jiwer', 'sentencepiece')))\n"
    )
    assert streamed.returncode == 0, streamed.stderr
    text, imported = streamed.stdout.strip().splitlines()
    assert text and imported == "[]"


@pytest.mark.parametrize(("argv", "extra"), [
    (["serve"], "server"),
    (["client", "--url", "ws://localhost:1/", "samples/booking_16k.wav"], "server"),
    (["eval", "--manifest", "any.jsonl"], "train"),
    (["train", "--config", "any.yaml", "--out", "exp"], "train"),
    (["tokenizer", "train", "--manifest", "any.jsonl", "--kind", "bpe", "--out", "tok"], "train"),
    (["export", "--out", "exported"], "onnx"),
])  # fmt: skip
def test_a_verb_that_needs_a_missing_extra_names_it(argv: list[str], extra: str) -> None:
    done = _cli(*argv)
    assert done.returncode == 2
    [line] = done.stderr.strip().splitlines()
    assert line.startswith(f"echostream: error: echostream {argv[0]}")
    assert f"needs the '{extra}' extra: pip install 'echostream[{extra}]'" in line


def test_a_hub_model_without_the_hub_extra_names_it() -> None:
    done = _cli("transcribe", "--model", "some-org/some-model", "samples/booking_16k.wav")
    assert done.returncode == 1
    [line] = done.stderr.strip().splitlines()
    assert "some-org/some-model: not a local file or folder" in line and "pip install 'echostream[hub]'" in line


def test_the_onnx_runtime_without_the_onnx_extra_names_it(tmp_path: Path) -> None:
    done = _cli("transcribe", "--runtime", "onnx", "--model", str(tmp_path), "samples/booking_16k.wav")
    assert done.returncode == 2
    [line] = done.stderr.strip().splitlines()
    assert "runtime onnx needs the 'onnx' extra: pip install 'echostream[onnx]'" in line
