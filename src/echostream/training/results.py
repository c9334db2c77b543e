"""Recipe result tables: the per-utterance files of ``echostream eval --out`` summed into
Markdown tables (WER and CER per test set and decoding context, per voice family), and the
``<!-- results:begin -->`` block of a recipe's RESULTS.md rewritten with them.

Files are looked up as ``EVAL_DIR/<set>_<context>.jsonl`` (the recipes' naming, for example
``test_voices_c64_l128_r128.jsonl``). Sets without speech (every reference empty) are reported as
how many clips got output and how many words, since their error rate is undefined.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

from echostream.training import experiment as ex
from echostream.training.evaluation import ErrorCounts, UtteranceResult, total

BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"


def read_results(path: Path) -> list[dict]:
    """The rows of an ``echostream eval --out`` file; [] when it does not exist."""
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def word_counts(rows: Sequence[Mapping]) -> ErrorCounts:
    return total(UtteranceResult.from_dict(r).words for r in rows)


def char_counts(rows: Sequence[Mapping]) -> ErrorCounts:
    return total(UtteranceResult.from_dict(r).chars for r in rows)


def percent(counts: ErrorCounts) -> str:
    return f"{100 * counts.rate:.2f}"


def context_label(name: str) -> str:
    """A decoding setting's file-name part as a column label: chunk/left/right, and the decoding
    when it is not greedy CTC.

    >>> context_label("c64_l128_r128"), context_label("c64_l128_r128_attention_rescoring")
    ('64/128/128', '64/128/128 attention rescoring')
    """
    match = re.fullmatch(r"c(\d+)_l(\d+)_r(\d+)(?:_(\w+))?", name)
    if match is None:
        return name
    label = "/".join(match.group(1, 2, 3))
    return f"{label} {match[4].replace('_', ' ')}" if match[4] else label


def _cells(rows: Sequence[Mapping]) -> str:
    if not rows:
        return "- | -"
    if all(r["words"] == 0 for r in rows):  # no speech: what matters is whether words came out
        spoken = sum(1 for r in rows if r["hypothesis"])
        return f"{spoken} of {len(rows)} clips with output | {sum(r['insertions'] for r in rows)} words"
    return f"{percent(word_counts(rows))} | {percent(char_counts(rows))}"


def sets_table(eval_dir: Path, sets: Mapping[str, str], contexts: Sequence[str]) -> str:
    """One row per set (its title from ``sets``), WER and CER per context; sets with no file
    at any context are left out."""
    lines = [
        "| set | utterances | "
        + " | ".join(f"WER {context_label(c)} | CER {context_label(c)}" for c in contexts)
        + " |",
        "| --- | ---: | " + " | ".join("---: | ---:" for _ in contexts) + " |",
    ]
    for name, title in sets.items():
        found = {c: read_results(eval_dir / f"{name}_{c}.jsonl") for c in contexts}
        if not any(found.values()):
            continue
        count = max(len(rows) for rows in found.values())
        lines.append(
            f"| {title} | {count} | " + " | ".join(_cells(found[c]) for c in contexts) + " |"
        )
    return "\n".join(lines)


def groups_table(eval_dir: Path, sets: Sequence[str], contexts: Sequence[str]) -> str:
    """WER per set and group (``eval --group-by``: the voice family), one column per context."""
    lines = [
        "| set | group | " + " | ".join(context_label(c) for c in contexts) + " |",
        "| --- | --- | " + " | ".join("---:" for _ in contexts) + " |",
    ]
    for name in sets:
        groups: dict[str, dict[str, list[dict]]] = defaultdict(lambda: defaultdict(list))
        for c in contexts:
            for row in read_results(eval_dir / f"{name}_{c}.jsonl"):
                if row["words"]:
                    groups[row.get("group", "?")][c].append(row)
        for group in sorted(groups):
            cells = [
                percent(word_counts(groups[group][c])) if groups[group][c] else "-"
                for c in contexts
            ]
            lines.append(f"| {name} | {group} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def run_summary(run: Path, valid_set: str) -> list[str]:
    """Markdown bullets on a training run's folder: steps, epochs and best validation (on
    ``valid_set``, 64/128/128), the training hours (summed over resumes) and throughput, and the
    averaged model's size and checkpoints (when ``average.pt`` is there)."""
    validations = ex.validations(run)
    records = ex.read_records(run / ex.TRAIN_LOG)
    lines = []
    if validations:
        best = min(validations, key=lambda v: (v.wer, v.loss))
        lines.append(
            f"- Training: {validations[-1].step} steps ({validations[-1].epoch} complete epochs); best validation "
            f"({valid_set}, 64/128/128) at step {best.step}: WER {100 * best.wer:.2f}%, loss {best.loss:.3f}."
        )
    if records:
        hours = ex.training_seconds(records) / 3600
        lines.append(
            (f"- Cost: {hours:.1f} hours of training on this machine; " if hours else "- ")
            + f"{records[-1]['audio_per_second']:.1f} audio seconds per wall second at the end."
        )
    average = run / "average.pt"
    if average.is_file():
        payload = torch.load(average, map_location="cpu", weights_only=True)
        parameters = sum(t.numel() for t in payload["model"].values() if t.is_floating_point())
        lines.append(
            f"- Model: {parameters / 1e6:.2f} M parameters, the average of "
            f"{', '.join(payload.get('averaged', [])) or 'one checkpoint'}."
        )
    return lines


def fill_block(results: Path, block: str, title: str | None = None) -> None:
    """Replace what lies between ``BEGIN`` and ``END`` in ``results`` with ``block``; a missing
    file is made (``# title`` and the block) when ``title`` is given."""
    if title is not None and not results.is_file():
        results.write_text(f"# {title}\n\n{BEGIN}\n{END}\n", encoding="utf-8")
    text = results.read_text(encoding="utf-8")
    if BEGIN not in text or END not in text:
        raise ValueError(f"{results}: no {BEGIN} ... {END} block to fill")
    head, rest = text.split(BEGIN, 1)
    results.write_text(
        f"{head}{BEGIN}\n{block.strip()}\n{END}{rest.split(END, 1)[1]}", encoding="utf-8"
    )


def validation_curve(run: Path) -> list[tuple[float, int, float, float]]:
    """``(training hours, step, WER, CER)`` of each validation of a run, the hours summed over
    resumes as :func:`experiment.training_seconds` sums them (each validation takes the hours of the
    last train-log record at or before its step)."""
    records = ex.read_records(run / ex.TRAIN_LOG)
    elapsed = [(r["step"], s / 3600) for r, s in zip(records, ex.cumulative_seconds(records), strict=True)]
    curve = []
    for v in ex.validations(run):
        hours = max((h for step, h in elapsed if step <= v.step), default=0.0)
        curve.append((hours, v.step, v.wer, v.cer))
    return curve


def plot_validation(runs: Mapping[str, Path], path: Path) -> None:
    """Validation WER and CER against training hours, one line per run folder in ``runs``
    (label -> folder), written to ``path`` (PNG). Needs matplotlib (``echostream[bench]``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharex=True)
    for label, run in runs.items():
        curve = validation_curve(run)
        if not curve:
            continue
        hours = [c[0] for c in curve]
        for ax, column, name in ((axes[0], 2, "WER"), (axes[1], 3, "CER")):
            ax.plot(hours, [100 * c[column] for c in curve], marker="o", markersize=3, label=label)
            ax.set_ylabel(f"validation {name} (%)")
    for ax in axes:
        ax.set_xlabel("training hours on this machine (summed over resumes)")
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_sets(eval_dir: Path, sets: Mapping[str, str], contexts: Sequence[str], path: Path) -> None:
    """WER per test set (bars, one colour per decoding context) from the eval files, written to
    ``path`` (PNG); sets without speech and sets with no file are left out. Needs matplotlib."""
    names: list[str] = []
    wers: dict[str, list[float]] = {c: [] for c in contexts}
    for name in sets:
        found = {c: read_results(eval_dir / f"{name}_{c}.jsonl") for c in contexts}
        if not any(found.values()) or all(r["words"] == 0 for rows in found.values() for r in rows):
            continue
        names.append(name)
        for c in contexts:
            wers[c].append(100 * word_counts(found[c]).rate if found[c] else float("nan"))
    plot_bars(names, {f"chunk/left/right {context_label(c)}": wers[c] for c in contexts}, "WER (%)", path)


def plot_bars(names: Sequence[str], series: Mapping[str, Sequence[float]], ylabel: str, path: Path) -> None:
    """Grouped bars: one group per name, one bar (and legend entry) per series; PNG at ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(6.0, 1.3 * len(names)), 4))
    width = 0.8 / max(1, len(series))
    for i, (label, values) in enumerate(series.items()):
        ax.bar([x + i * width for x in range(len(names))], values, width, label=label)
    ax.set_xticks([x + width * (len(series) - 1) / 2 for x in range(len(names))], names, rotation=20, ha="right")
    ax.set_ylabel(ylabel)
    ax.grid(axis="y", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
