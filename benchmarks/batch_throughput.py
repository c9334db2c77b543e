"""Throughput of batch transcription: one local process against Ray with 1 and 2 workers.

Writes N copies of the bundled samples (about ``--minutes`` of audio in files of 10-30 s) and
transcribes them with ``echostream transcribe --output-dir`` three ways, in one run: locally in
one process with ``--threads`` threads (the baseline), and on a local Ray cluster with one worker
of ``--threads`` threads and with ``--threads`` workers of one thread each. Wall time includes
starting the cluster and loading the model in every worker (what a job pays).

    python benchmarks/batch_throughput.py [--minutes 10] [--threads 2] [--model default]

Prints a table (audio seconds per wall second, ratio to the local run) and writes
benchmarks/results/batch_throughput.txt.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

from echostream.cli.main import main as cli

ROOT = Path(__file__).resolve().parents[1]


def make_inputs(folder: Path, minutes: float, seed: int = 0) -> float:
    """Files of 10-30 s cut from the looped samples; returns their total seconds."""
    pieces = [sf.read(str(p), dtype="float32") for p in sorted((ROOT / "samples").glob("*.wav"))]
    rate = pieces[0][1]
    audio = np.concatenate([a for a, _ in pieces])
    rng = np.random.default_rng(seed)
    total, start, n = 0.0, 0, 0
    while total < minutes * 60:
        seconds = float(rng.uniform(10, 30))
        count = int(seconds * rate)
        piece = np.take(audio, np.arange(start, start + count), mode="wrap")
        start = (start + count) % audio.shape[0]
        sf.write(str(folder / f"part{n:04d}.wav"), piece, rate, subtype="PCM_16")
        total += seconds
        n += 1
    return total


def timed(args: list[str]) -> float:
    sink = io.StringIO()
    t0 = time.perf_counter()
    with contextlib.redirect_stderr(sink):
        code = cli(["transcribe", *args])
    took = time.perf_counter() - t0
    if code != 0:
        raise SystemExit(f"transcribe {' '.join(args)} failed:\n{sink.getvalue()[-2000:]}")
    return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--threads", type=int, default=2, help="cores to use: threads of the local run")
    parser.add_argument("--model", default="default")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "batch_throughput.txt"))
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="echostream-batch-"))
    try:
        inputs = work / "in"
        inputs.mkdir()
        seconds = make_inputs(inputs, args.minutes)
        files = len(list(inputs.iterdir()))
        runs = [
            ("local, 1 process", ["--threads", str(args.threads)]),
            (f"ray, 1 worker x {args.threads} threads", ["--ray-workers", "1", "--threads", str(args.threads)]),
            (f"ray, {args.threads} workers x 1 thread", ["--ray-workers", str(args.threads), "--threads", "1"]),
        ]
        rows = []
        for label, extra in runs:
            out = work / f"out{len(rows)}"
            print(f"{label} ...", flush=True)
            wall = timed(["--model", args.model, "--output-dir", str(out), *extra, str(inputs)])
            rows.append((label, wall))
        texts = [{p.name: p.read_text() for p in (work / f"out{i}").iterdir()} for i in range(len(rows))]
        same = all(t == texts[0] for t in texts)
        lines = [f"{files} files, {seconds / 60:.1f} min of audio, model {args.model}; outputs identical: {same}",
                 f"{'run':<32} {'wall s':>8} {'audio s / s':>12} {'vs local':>9}"]
        base = rows[0][1]
        lines += [f"{label:<32} {wall:>8.1f} {seconds / wall:>12.1f} {base / wall:>8.2f}x" for label, wall in rows]
        report = "\n".join(lines)
        print("\n" + report)
        Path(args.out).write_text(report + "\n")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
