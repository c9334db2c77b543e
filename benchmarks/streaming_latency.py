"""Streaming latency and capacity of the Recognizer.

For each chunk/context setting:
- algorithmic latency: audio a frame waits for before it can be decoded (chunk; plus, for final
  frames, every layer's right context);
- compute latency: wall time of one decoding step of one stream (median, p95);
- partial delay: from the end of the audio a token's frame sees to the first partial result
  that shows it
  (median, p95). Audio is fed in 100 ms pieces on a simulated real-time clock: a piece arrives at
  its audio time, a decoding step starts when the stream is ready and the decoder is free, and its
  result is out after the step's *measured* compute time;
- capacity: how many real-time streams one process sustains, decoding all ready streams in one
  batch per step (the largest N whose step time for a chunk of audio stays under the chunk
  duration, with 20% headroom);
- RTF: compute time of the single stream over its audio duration.

Chunk/left/right are in each model's encoder frames (80 ms ChunkFormer, 40 ms Emformer).

Models: the bundled default model when this build has one, else random weights shaped like its
preset (configs/synth_en_small.yaml: 8 blocks, d=144); a random ChunkFormer-large-shaped model
(17 blocks, d=512); optionally the chunkformer-tiny fixture (3 blocks, d=128).

    python benchmarks/streaming_latency.py [--seconds 20] [--audio samples/booking_16k.wav] [--plot ...]
    python benchmarks/streaming_latency.py --model chunkformer=A.pt:4/16/0,16/32/0 \
        --model emformer=B.pt:4/32/4,16/64/16       # trained models, each at its own settings
    python benchmarks/streaming_latency.py --models large --precisions fp32 int8 --runtimes torch onnx

``--precisions int8`` adds rows with dynamically quantised linear layers, ``--runtimes onnx`` rows
of the same weights exported (``echostream export``) and run by onnxruntime; each such row is
compared with the torch fp32 row of its model and setting.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
SPEECH = ROOT / "samples" / "booking_16k.wav"  # English speech the default model transcribes
PIECE_S = 0.1
SETTINGS = [(4, 16, 0), (8, 32, 0), (16, 64, 0), (8, 32, 8)]


@dataclass
class Row:
    model: str
    setting: tuple[int, int, int]
    algorithmic_ms: float
    final_ms: float
    compute_med_ms: float
    compute_p95_ms: float
    partial_med_ms: float
    partial_p95_ms: float
    capacity: int
    rtf: float = 0.0


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def simulate(rec, samples: np.ndarray, rate: int) -> tuple[list[float], list[float]]:  # type: ignore[no-untyped-def]
    """Feed in real time on a simulated clock; returns step compute times and partial delays (s)."""
    s = rec.create_stream()
    frame_s = rec.model.bundle.frame_seconds
    piece = int(PIECE_S * rate)
    clock = 0.0  # when the decoder is free
    history: list[tuple[float, list]] = []  # (time a partial came out, its tokens)
    compute: list[float] = []
    for start in range(0, len(samples), piece):
        arrival = (start + piece) / rate
        s.accept_waveform(rate, samples[start : start + piece])
        while rec.is_ready(s):
            began = max(clock, arrival)
            t0 = time.perf_counter()
            rec.decode_streams([s])
            took = time.perf_counter() - t0
            compute.append(took)
            clock = began + took
            history.append((clock, s.result.tokens))
    s.input_finished()
    while rec.is_ready(s):
        rec.decode_streams([s])
    final = s.result.tokens
    delays = []
    for i, token in enumerate(final):
        # first partial that shows this token at this place (a provisional tail may show
        # something else there first); a token sits at the centre of the audio its frame sees,
        # so that audio ends token_time_offset after it (82.5 ms ChunkFormer, 27.5 ms Emformer)
        shown = next((t for t, tokens in history if len(tokens) > i and tokens[i].token == token.token
                      and abs(tokens[i].time - token.time) < frame_s / 2), None)
        if shown is not None:
            delays.append(shown - (token.time + rec.model.bundle.token_time_offset))
    return compute, delays


def step_time(rec, samples: np.ndarray, rate: int, streams: int, chunk_s: float) -> float:  # type: ignore[no-untyped-def]
    """Median wall time to decode one chunk of audio for ``streams`` streams in batched steps."""
    live = [rec.create_stream() for _ in range(streams)]
    step = int(chunk_s * rate)
    times = []
    for k in range(8):  # the first chunks fill the caches; time the steady state after them
        for st in live:
            st.accept_waveform(rate, samples[k * step : (k + 1) * step])
        t0 = time.perf_counter()
        while any(rec.is_ready(st) for st in live):
            rec.decode_streams(live)
        if k >= 3:
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def capacity(rec, samples: np.ndarray, rate: int, chunk_s: float) -> int:  # type: ignore[no-untyped-def]
    """Largest number of streams whose batched step for one chunk of audio fits in the chunk
    duration with 20% headroom: doubling, then bisection."""
    def fits(n: int) -> bool:
        return step_time(rec, samples, rate, n, chunk_s) * 1.2 <= chunk_s

    best, n = 0, 1
    while n <= 256 and fits(n):
        best, n = n, n * 2
    if best == 0:
        return 0
    lo, hi = best, min(best * 2, 256)
    while hi - lo > max(1, lo // 8):
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    return lo


def default_shaped_bundle():  # type: ignore[no-untyped-def]
    """Random weights in the shape of the default model's preset (configs/synth_en_small.yaml):
    compute cost does not depend on the weights."""
    import yaml

    from echostream.config import from_dict
    from echostream.encoders.base import EncoderConfig
    from echostream.frontend.fbank import FbankConfig
    from echostream.models.asr import ASRModelConfig
    from echostream.models.build import build_model
    from echostream.models.checkpoint import ModelBundle
    from echostream.text.vocab import Vocabulary

    preset = yaml.safe_load((ROOT / "configs" / "synth_en_small.yaml").read_text())
    shape = preset["model"]["encoder"]
    encoder = from_dict(EncoderConfig.tagged_class(shape), shape)
    torch.manual_seed(0)
    vocab = 256  # recipes/synth_en/run.sh trains a 256-id BPE vocabulary
    model = build_model(ASRModelConfig(encoder=encoder, vocab_size=vocab)).eval()
    tokens = ("<blank>",) + tuple(f"t{i}" for i in range(1, vocab))
    return ModelBundle(model=model, vocab=Vocabulary(tokens), fbank=FbankConfig())


def models(names: list[str]) -> list[tuple[str, object]]:
    import echostream
    from echostream.cli.main import default_model_path

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from longform import large_bundle

    default = default_model_path()
    makers = {
        "default": lambda: (echostream.load_model(default) if default is not None
                            else echostream.Model(default_shaped_bundle())),
        "tiny": lambda: echostream.load_model(SHARED / "fixtures" / "chunkformer-tiny" / "model"),
        "large": lambda: echostream.Model(large_bundle()),
    }
    label = {"default": "default" if default is not None else "default-shaped", "tiny": "tiny fixture",
             "large": "large-shaped"}
    return [(label[n], makers[n]()) for n in names]


def chosen_models(args: argparse.Namespace) -> list[tuple[str, object, list[tuple[int, int, int]]]]:
    """``--model NAME=PATH:C/L/R,...`` entries, else the ``--models`` choices at SETTINGS."""
    if not args.model:
        return [(name, model, SETTINGS) for name, model in models(args.models)]
    import echostream

    out = []
    for entry in args.model:
        name, _, rest = entry.partition("=")
        path, _, spec = rest.rpartition(":")
        if not name or not path or not spec:
            raise SystemExit(f"--model {entry!r}: expected NAME=PATH:C/L/R[,C/L/R...]")
        settings = [tuple(int(v) for v in item.split("/")) for item in spec.split(",")]
        if any(len(t) != 3 for t in settings):
            raise SystemExit(f"--model {entry!r}: a setting is chunk/left/right")
        out.append((name, echostream.load_model(path), settings))  # type: ignore[misc]
    return out  # type: ignore[return-value]


def at_precisions(chosen: list[tuple[str, object, list[tuple[int, int, int]]]],
                  precisions: list[str]) -> list[tuple[str, object, list[tuple[int, int, int]], str]]:
    """Each chosen model at each precision (int8 rows are named ``NAME int8``)."""
    import echostream

    out = []
    for name, model, settings in chosen:
        for precision in precisions:
            if precision == "fp32":
                out.append((name, model, settings, precision))
            else:
                quantized = echostream.Model(model.bundle, precision=precision)  # type: ignore[attr-defined]
                out.append((f"{name} {precision}", quantized, settings, precision))
    return out


def on_onnx(chosen: list[tuple[str, object, list[tuple[int, int, int]]]], precisions: list[str],
            folder: Path) -> list[tuple[str, object, list[tuple[int, int, int]], str]]:
    """Each chosen model exported to ONNX at its chunk-causal settings (right 0) and run by
    onnxruntime at each precision (rows ``NAME onnx``, ``NAME onnx int8``). Settings with a right
    context are left out: the onnx runtime runs them as whole utterances or a pipelined step whose
    delay (every layer's look-ahead) makes it a long-form path, not a streaming one."""
    import echostream
    from echostream.encoders.base import ChunkContext
    from echostream.export.onnx import export_onnx

    out = []
    for i, (name, model, settings) in enumerate(chosen):
        causal = [s for s in settings if s[2] == 0]
        if not causal:
            continue
        started = time.perf_counter()
        contexts = [ChunkContext(chunk=c, left=left, right=right) for c, left, right in causal]
        target = export_onnx(model.bundle, folder / f"model{i}", contexts, int8="int8" in precisions)  # type: ignore[attr-defined]
        print(f"  exported {name} to ONNX in {time.perf_counter() - started:.0f} s", file=sys.stderr)
        for precision in precisions:
            onnx_model = echostream.load_model(target, runtime="onnx", precision=precision)
            label = f"{name} onnx" + ("" if precision == "fp32" else f" {precision}")
            out.append((label, onnx_model, causal, precision))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=20.0, help="audio per latency run")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--audio", default=str(SPEECH), help="speech to stream (looped to --seconds)")
    parser.add_argument("--plot", default=str(ROOT / "benchmarks" / "results" / "latency.png"))
    parser.add_argument("--no-capacity", action="store_true")
    parser.add_argument("--model", action="append", default=[], metavar="NAME=PATH:C/L/R,...",
                        help="a trained model and its settings (repeatable; replaces --models)")
    parser.add_argument("--models", nargs="+", choices=["default", "tiny", "large"], default=["default", "large"],
                        help="default: the bundled model, or random weights of its preset's shape")
    parser.add_argument("--precisions", nargs="+", choices=["fp32", "int8"], default=["fp32"],
                        help="run each model at these precisions (int8: dynamically quantised linear layers)")
    parser.add_argument("--runtimes", nargs="+", choices=["torch", "onnx"], default=["torch"],
                        help="onnx: also export each model (its right-0 settings) and stream it on onnxruntime")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from echostream.streaming.recognizer import EndpointConfig, Recognizer

    samples, rate = sf.read(args.audio, dtype="float32")
    samples = np.tile(samples, int(np.ceil(args.seconds * rate / len(samples))))[: int(args.seconds * rate)]
    rows = []
    chosen = chosen_models(args)
    runs = at_precisions(chosen, args.precisions) if "torch" in args.runtimes else []
    tmp = tempfile.TemporaryDirectory()
    if "onnx" in args.runtimes:
        runs += on_onnx(chosen, args.precisions, Path(tmp.name))
    for name, model, settings, precision in runs:
        for c, left, right in settings:
            rec = Recognizer(model, chunk_size=c, left_context=left, right_context=right,  # type: ignore[arg-type]
                             endpoint=EndpointConfig(enabled=False))
            compute, delays = simulate(rec, samples, rate)
            cap = 0 if args.no_capacity else capacity(rec, samples, rate, c * model.bundle.frame_seconds)
            rows.append(Row(
                model=name, setting=(c, left, right), algorithmic_ms=(c + right) * model.bundle.frame_seconds * 1000,
                final_ms=rec.latency_seconds * 1000, compute_med_ms=statistics.median(compute) * 1000,
                compute_p95_ms=percentile(compute, 95) * 1000,
                partial_med_ms=percentile(delays, 50) * 1000, partial_p95_ms=percentile(delays, 95) * 1000,
                capacity=cap, rtf=sum(compute) / (len(samples) / rate),
            ))
            r = rows[-1]
            print(f"  {name} c{c}/l{left}/r{right}: partial p50 {r.partial_med_ms:.0f} ms, capacity {cap}", file=sys.stderr)
    print(f"\nStreaming latency ({args.threads} threads, {PIECE_S * 1000:.0f} ms pieces, simulated real time)")
    head = (f"{'model':<22} {'chunk/left/right':>16} {'algo ms':>8} {'final ms':>9} {'step p50':>9} "
            f"{'step p95':>9} {'partial p50':>12} {'partial p95':>12} {'streams':>8} {'RTF':>7}")
    print(head)
    for r in rows:
        c, left, right = r.setting
        print(f"{r.model:<22} {f'{c}/{left}/{right}':>16} {r.algorithmic_ms:>8.0f} {r.final_ms:>9.0f} "
              f"{r.compute_med_ms:>9.1f} {r.compute_p95_ms:>9.1f} {r.partial_med_ms:>12.0f} "
              f"{r.partial_p95_ms:>12.0f} {r.capacity:>8} {r.rtf:>7.3f}")
    print("algo: chunk + right context; final: until a frame is final; step: compute per decoding step of one "
          "stream; partial: token audio end -> first partial showing it; streams: real-time streams sustained; "
          "RTF: one stream's compute / audio")
    tmp.cleanup()
    for r in rows:  # each int8 or onnx row against the torch fp32 row of its model and setting
        base = r.model.removesuffix(" int8").removesuffix(" onnx")
        fp32 = next((f for f in rows if f.model == base and f.setting == r.setting and f is not r), None)
        if fp32 is not None:
            print(f"{r.model} {'/'.join(map(str, r.setting))}: step p50 {fp32.compute_med_ms / r.compute_med_ms:.2f}x "
                  f"faster than torch fp32, RTF {fp32.rtf / r.rtf:.2f}x, streams {r.capacity} vs {fp32.capacity}")
    if args.plot:
        plot(rows, Path(args.plot))
        print(f"plot: {args.plot}")


def plot(rows: list[Row], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    names = sorted({r.model for r in rows})
    per_model = [[r.setting for r in rows if r.model == name] for name in names]  # each model's own settings
    labels = [" | ".join(dict.fromkeys("{}/{}/{}".format(*m[i]) for m in per_model if i < len(m)))
              for i in range(max(len(m) for m in per_model))]
    width = 0.8 / len(names)
    for k, name in enumerate(names):
        mine = [r for r in rows if r.model == name]
        xs = np.arange(len(mine)) + k * width
        axes[0].bar(xs, [r.partial_med_ms for r in mine], width, label=f"{name} p50")
        axes[0].errorbar(xs, [r.partial_med_ms for r in mine],
                         yerr=[[0] * len(mine), [r.partial_p95_ms - r.partial_med_ms for r in mine]],
                         fmt="none", ecolor="black", capsize=3)
        axes[1].bar(xs, [r.capacity for r in mine], width, label=name)
    for ax, title in zip(axes, ["partial-result delay (ms, p50 with p95 bar)", "real-time streams sustained"]):
        ax.set_xticks(np.arange(len(labels)) + width * (len(names) - 1) / 2, labels)
        ax.set_xlabel("chunk / left / right (encoder frames)")
        ax.set_title(title)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
