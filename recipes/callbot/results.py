#!/usr/bin/env python3
"""Fill the block of recipes/callbot/RESULTS.md from exp/eval: WER and CER of the starting model
and of the fine-tuned one on every test set, and their ratio. With --card, write the exported
model's card instead: the fine-tuning run's card, the test table, data and licence.

    python3 recipes/callbot/results.py --exp recipes/callbot/exp --init default
    python3 recipes/callbot/results.py --exp recipes/callbot/exp --init default --card assets/callbot/README.md
"""

from __future__ import annotations

import argparse
import datetime
import re
import sys
from pathlib import Path

from echostream.training.results import fill_block, plot_bars, plot_validation

HERE = Path(__file__).resolve().parent
RATE = re.compile(r"^(WER|CER) ([0-9.]+)%")
SETS = [
    ("test_line", "held-out calls, drawn lines + noise 5-15 dB (the recipe's mix)"),
    ("calls_test", "held-out calls, clean 16 kHz (no line)"),
    *[(f"test_codec_{c}", f"line with {c} only") for c in
      ("mulaw", "alaw", "gsm", "amr-nb", "g722", "g726", "speex", "codec2", "opus")],
    *[(f"test_snr_{b}", f"line + noise at {b.replace('-', ' to ')} dB SNR") for b in ("5-10", "10-15", "15-20")],
    ("fsdd_test", "FSDD real 8 kHz digits, the speaker the default model never heard"),
]  # fmt: skip


def rates(path: Path) -> dict[str, float] | None:
    if not path.is_file():
        return None
    found = {}
    for line in path.read_text(encoding="utf-8").splitlines()[:3]:
        match = RATE.match(line)
        if match:
            found[match.group(1)] = float(match.group(2))
    return found if "WER" in found else None


def table(exp: Path) -> str:
    lines = [
        "| test set | WER before | WER after | after / before | CER before | CER after |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, label in SETS:
        before, after = rates(exp / "eval" / f"init_{name}.txt"), rates(exp / "eval" / f"finetuned_{name}.txt")
        if before is None or after is None:
            continue
        ratio = after["WER"] / before["WER"] if before["WER"] > 0 else float("nan")
        lines.append(
            f"| {label} | {before['WER']:.2f} | {after['WER']:.2f} | {ratio:.2f} | "
            f"{before.get('CER', float('nan')):.2f} | {after.get('CER', float('nan')):.2f} |"
        )
    return "\n".join(lines)


def word_errors_by_vocabulary(exp: Path, data: Path, read: list[Path]) -> str:
    """A table of how often each model gets a reference word wrong (substituted or deleted), on
    the clean and the line test calls, by whether the word occurs in the training calls' text, only
    in the read speech the model learnt from before (``read``), or in neither."""
    import json

    import jiwer

    def words_of(manifests: list[Path]) -> set[str]:
        found: set[str] = set()
        for manifest in manifests:
            for line in manifest.read_text(encoding="utf-8").splitlines():
                found.update(re.findall(r"[a-z']+", json.loads(line)["text"].lower()))
        return found

    calls, earlier = words_of([data / "calls_train" / "manifest.jsonl"]), words_of(read)
    classes = ("in the training calls", "only in the starting model's training text", "in neither")
    lines = ["| test set | model | " + " | ".join(f"words {c}: wrong" for c in classes) + " |",
             "| --- | --- |" + " ---: |" * len(classes)]  # fmt: skip
    for name, label in (("calls_test", "clean"), ("test_line", "line + noise")):
        for model in ("init", "finetuned"):
            results = exp / "eval" / f"{model}_{name}.jsonl"
            if not results.is_file():
                continue
            wrong, total = [0] * 3, [0] * 3
            for line in results.read_text(encoding="utf-8").splitlines():
                row = json.loads(line)
                reference = row["reference"].split()
                if not reference:
                    continue
                missed = [False] * len(reference)
                for chunk in jiwer.process_words(" ".join(reference), row["hypothesis"]).alignments[0]:
                    if chunk.type in ("substitute", "delete"):
                        missed[chunk.ref_start_idx : chunk.ref_end_idx] = [True] * (chunk.ref_end_idx - chunk.ref_start_idx)
                for word, bad in zip(reference, missed):
                    k = 0 if word in calls else 1 if word in earlier else 2
                    wrong[k] += bad
                    total[k] += 1
            cells = " | ".join(f"{100 * w / t:.0f} % of {t}" if t else "-" for w, t in zip(wrong, total))
            lines.append(f"| {label} | {'before' if model == 'init' else 'after'} | {cells} |")
    return "\n".join(lines)


def plot(exp: Path, path: Path) -> bool:
    """WER before and after fine-tuning per test set (bars) and the fine-tuning run's validation
    WER over its hours, as one PNG; False without matplotlib."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        print("results.py: no plot without matplotlib (pip install 'echostream[bench]')", file=sys.stderr)
        return False
    names, before, after = [], [], []
    for name, _ in SETS:
        b, a = rates(exp / "eval" / f"init_{name}.txt"), rates(exp / "eval" / f"finetuned_{name}.txt")
        if b is not None and a is not None:
            names.append(name.removeprefix("test_"))
            before.append(b["WER"])
            after.append(a["WER"])
    plot_bars(names, {"before (starting model)": before, "after one fine-tuning step": after}, "WER (%)", path)
    plot_validation({"fine-tuning": exp / "finetune" / "exp"}, path.with_name(path.stem + "_validation.png"))
    return True


CARD = """
## Test results

Held-out call-centre calls (phrasings, names and places kept out of the training calls) spoken by
voices neither model trained on, greedy CTC at 64/128/128, before (`{init}`) and after fine-tuning
(`recipes/callbot/RESULTS.md` has the plots and how each set is made):

{table}

## Data and licence

Fine-tuned from the bundled default model (`recipes/general_en`) on recipes/callbot's calls: dialogues
written for echostream (CC0) rendered as two-sided calls by the default model's training voices
(espeak-ng, mbrola, flite, RHVoice, SVOX Pico, Piper, hibari), with a telephony copy through
simulated telephone lines (sox and ffmpeg codecs), noise (generated colours, babble of the training
calls, Debian's asterisk-moh-opsound hold music, CC BY-SA 3.0) and pyroomacoustics rooms. Never
trained on: festival, any voice of the CMU ARCTIC speaker slt, the Asterisk prompt packages, the
test voices and the FSDD speaker held out. Like the default model it derives from the Free Spoken
Digit Dataset and is distributed under the Creative Commons Attribution-ShareAlike 4.0
International licence, with attribution to the FSDD contributors.

Use: `echostream transcribe --model callbot FILE` (8 kHz telephone audio or wideband; `--channel
left|right` for one side of a stereo call), `load_model("callbot")`, `echostream serve --model callbot`.
It is a demonstration fine-tuned on synthetic speech, like the model it starts from.
"""


def write_card(exp: Path, init: str, card: Path) -> None:
    """The exported model's card: the fine-tuning run's card with the test table appended."""
    run_card = (exp / "finetune" / "model" / "README.md").read_text(encoding="utf-8").rstrip()
    run_card = run_card.replace("# Fine-tuned model", "# echostream call-bot model (English)", 1)
    text = run_card + "\n\nMade by `recipes/callbot/run.sh` (stage 3, one `echostream finetune` command).\n"
    card.write_text(text + CARD.format(init=init, table=table(exp)), encoding="utf-8")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--exp", required=True, type=Path)
    parser.add_argument("--init", required=True)
    parser.add_argument("--card", type=Path, help="write the exported model's card here and stop")
    parser.add_argument("--data", type=Path, default=HERE / "data", help="the recipe's data (default: data/)")
    parser.add_argument("--read", type=Path, nargs="*", default=[HERE.parent / "general_en" / "data" / "train" / "manifest.jsonl"],
                        help="manifests of the text the starting model learnt (default: general_en's training set)")
    args = parser.parse_args()
    if args.card is not None:
        write_card(args.exp, args.init, args.card)
        return 0
    report = args.exp / "finetune" / "report.md"
    block = (
        f"Filled by `run.sh` on {datetime.date.today().isoformat()}; starting model `{args.init}`, "
        f"greedy CTC at chunk/left/right 64/128/128 (the fine-tuning context).\n\n{table(args.exp)}\n\n"
        + (report.read_text(encoding="utf-8").split("\n", 2)[2].strip() + "\n" if report.is_file() else "")
    )
    if (args.data / "calls_train" / "manifest.jsonl").is_file() and all(p.is_file() for p in args.read):
        block += ("\nTest words the models get wrong (substituted or deleted), by where the word occurs "
                  "in training text:\n\n" + word_errors_by_vocabulary(args.exp, args.data, args.read) + "\n")
    if plot(args.exp, HERE / "before_after.png"):
        block += "\n![WER before and after per test set](before_after.png)\n"
        block += "\n![validation WER over the fine-tuning hours](before_after_validation.png)\n"
    results = HERE / "RESULTS.md"
    try:
        fill_block(results, block, "callbot: results")
    except ValueError as err:
        print(err, file=sys.stderr)
        return 1
    print(table(args.exp))
    return 0


if __name__ == "__main__":
    sys.exit(main())
