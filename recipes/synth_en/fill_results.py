#!/usr/bin/env python3
"""Fill the results block of RESULTS.md, and write the bundled model's README, from run.sh's
experiment folder (its eval/*.jsonl, valid.jsonl, train.jsonl and average.pt).

    fill_results.py --run exp/small --results RESULTS.md --model-card .../default_model/README.md
"""

from __future__ import annotations

import argparse
import datetime
import json
import re
import sys
from collections import defaultdict
from pathlib import Path

import torch

from echostream.training import experiment as ex
from echostream.training.evaluation import ErrorCounts

SETS = {
    "heldout": "heldout (new text, training voices)",
    "heldout_new_voices": "heldout_new_voices (new text, new voices)",
    "eval_festival": "eval_festival (unseen engine)",
    "fsdd_test": "fsdd/test (real speech, digits)",
}
CONTEXTS = ["c64_l128_r128", "c8_l32_r8"]
BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"


def _counts(rows: list[dict], kind: str) -> ErrorCounts:
    if kind == "words":
        return ErrorCounts(
            substitutions=sum(r["substitutions"] for r in rows),
            insertions=sum(r["insertions"] for r in rows),
            deletions=sum(r["deletions"] for r in rows),
            reference_length=sum(r["words"] for r in rows),
        )
    return ErrorCounts(
        substitutions=sum(r["char_errors"] for r in rows),
        reference_length=sum(r["chars"] for r in rows),
    )


def _pct(c: ErrorCounts) -> str:
    return f"{100 * c.rate:.2f}"


def _context_label(name: str) -> str:
    return "/".join(re.findall(r"\d+", name))


def results_block(run: Path) -> tuple[str, list[str]]:
    """Markdown of the results, and one summary line per set (for the model card)."""
    evals: dict[tuple[str, str], list[dict]] = {}
    for s in SETS:
        for c in CONTEXTS:
            path = run / "eval" / f"{s}_{c}.jsonl"
            if path.is_file():
                evals[(s, c)] = [
                    json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()
                ]
    validations = ex.validations(run)
    train_log = ex.read_records(run / ex.TRAIN_LOG)
    payload = torch.load(run / "average.pt", map_location="cpu", weights_only=True)
    parameters = sum(t.numel() for t in payload["model"].values() if t.is_floating_point())
    lines = [f"Filled by `run.sh` on {datetime.date.today().isoformat()}.", ""]
    if validations:
        best = min(validations, key=lambda v: (v.wer, v.loss))
        lines.append(
            f"- Training: {validations[-1].step} steps ({validations[-1].epoch} complete epochs); best validation "
            f"(heldout, 64/128/128) at step {best.step}: WER {100 * best.wer:.2f}%, loss {best.loss:.3f}."
        )
    if train_log:
        lines.append(
            f"- Throughput: {train_log[-1]['audio_per_second']:.1f} audio seconds per wall second."
        )
    lines.append(
        f"- Model: {parameters / 1e6:.2f} M parameters, the average of "
        f"{', '.join(payload.get('averaged', [])) or 'one checkpoint'}."
    )
    lines += [
        "",
        "| set | utterances | "
        + " | ".join(f"WER {_context_label(c)} | CER {_context_label(c)}" for c in CONTEXTS)
        + " |",
    ]
    lines.append("| --- | ---: | " + " | ".join("---: | ---:" for _ in CONTEXTS) + " |")
    summary = []
    for s, title in SETS.items():
        if not any((s, c) in evals for c in CONTEXTS):
            continue
        cells = []
        count = 0
        for c in CONTEXTS:
            rows = evals.get((s, c), [])
            count = max(count, len(rows))
            cells.append(
                f"{_pct(_counts(rows, 'words'))} | {_pct(_counts(rows, 'chars'))}"
                if rows
                else "- | -"
            )
        lines.append(f"| {title} | {count} | " + " | ".join(cells) + " |")
        rows64 = evals.get((s, CONTEXTS[0]), [])
        if rows64:
            summary.append(f"{s}: WER {_pct(_counts(rows64, 'words'))}% at 64/128/128")
    lines += ["", "WER (%) per voice family:", ""]
    lines.append("| set | family | " + " | ".join(_context_label(c) for c in CONTEXTS) + " |")
    lines.append("| --- | --- | " + " | ".join("---:" for _ in CONTEXTS) + " |")
    for s in SETS:
        groups: dict[str, dict[str, list[dict]]] = defaultdict(lambda: defaultdict(list))
        for c in CONTEXTS:
            for r in evals.get((s, c), []):
                groups[r.get("group", "?")][c].append(r)
        for family in sorted(groups):
            cells = [
                _pct(_counts(groups[family][c], "words")) if groups[family][c] else "-"
                for c in CONTEXTS
            ]
            lines.append(f"| {s} | {family} | " + " | ".join(cells) + " |")
    return "\n".join(lines), summary


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--run", required=True, type=Path)
    parser.add_argument("--results", required=True, type=Path)
    parser.add_argument("--model-card", type=Path)
    parser.add_argument("--config", default="configs/synth_en_small.yaml")
    args = parser.parse_args()
    block, summary = results_block(args.run)
    text = args.results.read_text(encoding="utf-8")
    if BEGIN not in text or END not in text:
        print(f"{args.results}: no {BEGIN} ... {END} block to fill", file=sys.stderr)
        return 1
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    args.results.write_text(f"{head}{BEGIN}\n{block}\n{END}{tail}", encoding="utf-8")
    if args.model_card is not None:
        args.model_card.write_text(
            "# echostream default model (English)\n\n"
            f"Trained by `recipes/synth_en/run.sh` with `{Path(args.config).name}` on "
            f"{datetime.date.today().isoformat()}; see `recipes/synth_en/RESULTS.md`.\n\n"
            + "".join(f"- {line}\n" for line in summary)
            + "\nUse: `echostream transcribe FILE` loads this model when no `--model` is given; chunk "
            "and context sizes are free (it was trained with chunks of 4 to 32 frames and full context).\n"
            "\nLimits: a small model for demonstrations and tests, not a general English recogniser. "
            "Its vocabulary is the few hundred words of the recipe's sentences "
            "(`recipes/synth_en/sentences/generate.py`) and the digits; it has heard synthetic voices "
            "and five real speakers only. Trained on single wideband sentences, it garbles several "
            "sentences joined by pauses and 8 kHz or telephone-band audio (see `samples/README.md`).\n"
            + "\nTraining data: sentences written for echostream (CC0) spoken by espeak-ng, mbrola and flite "
            "voices, and the Free Spoken Digit Dataset (FSDD, commit 26eb9aa, CC BY-SA 4.0). Because the "
            "model is derived from FSDD, it is distributed under the Creative Commons "
            "Attribution-ShareAlike 4.0 International licence, with attribution to the FSDD "
            "contributors.\n",
            encoding="utf-8",
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
