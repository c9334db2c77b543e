"""The cost of streaming as utterances grow, per encoder, at matched parameter counts.

One stream, fed in chunks of 320 ms and 640 ms, on random weights (cost does not depend on them),
at 2 threads by default. For every encoder mode:

- step time and state memory as a function of the position in the stream, 1 s to 10 minutes,
  log-spaced (each point: the median of a few steps there);
- total encoder time for 1, 5, 10 and 30 s utterances, and its ratio to the re-encoding baseline
  (EchoStream's seed claims of 5.5x, 25x, 50x and 150x, measured instead of estimated).

Modes (left contexts of 2.56 s where limited, no right context):

- ``chunkformer``: today's ChunkFormer streaming, limited left context, caches;
- ``reencode``: the same network re-encoding everything received so far at every step with
  unbounded left context (what StreamSpeech's simultaneous agent does with its chunk Conformer);
- ``unbounded-cache``: the same network streaming with caches and unbounded left context (at
  position p, a step whose cache holds everything before p: step cost depends on shapes only);
- ``emformer-m0`` / ``emformer-m4``: Emformer without / with a memory bank of 4;
- ``zipformer``: the chunk-causal Zipformer, left context of 2.56 s at its 25 Hz output rate
  (each stack keeps that many seconds at its own rate), caches.

Shapes: ``small`` (the ~5.6 M presets of configs/, encoders only) and ``large`` (~100 M:
ChunkFormer-large, d=512, 17 blocks; an Emformer of d=640, 20 blocks; a Zipformer of dims
192/256/448/704/448/256 with 2/2/3/4/3/2 layers, 97 M).

    python benchmarks/encoder_cost.py [--shapes small large] [--threads 2] [--max-minutes 10]

Prints tables and writes benchmarks/results/encoder_cost.{json,png}. On 2 cores the re-encoding
baseline dominates the run (the small shape's 10-minute profile: about 100 s per chunk size; the
large shape's about ten times that), so the committed results come from

    python benchmarks/encoder_cost.py --shapes small --out benchmarks/results/encoder_cost_small
    python benchmarks/encoder_cost.py --shapes large --chunks-ms 320 --max-minutes 2 \
        --out benchmarks/results/encoder_cost_large

(a large-shape profile to 10 minutes for the cached encoders, re-encoding to 2:
``--shapes large --max-minutes 10 --reencode-max-minutes 2``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
FEATURE_S = 0.01  # 10 ms feature frames
BINS = 80
LEFT_SECONDS = 2.56
UTTERANCES_S = (1.0, 5.0, 10.0, 30.0)
CLAIMS = {1.0: 5.5, 5.0: 25.0, 10.0: 50.0, 30.0: 150.0}  # EchoStream's estimates of the saving


@dataclass
class Mode:
    name: str
    encoder: torch.nn.Module
    frame_s: float  # seconds per encoder frame
    left: int | None  # encoder frames; None = unbounded
    reencode: bool = False


def _encoders(shape: str) -> dict[str, torch.nn.Module]:
    import yaml

    from echostream.config import from_dict
    from echostream.encoders.base import EncoderConfig
    from echostream.encoders.chunkformer import ChunkFormerConfig
    from echostream.encoders.emformer import EmformerConfig
    from echostream.encoders.zipformer import ZipformerConfig
    from echostream.models.build import build_encoder

    def preset(name: str) -> EncoderConfig:
        data = yaml.safe_load((ROOT / "configs" / name).read_text())["model"]["encoder"]
        return from_dict(EncoderConfig.tagged_class(data), data)  # type: ignore[no-any-return]

    if shape == "small":
        chunkformer = preset("synth_en_small.yaml")
        emformer = preset("emformer_small.yaml")
        zipformer = preset("zipformer_small.yaml")
    else:
        chunkformer = ChunkFormerConfig(input_dim=BINS, output_size=512, attention_heads=8, linear_units=2048,
                                        num_blocks=17, cnn_module_kernel=15)
        emformer = EmformerConfig(input_dim=BINS, output_size=640, attention_heads=8, linear_units=2560,
                                  num_blocks=20)
        zipformer = ZipformerConfig(input_dim=BINS, encoder_dims=(192, 256, 448, 704, 448, 256),
                                    attention_heads=(4, 4, 8, 8, 8, 4),
                                    feedforward_dims=(512, 768, 1280, 1920, 1280, 768))
    no_dropout = {"dropout_rate": 0.0, "attention_dropout_rate": 0.0}
    torch.manual_seed(0)
    out = {"chunkformer": build_encoder(dataclasses.replace(chunkformer, **no_dropout,  # type: ignore[type-var]
                                                            positional_dropout_rate=0.0)).eval()}
    for m in (0, 4):
        out[f"emformer-m{m}"] = build_encoder(dataclasses.replace(emformer, memory_size=m, **no_dropout)).eval()  # type: ignore[type-var]
    out["zipformer"] = build_encoder(dataclasses.replace(zipformer, dropout_rate=0.0)).eval()  # type: ignore[type-var]
    return out


def modes(shape: str) -> list[Mode]:
    enc = _encoders(shape)

    def frame_s(name: str) -> float:
        return enc[name].subsampling * FEATURE_S  # type: ignore[no-any-return]

    def cached(name: str) -> Mode:
        return Mode(name, enc[name], frame_s(name), round(LEFT_SECONDS / frame_s(name)))

    cf = enc["chunkformer"]
    return [
        cached("chunkformer"),
        Mode("reencode", cf, frame_s("chunkformer"), None, reencode=True),
        Mode("unbounded-cache", cf, frame_s("chunkformer"), None),
        cached("emformer-m0"),
        cached("emformer-m4"),
        cached("zipformer"),
    ]


def params(module: torch.nn.Module) -> float:
    return sum(p.numel() for p in module.parameters()) / 1e6


def state_bytes(state: object) -> int:
    """Bytes of every tensor a state holds (fields may be tensors or tuples of them)."""
    tensors = [t for v in vars(state).values() for t in (v if isinstance(v, tuple) else (v,))
               if isinstance(t, torch.Tensor)]
    return sum(t.numel() * t.element_size() for t in tensors)


def _context(mode: Mode, chunk_s: float, position_s: float = 0.0) -> object:
    """The mode's context; unbounded left context = every frame before ``position_s``."""
    from echostream.encoders.base import ChunkContext

    chunk = round(chunk_s / mode.frame_s)
    left = mode.left if mode.left is not None else max(chunk, round(position_s / mode.frame_s))
    return ChunkContext(chunk=chunk, left=left, right=0)


def stream_steps(mode: Mode, chunk_s: float, seconds: float, seed: int = 0) -> Iterator[tuple[float, float, int]]:
    """Stream ``seconds`` of random features in chunks; yields (position s, step s, state bytes).

    A step is one chunk of audio (features of ``chunk_s``) through ``forward_chunk``; for
    ``reencode`` the whole stream so far through ``forward`` (no state: its memory is the
    features and the encoder output it keeps, counted as the state)."""
    g = torch.Generator().manual_seed(seed)
    per = round(chunk_s / FEATURE_S)
    total = round(seconds / FEATURE_S)
    context = _context(mode, chunk_s)
    encoder = mode.encoder
    with torch.inference_mode():
        if mode.left is None:
            raise ValueError(f"{mode.name} has unbounded left context; use one_step")
        state = encoder.init_state(1, context)
        final = torch.tensor([False])
        for start in range(0, total, per):
            x = torch.randn(1, per, BINS, generator=g)
            t0 = time.perf_counter()
            _, _, state = encoder.forward_chunk(x, torch.tensor([per]), state, final)
            took = time.perf_counter() - t0
            yield (start + per) * FEATURE_S, took, state_bytes(state)


def one_step(mode: Mode, chunk_s: float, position_s: float, seed: int = 0) -> tuple[float, int]:
    """The step at ``position_s`` of a mode with unbounded left context. Returns (seconds, bytes
    kept per stream).

    ``reencode``: all features so far through ``forward``, each chunk attending to every earlier
    one (it keeps the features and re-computes everything). ``unbounded-cache``: one chunk with a
    cache of every frame before it (the second of two steps, so that the cache is in use)."""
    g = torch.Generator().manual_seed(seed)
    context = _context(mode, chunk_s, position_s)
    with torch.inference_mode():
        if mode.reencode:
            n = round(position_s / FEATURE_S)
            x = torch.randn(1, n, BINS, generator=g)
            t0 = time.perf_counter()
            mode.encoder(x, torch.tensor([n]), context)
            return time.perf_counter() - t0, x.numel() * 4
        per = round(chunk_s / FEATURE_S)
        state = mode.encoder.init_state(1, context)
        final = torch.tensor([False])
        for _ in range(2):
            x = torch.randn(1, per, BINS, generator=g)
            t0 = time.perf_counter()
            _, _, state = mode.encoder.forward_chunk(x, torch.tensor([per]), state, final)
            took = time.perf_counter() - t0
        return took, state_bytes(state)


def positions(max_s: float, points: int = 10) -> list[float]:
    return [float(p) for p in np.unique(np.round(np.geomspace(1.0, max_s, points), 2))]


def profile(mode: Mode, chunk_s: float, max_s: float) -> list[dict[str, float]]:
    """Step time (median of the steps around each position) and state memory by position."""
    marks = positions(max_s)
    if mode.left is None:
        rows = []
        for p in marks:
            measured = [one_step(mode, chunk_s, p, seed) for seed in range(3 if p < 60 else 1)]
            rows.append({"position_s": p, "step_ms": statistics.median(t for t, _ in measured) * 1000,
                         "state_kb": measured[0][1] / 1024})
        return rows
    steps = list(stream_steps(mode, chunk_s, max_s))
    rows = []
    for p in marks:
        near = [s for s in steps if abs(s[0] - p) <= max(chunk_s * 2.5, p * 0.02)] or [min(steps, key=lambda s: abs(s[0] - p))]
        rows.append({"position_s": p, "step_ms": statistics.median(s[1] for s in near) * 1000,
                     "state_kb": near[-1][2] / 1024})
    return rows


def totals(mode: Mode, chunk_s: float) -> dict[float, float]:
    """Encoder seconds to stream each utterance length (every step, end to end)."""
    out = {}
    for seconds in UTTERANCES_S:
        if mode.left is None:
            out[seconds] = sum(one_step(mode, chunk_s, min(seconds, k * chunk_s))[0]
                               for k in range(1, int(np.ceil(seconds / chunk_s)) + 1))
        else:
            out[seconds] = sum(s[1] for s in stream_steps(mode, chunk_s, seconds))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", nargs="+", choices=["small", "large"], default=["small", "large"])
    parser.add_argument("--chunks-ms", nargs="+", type=int, default=[320, 640])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--max-minutes", type=float, default=10.0, help="longest stream position")
    parser.add_argument("--reencode-max-minutes", type=float,
                        help="a shorter profile for the re-encoding baseline, whose step grows as O(T^2) "
                             "(default: --max-minutes)")
    parser.add_argument("--modes", nargs="+", help="only these modes (reencode, the ratios' baseline, is always run)")
    parser.add_argument("--out", default=str(RESULTS / "encoder_cost"), help="output prefix (.json, .png)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    results: dict[str, object] = {"threads": args.threads, "max_minutes": args.max_minutes, "runs": []}
    runs: list[dict[str, object]] = results["runs"]  # type: ignore[assignment]
    for shape in args.shapes:
        for mode in modes(shape):
            if args.modes and mode.name not in {*args.modes, "reencode"}:
                continue
            for chunk_ms in args.chunks_ms:
                chunk_s = chunk_ms / 1000
                longest = args.max_minutes
                if mode.reencode and args.reencode_max_minutes is not None:
                    longest = min(longest, args.reencode_max_minutes)
                t0 = time.perf_counter()
                print(f"{shape} {mode.name} {chunk_ms} ms ...", file=sys.stderr, flush=True)
                run = {"shape": shape, "mode": mode.name, "chunk_ms": chunk_ms, "params_m": round(params(mode.encoder), 2),
                       "profile": profile(mode, chunk_s, longest * 60), "totals_s": totals(mode, chunk_s)}
                runs.append(run)
                print(f"  done in {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    report(results)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(results, indent=1))
    plot(results, out.with_suffix(".png"))
    print(f"\nwrote {out.with_suffix('.json')} and {out.with_suffix('.png')}")


def report(results: dict[str, object]) -> None:
    runs: list[dict] = results["runs"]  # type: ignore[assignment,type-arg]
    print(f"\nStep time (ms) and state memory (KB) by stream position, one stream, {results['threads']} threads")
    for run in runs:
        cells = "  ".join(f"{r['position_s']:>6.1f}s {r['step_ms']:>7.1f}ms {r['state_kb']:>7.0f}KB" for r in run["profile"])
        print(f"{run['shape']:<6} {run['mode']:<16} {run['chunk_ms']:>4} ms ({run['params_m']:>6.1f} M)  {cells}")
    print("\nTotal encoder time to stream an utterance (s), and re-encoding's time over it (x)")
    head = "".join(f"{s:>8.0f} s {'x':>7}" for s in UTTERANCES_S)
    print(f"{'shape':<6} {'mode':<16} {'chunk':>6} {head}")
    for run in runs:
        base = next(r for r in runs if r["shape"] == run["shape"] and r["chunk_ms"] == run["chunk_ms"]
                    and r["mode"] == "reencode")["totals_s"]
        cells = "".join(f"{run['totals_s'][s]:>10.3f} {base[s] / run['totals_s'][s]:>6.1f}x" for s in UTTERANCES_S)
        print(f"{run['shape']:<6} {run['mode']:<16} {run['chunk_ms']:>4}ms {cells}")
    print("seed claims of re-encoding over cached encoders: " + ", ".join(f"{s:.0f} s {c:g}x" for s, c in CLAIMS.items()))


def plot(results: dict[str, object], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs: list[dict] = results["runs"]  # type: ignore[assignment,type-arg]
    shapes = list(dict.fromkeys(r["shape"] for r in runs))
    chunks = list(dict.fromkeys(r["chunk_ms"] for r in runs))
    fig, axes = plt.subplots(2, len(shapes) * len(chunks), figsize=(5 * len(shapes) * len(chunks), 8), squeeze=False)
    for col, (shape, chunk) in enumerate((s, c) for s in shapes for c in chunks):
        for run in (r for r in runs if r["shape"] == shape and r["chunk_ms"] == chunk):
            xs = [p["position_s"] for p in run["profile"]]
            axes[0][col].plot(xs, [p["step_ms"] for p in run["profile"]], marker="o", label=run["mode"])
            axes[1][col].plot(xs, [p["state_kb"] for p in run["profile"]], marker="o", label=run["mode"])
        for row, what in enumerate(["step time (ms)", "state kept per stream (KB)"]):
            ax = axes[row][col]
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlabel("position in the stream (s)")
            ax.set_ylabel(what)
            ax.set_title(f"{shape}, {chunk} ms chunks")
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


if __name__ == "__main__":
    main()
