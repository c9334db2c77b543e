"""Global CMVN statistics files (WeNet JSON and Kaldi text formats)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


class CMVNError(ValueError):
    """A CMVN statistics file that cannot be used."""


def _stats_to_mean_istd(sums: np.ndarray, squares: np.ndarray, count: float) -> tuple[np.ndarray, np.ndarray]:
    mean = sums / count
    variance = np.maximum(squares / count - mean * mean, 1.0e-20)
    return mean.astype(np.float32), (1.0 / np.sqrt(variance)).astype(np.float32)


def read_cmvn(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Mean and inverse standard deviation (each (F,)) from accumulated statistics.

    Accepts WeNet's JSON (``mean_stat``, ``var_stat``, ``frame_num``) and Kaldi's text matrix
    (``compute-cmvn-stats --binary=false``).
    """
    path = Path(path)
    if not path.is_file():
        raise CMVNError(f"{path}: CMVN file not found")
    text = path.read_text(encoding="utf-8", errors="replace").strip()
    if text.startswith("{"):
        try:
            stats = json.loads(text)
            sums = np.asarray(stats["mean_stat"], dtype=np.float64)
            squares = np.asarray(stats["var_stat"], dtype=np.float64)
            count = float(stats["frame_num"])
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
            raise CMVNError(f"{path}: malformed JSON CMVN stats ({err.__class__.__name__}: {err})") from None
    else:
        fields = text.split()
        if len(fields) < 6 or fields[0] != "[" or fields[-1] != "]":
            raise CMVNError(f"{path}: neither JSON nor Kaldi text CMVN stats")
        try:
            values = np.asarray([float(v) for v in fields[1:-1]], dtype=np.float64)
        except ValueError:
            raise CMVNError(f"{path}: Kaldi CMVN stats contain a non-number") from None
        dim = (len(values) - 2) // 2
        if len(values) != 2 * dim + 2:
            raise CMVNError(f"{path}: Kaldi CMVN stats have an odd shape")
        sums, count, squares = values[:dim], values[dim], values[dim + 1 : 2 * dim + 1]
    if sums.shape != squares.shape or sums.ndim != 1 or sums.size == 0:
        raise CMVNError(f"{path}: mean and variance statistics differ in size")
    if not count > 0:
        raise CMVNError(f"{path}: frame count must be positive, got {count}")
    return _stats_to_mean_istd(sums, squares, count)
