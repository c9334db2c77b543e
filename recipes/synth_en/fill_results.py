#!/usr/bin/env python3
"""Fill the results block of RESULTS.md, and write the bundled model's README, from run.sh's
experiment folder (its eval/*.jsonl, valid.jsonl, train.jsonl and average.pt).

    fill_results.py --run exp/small --results RESULTS.md --model-card .../small_en/README.md
"""

from __future__ import annotations

import argparse
import datetime
import sys
from pathlib import Path

from echostream.training.results import (
    fill_block,
    groups_table,
    percent,
    read_results,
    run_summary,
    sets_table,
    word_counts,
)

SETS = {
    "heldout": "heldout (new text, training voices)",
    "heldout_new_voices": "heldout_new_voices (new text, new voices)",
    "eval_festival": "eval_festival (unseen engine)",
    "fsdd_test": "fsdd/test (real speech, digits)",
}
CONTEXTS = ["c64_l128_r128", "c8_l32_r8"]


def results_block(run: Path) -> tuple[str, list[str]]:
    """Markdown of the results, and one summary line per set (for the model card)."""
    lines = [f"Filled by `run.sh` on {datetime.date.today().isoformat()}.", "", *run_summary(run, "heldout")]
    evals = run / "eval"
    lines += ["", sets_table(evals, SETS, CONTEXTS), "", "WER (%) per voice family:", ""]
    lines.append(groups_table(evals, list(SETS), CONTEXTS))
    summary = []
    for s in SETS:
        rows64 = read_results(evals / f"{s}_{CONTEXTS[0]}.jsonl")
        if rows64:
            summary.append(f"{s}: WER {percent(word_counts(rows64))}% at 64/128/128")
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
    try:
        fill_block(args.results, block)
    except ValueError as err:
        print(err, file=sys.stderr)
        return 1
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
