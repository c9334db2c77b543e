#!/usr/bin/env python3
"""Manifests for the Free Spoken Digit Dataset subset in ../shared/data/fsdd (real 8 kHz speech).

Files are named ``{digit}_{speaker}_{index}.wav``; the transcript is the digit's word ("seven").
Recordings with index 0-4 of every speaker and digit form the test split, the rest the training
split. The audio is referenced where it lies (paths relative to each manifest), never copied.

    python3 recipes/synth_en/fsdd_manifest.py --fsdd ../shared/data/fsdd --out data/fsdd

writes ``train.jsonl`` and ``test.jsonl`` in ``--out``. With ``--heldout-speaker NAME`` every
recording of that speaker goes to ``heldout_speaker.jsonl`` instead, for a test on a speaker the
model never heard (recipes/general_en holds out one of the five). Licence of the audio: CC BY-SA 4.0 (see the
dataset's README); anything derived from it and shipped carries the same licence and attribution.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from echostream.audio import AudioError, audio_duration
from echostream.data.manifest import Utterance, write_manifest

DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
TEST_INDICES = range(5)
FILE_NAME = re.compile(r"^(\d)_([A-Za-z]+)_(\d+)\.wav$")


def fsdd_manifests(
    folder: Path, heldout_speaker: str | None = None
) -> tuple[list[Utterance], list[Utterance], list[Utterance], list[str]]:
    """(train rows, test rows, held-out speaker's rows, problems) for every
    ``{digit}_{speaker}_{index}.wav`` in ``folder``."""
    train: list[Utterance] = []
    test: list[Utterance] = []
    held: list[Utterance] = []
    problems: list[str] = []
    for wav in sorted(folder.glob("*.wav")):
        match = FILE_NAME.match(wav.name)
        if match is None:
            problems.append(f"{wav.name}: not named {{digit}}_{{speaker}}_{{index}}.wav")
            continue
        digit, speaker, index = int(match[1]), match[2], int(match[3])
        try:
            duration = audio_duration(wav)
        except AudioError as err:
            problems.append(str(err))
            continue
        row = Utterance(
            id=f"fsdd-{wav.stem}",
            audio=str(wav),
            text=DIGIT_WORDS[digit],
            duration=duration,
            speaker=f"fsdd:{speaker}",
            language="en",
        )
        if speaker == heldout_speaker:
            held.append(row)
        else:
            (test if index in TEST_INDICES else train).append(row)
    return train, test, held, problems


def main() -> int:
    parser = argparse.ArgumentParser(description="Write FSDD train/test manifests.")
    parser.add_argument("--fsdd", type=Path, required=True, help="the FSDD folder")
    parser.add_argument(
        "--out", type=Path, required=True, help="folder for train.jsonl, test.jsonl"
    )
    parser.add_argument("--heldout-speaker", help="write this speaker's recordings to heldout_speaker.jsonl only")
    args = parser.parse_args()
    if not args.fsdd.is_dir():
        print(f"fsdd_manifest: error: {args.fsdd}: not a directory", file=sys.stderr)
        return 1
    train, test, held, problems = fsdd_manifests(args.fsdd, args.heldout_speaker)
    if args.heldout_speaker and not held:
        print(f"fsdd_manifest: error: no recordings of speaker {args.heldout_speaker!r}", file=sys.stderr)
        return 1
    for problem in problems:
        print(f"warning: {problem}", file=sys.stderr)
    if not train or not test:
        print(f"fsdd_manifest: error: {args.fsdd}: no usable recordings", file=sys.stderr)
        return 1
    write_manifest(args.out / "train.jsonl", train)
    write_manifest(args.out / "test.jsonl", test)
    if held:
        write_manifest(args.out / "heldout_speaker.jsonl", held)
    speakers = len({row.speaker for row in train + test})
    print(f"fsdd: {len(train)} train and {len(test)} test utterances from {speakers} speakers")
    return 0


if __name__ == "__main__":
    sys.exit(main())
