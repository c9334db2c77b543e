"""The reference package's venv for same-run baselines (benchmarks/reference/).

The reference ``chunkformer`` runs next to the CPU torch only with the torchaudio stub of
``benchmarks/reference``. These tests run it on the stub and check that it reproduces the text the
fixture recorded from the reference on the real torchaudio, so that a baseline measured through
the stub is the reference's own computation. They need the venv that
``benchmarks/reference/setup.sh`` builds (``.ci/run`` builds it); without it they skip.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from tests.conftest import REPO_DIR

STUB_DIR = REPO_DIR / "benchmarks" / "reference"
REFERENCE_PYTHON = Path(os.environ.get("ECHOSTREAM_REFERENCE_PYTHON", REPO_DIR / ".venv-reference" / "bin" / "python"))

DECODE = """
import json, sys
import chunkformer
folder, audio, settings, tbd = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), float(sys.argv[4])
files = json.loads(sys.argv[5])
model = chunkformer.ChunkFormerModel.from_pretrained(folder)
out = {}
for c, l, r in settings:
    key = f"c{c}_l{l}_r{r}"
    batch = model.batch_decode([f"{audio}/{f}" for f in files], chunk_size=c, left_context_size=l,
                               right_context_size=r)
    for f, text in zip(files, batch):
        out[f"{key}/{f}"] = {"batch": text.strip(), "endless": model.endless_decode(
            f"{audio}/{f}", chunk_size=c, left_context_size=l, right_context_size=r,
            total_batch_duration=tbd, return_timestamps=False).strip()}
print("RESULT " + json.dumps(out))
"""


@pytest.fixture(scope="module")
def reference_python() -> Path:
    if not REFERENCE_PYTHON.is_file():
        pytest.skip(f"no reference venv at {REFERENCE_PYTHON.parent.parent} (benchmarks/reference/setup.sh)")
    return REFERENCE_PYTHON


def test_the_stub_lets_the_reference_import(reference_python: Path) -> None:
    out = subprocess.run(
        [str(reference_python), "-c", "import chunkformer, torchaudio; print(chunkformer.__version__, torchaudio.__version__)"],
        check=False, env=dict(os.environ, PYTHONPATH=str(STUB_DIR)), capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split()[-2:] == ["1.2.2", "0.0+echostream-stub"]


def test_the_reference_on_the_stub_gives_the_fixture_text(reference_python: Path, fixture_dir: Path) -> None:
    """Batch and endless decoding of every fixture file at two settings, as recorded with the
    real torchaudio front end."""
    expected = json.loads((fixture_dir / "expected.json").read_text())
    settings = [s for s in expected["settings"] if tuple(s) in {(16, 32, 16), (4, 8, 4)}]
    out = subprocess.run(
        [str(reference_python), "-c", DECODE, str(fixture_dir / "model"), str(fixture_dir / "audio"),
         json.dumps(settings), str(expected["endless_tbd"]), json.dumps(expected["files"])],
        check=False, env=dict(os.environ, PYTHONPATH=str(STUB_DIR)), capture_output=True, text=True, timeout=900,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    got = json.loads(out.stdout.split("RESULT ", 1)[1])
    want = {k: v for k, v in expected["text"].items() if k in got}
    assert len(want) == 2 * len(expected["files"])
    assert got == want
