#!/usr/bin/env python3
"""Small manifests of recipes/general_en: the sentences chosen for rendering, and the real
recorded speech it is evaluated on.

    manifests.py choose --text data/text/train.txt --count 40000 --seed 1 > data/text/render_train.txt
    manifests.py librivox --out data/librivox.jsonl      (Debian pocketsphinx-testdata)

``choose`` takes ``--count`` sentences spread over the sources by the shares below (a source with
fewer takes all it has, the rest go to the others), reproducibly from ``--seed``, and prints them
one per line for ``echostream synth --sentences``.
"""

from __future__ import annotations

import argparse
import random
import re
import sys
from collections import defaultdict
from pathlib import Path

SHARES = {"chitchat": 0.45, "wordnet": 0.2, "bible": 0.15, "callbot": 0.1, "synth_en": 0.1}
LIBRIVOX = Path("/usr/share/pocketsphinx/test/data/librivox")


def choose(text: Path, count: int, seed: int) -> list[str]:
    by_source: dict[str, list[str]] = defaultdict(list)
    for line in text.read_text(encoding="utf-8").splitlines():
        source, _, sentence = line.partition("\t")
        by_source[source].append(sentence)
    rng = random.Random(seed)
    chosen: list[str] = []
    wanted = {s: round(count * share) for s, share in SHARES.items() if s in by_source}
    spare = 0
    for source in sorted(wanted, key=lambda s: len(by_source[s])):  # the smallest first
        pool = by_source[source]
        take = min(len(pool), wanted[source] + spare)
        spare = wanted[source] + spare - take
        chosen += rng.sample(pool, take)
    rng.shuffle(chosen)
    return chosen


def librivox(out: Path) -> int:
    from echostream.audio import audio_duration
    from echostream.data.manifest import Utterance, write_manifest

    rows = []
    for line in (LIBRIVOX / "transcription").read_text(encoding="utf-8").splitlines():
        match = re.match(r"<s> (.*) </s> \((\S+)\)", line)
        if match:
            wav = LIBRIVOX / f"{match[2]}.wav"
            rows.append(Utterance(id=match[2], audio=str(wav), text=match[1], duration=audio_duration(wav),
                                  speaker="librivox:austen", language="en"))  # fmt: skip
    write_manifest(out, rows)
    return len(rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    verbs = parser.add_subparsers(dest="verb", required=True)
    pick = verbs.add_parser("choose")
    pick.add_argument("--text", type=Path, required=True)
    pick.add_argument("--count", type=int, required=True)
    pick.add_argument("--seed", type=int, default=1)
    real = verbs.add_parser("librivox")
    real.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    if args.verb == "choose":
        for sentence in choose(args.text, args.count, args.seed):
            print(sentence)
        return 0
    if not LIBRIVOX.is_dir():
        print(f"manifests.py: {LIBRIVOX} missing (apt-get install pocketsphinx-testdata)", file=sys.stderr)
        return 1
    print(f"{librivox(args.out)} LibriVox utterances written to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
