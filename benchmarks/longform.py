"""Long-form transcription speed and memory on a ChunkFormer-large-shaped model.

Random weights shaped like ChunkFormer-large (17 blocks, d=512, 8 heads, FFN 2048, vocab 6992),
chunk 64 / left 128 / right 128, fp32. For each duration, a fresh process transcribes one file of
real speech (the fixture audio, tiled) and reports wall time, real-time factor and peak RSS.

Baseline, measured in the same run: the one-pass masked batch (the whole file encoded at once,
as the reference's ``batch_decode`` does) on the shorter files.

    python benchmarks/longform.py                 # 1, 10 and 60 minutes, 2 threads
    python benchmarks/longform.py --minutes 1 5   # quicker
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
SPEECH = ROOT.parent / "shared" / "fixtures" / "chunkformer-tiny" / "audio" / "long.wav"


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


def child(mode: str, path: str, threads: int, block_seconds: float) -> None:
    """Run one measurement in this (fresh) process and print a JSON line."""
    import torch

    torch.set_num_threads(threads)
    from echostream.audio import load_audio
    from echostream.encoders.base import ChunkContext
    from echostream.frontend.fbank import compute_fbank
    from echostream.model import Model

    model = Model(large_bundle())
    duration = sf.info(path).duration
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    started = time.perf_counter()
    if mode == "longform":
        (result,) = model.transcribe([path], block_seconds=block_seconds, batch_seconds=block_seconds)
        assert result.ok, result.error
    else:  # one-pass masked batch of the whole file
        feats = torch.from_numpy(compute_fbank(load_audio(path), model.bundle.fbank))
        with torch.inference_mode():
            log_probs, _ = model.bundle.model(
                feats[None], torch.tensor([feats.shape[0]]), ChunkContext(chunk=64, left=128, right=128)
            )
            log_probs.argmax(-1)
    wall = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"mode": mode, "duration": duration, "wall": wall, "peak_mb": peak, "model_mb": base_rss}))


JEMALLOC = Path("/usr/lib/x86_64-linux-gnu/libjemalloc.so.2")  # Debian's libjemalloc2


def measure(mode: str, path: Path, threads: int, block_seconds: float, jemalloc: bool = False) -> dict:
    env = dict(os.environ, LD_PRELOAD=str(JEMALLOC)) if jemalloc else None
    out = subprocess.run(
        [sys.executable, __file__, "--child", mode, str(path), "--threads", str(threads),
         "--block-seconds", str(block_seconds)],
        check=True, capture_output=True, text=True, env=env,
    )
    row = json.loads(out.stdout.strip().splitlines()[-1])
    if jemalloc:
        row["mode"] += "+jemalloc"
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, nargs="+", default=[1, 10, 60])
    parser.add_argument("--baseline-minutes", type=float, nargs="*", default=[1, 10])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--block-seconds", type=float, default=30.0)
    parser.add_argument("--jemalloc", action="store_true",
                        help="also measure long-form with jemalloc preloaded (apt-get install libjemalloc2)")
    parser.add_argument("--child", nargs=2, metavar=("MODE", "PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], args.child[1], args.threads, args.block_seconds)
        return
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for minutes in sorted(set(args.minutes) | set(args.baseline_minutes)):
            path = make_audio(minutes, Path(tmp))
            if minutes in args.baseline_minutes:
                rows.append(measure("one-pass", path, args.threads, args.block_seconds))
                print(f"  measured one-pass {minutes:g} min", file=sys.stderr)
            if minutes in args.minutes:
                rows.append(measure("longform", path, args.threads, args.block_seconds))
                print(f"  measured longform {minutes:g} min", file=sys.stderr)
                if args.jemalloc and JEMALLOC.exists():
                    rows.append(measure("longform", path, args.threads, args.block_seconds, jemalloc=True))
                    print(f"  measured longform+jemalloc {minutes:g} min", file=sys.stderr)
            path.unlink()
    base = {r["duration"]: r for r in rows if r["mode"] == "one-pass"}
    shortest = {r["mode"]: r for r in sorted(rows, key=lambda r: -r["duration"])}
    print(f"\nChunkFormer-large shape, random weights, chunk 64 / left 128 / right 128, fp32, "
          f"{args.threads} threads, block {args.block_seconds:g} s")
    print(f"{'mode':<18} {'audio':>8} {'wall s':>8} {'RTF':>7} {'peak RSS MB':>12} "
          f"{'RSS - model MB':>15} {'RTF vs one-pass':>16} {'RSS vs shortest':>16}")
    for r in sorted(rows, key=lambda r: (r["mode"], r["duration"])):
        rtf = r["wall"] / r["duration"]
        b = base.get(r["duration"])
        vs = f"{rtf / (b['wall'] / b['duration']):.2f}x" if b and r["mode"].startswith("longform") else "-"
        rss_ratio = f"{r['peak_mb'] / shortest[r['mode']]['peak_mb']:.2f}x"
        print(f"{r['mode']:<18} {r['duration'] / 60:>6.1f}m {r['wall']:>8.1f} {rtf:>7.4f} "
              f"{r['peak_mb']:>12.0f} {r['peak_mb'] - r['model_mb']:>15.0f} {vs:>16} {rss_ratio:>16}")


if __name__ == "__main__":
    main()
