"""Long-form transcription speed and memory on a ChunkFormer-large-shaped model.

Random weights shaped like ChunkFormer-large (17 blocks, d=512, 8 heads, FFN 2048, vocab 6992),
chunk 64 / left 128 / right 128, fp32. For each duration, a fresh process transcribes one file of
real speech (the fixture audio, tiled) and reports wall time, real-time factor and peak RSS.

Baselines, measured in the same run on the same weights and audio:

- ``reference``: the reference package ``chunkformer`` 1.2.2 (``endless_decode``), run in its own
  venv (``benchmarks/reference/setup.sh``; ``.ci/run`` builds it). The weights are a released-format
  folder that the reference itself writes (``benchmarks/reference/make_model.py``) and echostream
  imports, so both run the same model; the texts are compared word for word.
- ``onnx`` (``--onnx``): the same weights exported with ``echostream export`` and run by
  onnxruntime (``load_model(..., runtime="onnx")``); ``-int8`` rows (``--int8``) quantise the linear
  layers (torch's dynamic quantisation, or onnxruntime's for ``onnx-int8``).
- ``one-pass``: our masked batch of the whole file at once (as the reference's ``batch_decode``)
  on the shorter files.

    python benchmarks/longform.py                          # 1, 10 and 60 minutes, 2 threads
    python benchmarks/longform.py --minutes 2 --baseline-minutes   # the issue's 120 s, quicker

Without the reference venv the model is built in-process (same shape, other random weights) and
only the one-pass baseline runs.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT.parent / "shared" / "fixtures" / "chunkformer-tiny"
SPEECH = FIXTURE / "audio" / "long.wav"
REFERENCE = ROOT / "benchmarks" / "reference"
REFERENCE_PYTHON = ROOT / ".venv-reference" / "bin" / "python"


def large_bundle():  # type: ignore[no-untyped-def]
    import torch

    from echostream.encoders.chunkformer import ChunkFormerConfig
    from echostream.frontend.fbank import FbankConfig
    from echostream.models.asr import ASRModelConfig
    from echostream.models.build import build_model
    from echostream.models.checkpoint import ModelBundle
    from echostream.text.vocab import Vocabulary

    torch.manual_seed(0)
    encoder = ChunkFormerConfig(
        input_dim=80, output_size=512, attention_heads=8, linear_units=2048, num_blocks=17,
        cnn_module_kernel=15, dropout_rate=0.0, positional_dropout_rate=0.0, attention_dropout_rate=0.0,
    )
    model = build_model(ASRModelConfig(encoder=encoder, vocab_size=6992)).eval()
    vocab = Vocabulary(("<blank>",) + tuple(f"t{i}" for i in range(1, 6992)))
    return ModelBundle(model=model, vocab=vocab, fbank=FbankConfig())


def make_audio(minutes: float, folder: Path) -> Path:
    """A 16 kHz file of ``minutes`` of the fixture speech, tiled, written in pieces."""
    path = folder / f"speech_{minutes:g}min.wav"
    speech, rate = sf.read(SPEECH, dtype="int16")
    total = int(minutes * 60 * rate)
    with sf.SoundFile(path, "w", samplerate=rate, channels=1, subtype="PCM_16") as f:
        written = 0
        while written < total:
            piece = speech[: total - written]
            f.write(piece)
            written += len(piece)
    return path


def make_reference_folder(python: Path, folder: Path) -> None:
    """The large shape's random weights in a released folder written by the reference package."""
    subprocess.run(
        [str(python), str(REFERENCE / "make_model.py"), str(folder), "--cmvn", str(FIXTURE / "model" / "global_cmvn"),
         "--shape", "large"],
        check=True, capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(REFERENCE)),
    )


def child(mode: str, path: str, threads: int, block_seconds: float, model_dir: str | None) -> None:
    """Run one measurement in this (fresh) process and print a JSON line."""
    import torch

    torch.set_num_threads(threads)
    from echostream.audio import load_audio
    from echostream.encoders.base import ChunkContext
    from echostream.frontend.fbank import compute_fbank
    from echostream.model import Model, load_model

    precision = "int8" if mode.endswith("-int8") else "fp32"
    label = mode
    mode = mode.removesuffix("-int8")
    options = {"precision": precision} if precision != "fp32" else {}  # --previous-src trees may predate it
    if mode == "onnx":  # model_dir: the export folder
        model = load_model(model_dir, runtime="onnx", precision=precision)
        mode = "longform"
    else:
        model = load_model(model_dir, **options) if model_dir else Model(large_bundle(), **options)
    duration = sf.info(path).duration
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    started = time.perf_counter()
    text = None
    if mode == "longform":
        (result,) = model.transcribe([path], block_seconds=block_seconds, batch_seconds=block_seconds)
        assert result.ok, result.error
        text = result.text
    else:  # one-pass masked batch of the whole file
        feats = torch.from_numpy(compute_fbank(load_audio(path), model.bundle.fbank))
        with torch.inference_mode():
            log_probs, _ = model.bundle.model(
                feats[None], torch.tensor([feats.shape[0]]), ChunkContext(chunk=64, left=128, right=128)
            )
            log_probs.argmax(-1)
    wall = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"mode": label, "duration": duration, "wall": wall, "peak_mb": peak, "model_mb": base_rss,
                      "text": text}))


JEMALLOC = Path("/usr/lib/x86_64-linux-gnu/libjemalloc.so.2")  # Debian's libjemalloc2


def measure(mode: str, path: Path, threads: int, block_seconds: float, model_dir: Path | None,
            jemalloc: bool = False, reference_python: Path | None = None, src: Path | None = None) -> dict:
    env = dict(os.environ, LD_PRELOAD=str(JEMALLOC)) if jemalloc else None
    if src is not None:  # another echostream tree (say, a checkout of the previous commit)
        env = dict(os.environ, PYTHONPATH=str(src))
    if mode == "reference":
        assert reference_python is not None and model_dir is not None
        command = [str(reference_python), str(REFERENCE / "endless.py"), str(model_dir), str(path),
                   "--threads", str(threads)]
        env = dict(os.environ, PYTHONPATH=str(REFERENCE))
    else:
        command = [sys.executable, __file__, "--child", mode, str(path), "--threads", str(threads),
                   "--block-seconds", str(block_seconds)] + (["--model-dir", str(model_dir)] if model_dir else [])
    out = subprocess.run(command, check=True, capture_output=True, text=True, env=env)
    row = json.loads(out.stdout.strip().splitlines()[-1])
    if jemalloc:
        row["mode"] += "+jemalloc"
    if src is not None:
        row["mode"] += "-previous"
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, nargs="+", default=[1, 10, 60])
    parser.add_argument("--baseline-minutes", type=float, nargs="*", default=[1, 10])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--block-seconds", type=float, default=30.0)
    parser.add_argument("--jemalloc", action="store_true",
                        help="also measure long-form with jemalloc preloaded (apt-get install libjemalloc2)")
    parser.add_argument("--reference-minutes", type=float, nargs="*", default=[1, 10],
                        help="durations on which the reference package runs too")
    parser.add_argument("--reference-python", type=Path, default=REFERENCE_PYTHON,
                        help="the reference venv's python (benchmarks/reference/setup.sh)")
    parser.add_argument("--repeats", type=int, default=1,
                        help="alternate reference and echostream this many times per file; the table "
                             "gives each one's fastest run")
    parser.add_argument("--previous-src", type=Path,
                        help="the src/ folder of another echostream checkout (say, git worktree add ../prev "
                             "HEAD~1): its long-form runs too, as longform-previous")
    parser.add_argument("--int8", action="store_true",
                        help="also measure long-form at precision int8 (dynamically quantised linear layers)")
    parser.add_argument("--onnx", action="store_true",
                        help="also measure long-form on onnxruntime (the model exported once, 64/128/128; "
                             "with --int8 its int8 graphs too)")
    parser.add_argument("--child", nargs=2, metavar=("MODE", "PATH"), help=argparse.SUPPRESS)
    parser.add_argument("--model-dir", help=argparse.SUPPRESS)
    parser.add_argument("--export-onnx", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.export_onnx:
        export_large(Path(args.model_dir) if args.model_dir else None, args.export_onnx, args.int8)
        return
    if args.child:
        child(args.child[0], args.child[1], args.threads, args.block_seconds, args.model_dir)
        return
    reference = args.reference_python if args.reference_python.is_file() else None
    if reference is None:
        print(f"no reference venv at {args.reference_python} (benchmarks/reference/setup.sh): "
              "in-process weights, no reference rows", file=sys.stderr)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = Path(tmp) / "large"
        if reference:
            make_reference_folder(reference, model_dir)
        onnx_dir = Path(tmp) / "onnx"
        if args.onnx:  # in a child process: the parent's peak RSS would pass to every measurement
            started = time.perf_counter()
            subprocess.run([sys.executable, __file__, "--export-onnx", str(onnx_dir), "--threads", str(args.threads)]
                           + (["--model-dir", str(model_dir)] if reference else []) + (["--int8"] if args.int8 else []),
                           check=True)
            print(f"  exported to ONNX in {time.perf_counter() - started:.0f} s", file=sys.stderr)
        for minutes in sorted(set(args.minutes) | set(args.baseline_minutes)):
            path = make_audio(minutes, Path(tmp))
            plan = (["one-pass"] if minutes in args.baseline_minutes else [])
            for _ in range(args.repeats):
                if reference and minutes in args.reference_minutes:
                    plan.append("reference")
                if minutes in args.minutes:
                    plan.append("longform")
                    if args.jemalloc and JEMALLOC.exists():
                        plan.append("longform+jemalloc")
                    if args.previous_src:
                        plan.append("longform-previous")
                    if args.int8:
                        plan.append("longform-int8")
                    if args.onnx:
                        plan += ["onnx", "onnx-int8"] if args.int8 else ["onnx"]
            for mode in plan:
                folder = onnx_dir if mode.startswith("onnx") else model_dir if reference else None
                rows.append(measure(mode.split("+")[0].removesuffix("-previous"), path, args.threads,
                                    args.block_seconds, folder,
                                    jemalloc=mode.endswith("+jemalloc"), reference_python=reference,
                                    src=args.previous_src.resolve() if mode.endswith("-previous") else None))
                print(f"  measured {mode} {minutes:g} min: {rows[-1]['wall']:.1f} s", file=sys.stderr)
            path.unlink()
    report(rows, args.threads, args.block_seconds)


def export_large(model_dir: Path | None, folder: Path, int8: bool) -> None:
    """The benchmark's model exported to ONNX at 64/128/128 (``echostream export``'s library call)."""
    from echostream.encoders.base import OFFLINE_CONTEXT
    from echostream.export.onnx import export_onnx
    from echostream.model import load_model

    bundle = load_model(model_dir).bundle if model_dir else large_bundle()
    export_onnx(bundle, folder, [OFFLINE_CONTEXT], int8=int8)


def report(rows: list[dict], threads: int, block_seconds: float) -> None:
    """The fastest run of each mode per file, with ratios to the reference and the one-pass batch."""
    best: dict[tuple[str, float], dict] = {}
    for r in rows:
        key = (r["mode"], r["duration"])
        if key not in best or r["wall"] < best[key]["wall"]:
            best[key] = r
    shortest = {r["mode"]: r for r in sorted(best.values(), key=lambda r: -r["duration"])}
    print(f"\nChunkFormer-large shape, random weights, chunk 64 / left 128 / right 128, fp32 unless named, "
          f"{threads} threads, block {block_seconds:g} s")
    print(f"{'mode':<18} {'audio':>8} {'wall s':>8} {'RTF':>7} {'peak RSS MB':>12} {'RSS - model MB':>15} "
          f"{'time vs reference':>18} {'words vs reference':>19} {'RTF vs one-pass':>16} {'RSS vs shortest':>16}")
    for (mode, duration), r in sorted(best.items()):
        rtf = r["wall"] / duration
        ref, one = best.get(("reference", duration)), best.get(("one-pass", duration))
        ours = mode.startswith(("longform", "onnx"))
        vs_ref = f"{r['wall'] / ref['wall']:.2f}x" if ref and ours else "-"
        same = word_difference(r["text"], ref["text"]) if ref and ours else "-"
        if mode.endswith("-int8") and same != "same":
            same = "differs"  # random weights: near-tied labels flip; int8's WER cost needs a trained model
        vs_one = f"{rtf / (one['wall'] / duration):.2f}x" if one and ours else "-"
        rss_ratio = f"{r['peak_mb'] / shortest[mode]['peak_mb']:.2f}x"
        print(f"{mode:<18} {duration / 60:>6.1f}m {r['wall']:>8.1f} {rtf:>7.4f} {r['peak_mb']:>12.0f} "
              f"{r['peak_mb'] - r['model_mb']:>15.0f} {vs_ref:>18} {same:>19} {vs_one:>16} {rss_ratio:>16}")


def word_difference(text: str, reference: str) -> str:
    """``same`` if the words are identical, else the word error rate against the reference's text."""
    hyp, ref = text.split(), reference.split()
    if hyp == ref:
        return "same"
    row = list(range(len(hyp) + 1))  # Levenshtein distance over words, one row at a time
    for i, word in enumerate(ref, 1):
        prev, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (word != h))
    return f"WER {100 * row[-1] / max(1, len(ref)):.1f}%"


if __name__ == "__main__":
    main()
