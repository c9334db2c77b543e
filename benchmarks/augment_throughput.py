"""Throughput of the training data loader with the call-bot augmentation against the plain one.

Builds the batches of a manifest the way training does (``BatchDataset``: read, speed
perturbation, room, noise, telephone line, fbank, SpecAugment) in this process, one variant after
another in interleaved rounds, and prints audio seconds prepared per wall second and the ratio to
the plain loader. Training on this machine consumes about 67 audio s/s (the default model's
config, 2 threads; benchmarks/results/training_throughput.txt): a loader worker slower than that
starves it.

    python benchmarks/augment_throughput.py [--manifest M] [--utterances 120] [--rounds 3]

Variants: plain (no augmentation), speed + SpecAugment (the former fine-tuning config), the
call-bot recipe (configs/finetune.yaml: speed, reverb, noise, SpecAugment), the recipe with every
utterance through a telephone line drawn from the default channel distribution (inline codecs),
and the line with the sox codecs only (G.711, GSM, AMR-NB).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import yaml

from echostream.config import from_dict
from echostream.data.channel import ChannelConfig
from echostream.data.manifest import read_manifest
from echostream.frontend.fbank import FbankConfig
from echostream.frontend.specaugment import SpecAugmentConfig
from echostream.training.config import AugmentConfig
from echostream.training.dataset import BatchDataset, BatchKey, Example

REPO = Path(__file__).resolve().parents[1]
HELDOUT = REPO / "recipes" / "synth_en" / "data" / "heldout" / "manifest.jsonl"


def variants() -> list[tuple[str, AugmentConfig | None]]:
    recipe = from_dict(
        AugmentConfig, yaml.safe_load((REPO / "configs" / "finetune.yaml").read_text())["augment"]
    )
    sox_only = ChannelConfig(codecs=("mulaw", "alaw", "gsm", "amr-nb"), codec_weights=(3.0, 2.0, 2.0, 2.0))
    return [
        ("plain (baseline)", None),
        ("speed + SpecAugment", AugmentConfig(speed_factors=(0.9, 1.0, 1.1), spec_augment=SpecAugmentConfig())),
        ("call-bot recipe", recipe),
        ("recipe + line (all codecs)", dataclasses.replace(recipe, channel=ChannelConfig())),
        ("recipe + line (sox codecs)", dataclasses.replace(recipe, channel=sox_only)),
    ]


def measure(examples: list[Example], augment: AugmentConfig | None, batch: int) -> tuple[float, float]:
    """(audio seconds prepared, wall seconds) for every example, in batches of ``batch``."""
    dataset = BatchDataset(examples, FbankConfig(), augment, seed=0)
    if dataset.conditions is not None and dataset.conditions.reverb is not None:
        _ = dataset.conditions.reverb.bank  # rooms are computed once per worker: not timed
    started = time.perf_counter()
    seconds = 0.0
    for position, first in enumerate(range(0, len(examples), batch)):
        key = BatchKey(epoch=0, position=position, indices=tuple(range(first, min(first + batch, len(examples)))))
        seconds += dataset[key].seconds
    return seconds, time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--manifest", default=str(HELDOUT), help="speech to load (default: synth_en heldout)")
    parser.add_argument("--utterances", type=int, default=120, help="utterances per variant")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; the median is shown")
    args = parser.parse_args()
    if not Path(args.manifest).is_file():
        parser.error(f"{args.manifest} not found (recipes/synth_en/run.sh --stop-stage 0 makes it)")
    rows = read_manifest(args.manifest)[: args.utterances]
    examples = [Example(row=r, text=r.text, tokens=(1,)) for r in rows]
    audio = sum(r.duration for r in rows)
    print(f"{len(rows)} utterances, {audio:.0f} s of speech from {args.manifest}; one process", file=sys.stderr)
    runs: dict[str, list[float]] = {}
    for round_ in range(args.rounds):
        for name, augment in variants():
            seconds, wall = measure(examples, augment, batch=16)
            runs.setdefault(name, []).append(seconds / wall)
            print(f"  round {round_ + 1}, {name}: {seconds / wall:.1f} audio s/s", file=sys.stderr)
    medians = {name: sorted(rates)[len(rates) // 2] for name, rates in runs.items()}
    baseline = next(iter(medians.values()))
    print(f"{'loader variant':<30} {'audio s/s':>10} {'vs plain':>9}")
    for name, rate in medians.items():
        print(f"{name:<30} {rate:>10.1f} {rate / baseline:>8.2f}x")
    print(f"(one loader process; median of {args.rounds} interleaved rounds)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
