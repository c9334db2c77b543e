"""The project's static checks: ruff on everything, mypy on the package (STYLE.md: mypy runs on src/)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _tool(name: str) -> str:
    found = shutil.which(name) or str(Path(sys.executable).parent / name)
    if not Path(found).exists():
        pytest.skip(f"{name} is not installed (pip install -c constraints.txt -e '.[all,test]')")
    return found


def test_ruff() -> None:
    result = subprocess.run([_tool("ruff"), "check", "src", "tests", "benchmarks", "recipes"],
                            cwd=ROOT, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout[-3000:]


def test_mypy() -> None:
    result = subprocess.run([_tool("mypy"), "src"], cwd=ROOT, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout[-3000:]
