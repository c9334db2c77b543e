"""Training throughput (audio seconds trained per wall second) of the default model's configuration.

Runs ``echostream.training.trainer.train`` itself (DataLoader, fbank, augmentation when
configured, limited-context encoder, CTC + attention losses, AdamW) for a few steps on synthetic
utterances (noise with a syllable-rate envelope, 1.5-4.5 s, random letter transcripts), once per
variant, and prints a table. The first steps of each variant are left out of the rate (warm-up).
Transcripts are tokenized with the config's tokenizer when it exists (run.sh stage 1 writes it),
so the output layer has the default model's size; otherwise with a character tokenizer.

    python benchmarks/training_throughput.py [--config configs/synth_en_small.yaml] [--steps 12]

Variants: the config as it is (the baseline); with the call-bot augmentation of
configs/finetune.yaml (speed perturbation 0.9/1.0/1.1, SpecAugment 2x F=27, 2x T=100); batch
size 1; bf16 autocast (CPU).
"""

from __future__ import annotations

import argparse
import copy
import os
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import torch
import yaml

from echostream.data.manifest import Utterance, write_manifest
from echostream.text.tokenizer import train_tokenizer
from echostream.training.config import load_train_config
from echostream.training.trainer import StepReport, train

REPO = Path(__file__).resolve().parents[1]
WARMUP_STEPS = 2
CALL_BOT = REPO / "configs" / "finetune.yaml"  # its augment section is the call-bot variant


def synthetic_corpus(folder: Path, count: int, seed: int) -> tuple[Path, Path, list[str]]:
    """``count`` training WAVs + 2 validation WAVs, their manifests, and the transcripts."""
    rng = np.random.default_rng(seed)
    words = [
        "".join(random.Random(i).choices("abcdefghijklmnopqrstuvwxyz", k=3 + i % 5))
        for i in range(200)
    ]
    rows = []
    for i in range(count + 2):
        duration = float(rng.uniform(1.5, 4.5))
        n = int(duration * 16000)
        t = np.arange(n) / 16000
        envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 4.0 * t + rng.uniform(0, 6.28))  # ~4 syllables/s
        audio = (0.1 * envelope * rng.standard_normal(n)).astype(np.float32)
        path = folder / f"u{i:04d}.wav"
        sf.write(path, audio, 16000, subtype="PCM_16")
        text = " ".join(rng.choice(words, size=max(1, int(duration * 2.5))))
        rows.append(Utterance(id=f"u{i:04d}", audio=str(path), text=text, duration=n / 16000))
    write_manifest(folder / "train.jsonl", rows[:count])
    write_manifest(folder / "valid.jsonl", rows[count:])
    return folder / "train.jsonl", folder / "valid.jsonl", [r.text for r in rows]


def run_variant(
    base: dict[str, Any], changes: dict[str, Any], folder: Path, steps: int
) -> tuple[float, float, float]:
    """(audio seconds, wall seconds, audio s per s) over the steps after the warm-up."""
    cfg_dict = copy.deepcopy(base)
    for section, value in changes.items():
        if isinstance(value, dict):
            cfg_dict.setdefault(section, {}).update(value)
        else:
            cfg_dict[section] = value
    cfg_dict.update({"max_steps": steps, "max_epochs": 1000})
    cfg_dict["validation"] = {**cfg_dict.get("validation", {}), "every_steps": 10**6}
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(cfg_dict), encoding="utf-8")
    cfg = load_train_config(path)
    marks: list[tuple[float, float]] = []

    def on_step(report: StepReport) -> None:
        marks.append((time.perf_counter(), report.audio_seconds))

    with tempfile.TemporaryDirectory(dir=folder) as exp:
        train(cfg, Path(exp) / "exp", on_step=on_step)
    (t0, a0), (t1, a1) = marks[WARMUP_STEPS - 1], marks[-1]
    return a1 - a0, t1 - t0, (a1 - a0) / (t1 - t0)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", default=str(REPO / "configs" / "synth_en_small.yaml"))
    parser.add_argument(
        "--steps", type=int, default=12, help="optimizer steps per variant (default 12)"
    )
    parser.add_argument("--utterances", type=int, default=240, help="synthetic training utterances")
    parser.add_argument(
        "--batch-seconds",
        type=float,
        default=60.0,
        help="sampler.max_batch_seconds for the runs (default 60: quick on a laptop CPU)",
    )
    parser.add_argument(
        "--rounds", type=int, default=3, help="interleaved rounds; the median is shown"
    )
    parser.add_argument(
        "--threads", type=int, default=0, help="torch threads (default: torch's choice)"
    )
    args = parser.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    if args.steps <= WARMUP_STEPS:
        parser.error(f"--steps must exceed the {WARMUP_STEPS} warm-up steps")

    base = yaml.safe_load(Path(args.config).read_text(encoding="utf-8"))
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        train_manifest, valid_manifest, texts = synthetic_corpus(folder, args.utterances, seed=0)
        configured = Path(args.config).parent / str(base.get("tokenizer", ""))
        if base.get("tokenizer") and configured.is_dir():
            base["tokenizer"] = str(configured.resolve())
            tokenizer_note = f"tokenizer {configured.resolve()}"
        else:
            train_tokenizer(texts, folder / "tokenizer", kind="char", vocab_size=None)
            base["tokenizer"] = str(folder / "tokenizer")
            tokenizer_note = "character tokenizer (the configured one does not exist yet)"
        base["data"] = {
            **base["data"],
            "train": [str(train_manifest)],
            "valid": [str(valid_manifest)],
            "cmvn_utterances": 20,
        }
        base["sampler"] = {**base["sampler"], "max_batch_seconds": args.batch_seconds}
        call_bot_augment = yaml.safe_load(CALL_BOT.read_text(encoding="utf-8"))["augment"]
        variants: list[tuple[str, dict[str, Any]]] = [
            ("as configured (baseline)", {}),
            ("call-bot augmentation", {"augment": call_bot_augment}),
            ("batch size 1", {"sampler": {"max_batch_size": 1}}),
            ("bf16 autocast", {"precision": "bf16"}),
        ]
        encoder = base["model"]["encoder"]
        print(
            f"model: d={encoder['output_size']} blocks={encoder['num_blocks']} ffn={encoder['linear_units']} "
            f"kernel={encoder['cnn_module_kernel']} (+ decoder); batches <= {args.batch_seconds:.0f} s; "
            f"{torch.get_num_threads()} torch threads, {os.cpu_count()} CPUs; "
            f"data workers {base['data'].get('num_workers', 0)}; {args.steps} steps, first {WARMUP_STEPS} not timed; "
            f"{tokenizer_note}",
            file=sys.stderr,
        )
        runs: dict[str, list[tuple[float, float, float]]] = {name: [] for name, _ in variants}
        for round_ in range(args.rounds):  # interleaved, so that a busy spell hits every variant
            for name, changes in variants:
                measured = run_variant(base, changes, folder, args.steps)
                runs[name].append(measured)
                print(f"  round {round_ + 1}, {name}: {measured[2]:.1f} audio s/s", file=sys.stderr)
    rows = [
        (name, sorted(runs[name], key=lambda r: r[2])[len(runs[name]) // 2]) for name, _ in variants
    ]
    baseline = rows[0][1][2]
    print(f"{'variant':<28} {'audio s':>9} {'wall s':>8} {'audio s/s':>10} {'vs baseline':>12}")
    for name, (audio, wall, rate) in rows:
        print(f"{name:<28} {audio:>9.1f} {wall:>8.1f} {rate:>10.1f} {rate / baseline:>11.2f}x")
    print(
        f"(median of {args.rounds} interleaved rounds; the CPU may be shared, so compare within a run)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
