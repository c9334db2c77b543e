"""Call-bot fine-tuning in one step: the ChunkFormer team's recipe, as one resumable run.

From a trained model (a released ChunkFormer folder, an echostream checkpoint, a bundled model),
on a weighted mix of call-bot sources (their recipe: telephony 80 %, conversation 20 %), with the
augmentation inline in the data loader (speed 0.9/1.0/1.1, noise at 5-15 dB SNR, light reverb of
RT60 50-150 ms, SpecAugment 2 x F=27 and 2 x T=100), lr 5e-5 after 2000 warm-up steps, at the
chunk/context the model was trained for (their example: 64/128/128), up to 20 epochs stopped early
when validation WER stops improving, then the best checkpoints averaged.

:func:`recipe_config` gives that :class:`TrainConfig` (``configs/finetune.yaml`` holds the same
values); :func:`finetune` runs it in an output folder::

    OUT/before.txt, OUT/before.jsonl   the starting model on the validation set
    OUT/exp/                           the training run (checkpoints, logs; resumable)
    OUT/model/model.pt, README.md      the averaged model (load_model / serve take OUT/model)
    OUT/after.txt, OUT/after.jsonl     the averaged model on the validation set
    OUT/report.md                      before and after, side by side

Rerunning :func:`finetune` on the same folder continues where it stopped.
"""

from __future__ import annotations

import dataclasses
import datetime
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from echostream.data.manifest import read_manifest
from echostream.data.noise import NoiseConfig
from echostream.data.reverb import ReverbConfig
from echostream.frontend.specaugment import SpecAugmentConfig
from echostream.models.checkpoint import save_checkpoint
from echostream.text.normalize import DEFAULT_NORMALIZER
from echostream.training import experiment as ex
from echostream.training.config import (
    AugmentConfig,
    CheckpointConfig,
    DataConfig,
    EarlyStoppingConfig,
    TrainConfig,
    ValidationConfig,
)
from echostream.training.context import ContextSampler
from echostream.training.evaluation import (
    EvalReport,
    evaluate,
    format_report,
    read_report,
    write_results,
)
from echostream.training.sampler import SamplerConfig
from echostream.training.schedule import ScheduleConfig
from echostream.training.trainer import StepReport, TrainResult, train

RECIPE_CONTEXT = (64, 128, 128)
"""Chunk, left and right context (encoder frames) of the recipe's example model."""


def recipe_config(
    init: str,
    train_manifests: Sequence[str],
    weights: Sequence[float],
    valid: Sequence[str],
    *,
    context: tuple[int, int, int] = RECIPE_CONTEXT,
) -> TrainConfig:
    """The recipe as a training config (every value overridable afterwards with
    ``dataclasses.replace``)."""
    chunk, left, right = context
    return TrainConfig(
        init=init,
        data=DataConfig(
            train=tuple(train_manifests),
            train_weights=tuple(weights),
            valid=tuple(valid),
            max_duration=30.0,
            num_workers=1,
        ),
        sampler=SamplerConfig(max_batch_seconds=200.0, max_batch_size=32),
        augment=AugmentConfig(
            speed_factors=(0.9, 1.0, 1.1),
            reverb=ReverbConfig(probability=0.5, rt60=(0.05, 0.15)),
            noise=NoiseConfig(probability=0.8, snr_db=(5.0, 15.0)),
            channel=None,  # the telephony source is line audio already
            spec_augment=SpecAugmentConfig(freq_masks=2, max_freq=27, time_masks=2, max_time=100),
        ),
        context=ContextSampler(chunk_sizes=(chunk,), left_sizes=(left,), right_sizes=(right,)),
        schedule=ScheduleConfig(lr=5e-5, warmup_steps=2000, decay="noam"),
        validation=ValidationConfig(
            every_steps=500, at_start=False, chunk_size=chunk, left_context=left, right_context=right
        ),
        checkpoints=CheckpointConfig(keep_last=3, keep_best=5),
        early_stopping=EarlyStoppingConfig(patience=3, min_delta=0.001),
        max_epochs=20,
        max_steps=0,
        grad_clip=5.0,
    )


def parse_weighted(spec: str) -> tuple[str, float]:
    """``path:weight`` (or a bare ``path``: weight 1) -> (path, weight).

    >>> parse_weighted("data/telephony.jsonl:0.8")
    ('data/telephony.jsonl', 0.8)
    """
    path, sep, weight = spec.rpartition(":")
    if not sep or "/" in weight:
        return spec, 1.0
    if not weight:
        raise ValueError(f"{spec}: nothing after ':' (give a weight, or no ':')")
    try:
        value = float(weight)
    except ValueError:
        raise ValueError(f"{spec}: the weight after ':' is not a number") from None
    if not 0 <= value < float("inf"):
        raise ValueError(f"{spec}: the weight must be >= 0")
    return path, value


@dataclass(frozen=True)
class FinetuneResult:
    """What a fine-tuning run ended with."""

    model: Path  # the averaged model's folder
    before: EvalReport  # the starting model (read back from before.jsonl when a rerun continues)
    after: EvalReport
    training: TrainResult
    averaged: tuple[str, ...]  # checkpoint names


def _evaluate(
    model_path: str | os.PathLike[str],
    rows_of: Sequence[str],
    context: tuple[int, int, int],
    out: Path,
    name: str,
    progress: Callable[[float], None] | None,
) -> EvalReport:
    from echostream.model import load_model

    rows = [row for path in rows_of for row in read_manifest(path)]
    chunk, left, right = context
    report = evaluate(
        load_model(model_path), rows, chunk_size=chunk, left_context=left, right_context=right,
        normalizer=DEFAULT_NORMALIZER, progress=progress,
    )  # fmt: skip
    (out / f"{name}.txt").write_text(format_report(report), encoding="utf-8")
    write_results(out / f"{name}.jsonl", report)
    return report


def _rates(report: EvalReport) -> str:
    return f"{100 * report.words.rate:.2f} | {100 * report.chars.rate:.2f}"


def finetune(
    cfg: TrainConfig,
    out: str | os.PathLike[str],
    *,
    average: int = 5,
    on_step: Callable[[StepReport], None] | None = None,
    on_message: Callable[[str], None] = print,
    on_eval: Callable[[float], None] | None = None,
) -> FinetuneResult:
    """Evaluate ``cfg.init`` on the validation set, train, average the ``average`` best
    checkpoints into ``out/model``, evaluate that, and write the report (module docstring).

    A folder that holds a run continues it; stages already done (the first evaluation, the
    average of a finished run) are not repeated.
    """
    if cfg.init is None:
        raise ValueError("fine-tuning needs a model to start from (init)")
    if average < 1:
        raise ValueError(f"average must be at least 1, got {average}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    context = (
        cfg.validation.chunk_size,
        cfg.validation.left_context,
        cfg.validation.right_context,
    )
    if (out / "before.jsonl").is_file():  # a rerun: the starting model was evaluated already
        before = read_report(out / "before.jsonl")
    else:
        on_message(f"evaluating {cfg.init} on the validation set")
        before = _evaluate(cfg.init, cfg.data.valid, context, out, "before", on_eval)
        on_message(f"before: WER {100 * before.words.rate:.2f}%")
    exp = out / "exp"
    resume = bool(ex.resumable_steps(exp))
    result = train(cfg, exp, resume=resume, on_step=on_step, on_message=on_message)
    if result.interrupted:  # a checkpoint is saved; averaging and evaluating wait for the rerun
        on_message("rerun the same command to continue fine-tuning")
        raise KeyboardInterrupt
    paths = ex.choose_checkpoints(exp, "best", average, cfg.validation.metric)
    model_dir = out / "model"
    model_dir.mkdir(exist_ok=True)
    save_checkpoint(model_dir / "model.pt", ex.average_checkpoints(paths), averaged=[p.name for p in paths])
    on_message(f"averaged {len(paths)} checkpoints ({', '.join(p.name for p in paths)})")
    after = _evaluate(model_dir, cfg.data.valid, context, out, "after", on_eval)
    report = (
        f"# Fine-tuning report\n\nFrom `{cfg.init}`, {datetime.date.today().isoformat()}. "
        f"Validation: {', '.join(cfg.data.valid)} at chunk/left/right {'/'.join(map(str, context))}.\n\n"
        "| model | WER % | CER % |\n| --- | ---: | ---: |\n"
        + f"| before | {_rates(before)} |\n"
        + f"| after ({len(paths)} checkpoints averaged) | {_rates(after)} |\n\n"
        f"Training stopped at step {result.step} (epoch {result.epoch})"
        + (" early" if result.stopped_early else "")
        + f"; best validation at step {result.best_step}.\n"
    )
    (out / "report.md").write_text(report, encoding="utf-8")
    (model_dir / "README.md").write_text(
        _model_card(cfg, context, before, after, paths, result), encoding="utf-8"
    )
    return FinetuneResult(model_dir, before, after, result, tuple(p.name for p in paths))


def _model_card(
    cfg: TrainConfig,
    context: tuple[int, int, int],
    before: EvalReport,
    after: EvalReport,
    paths: Sequence[Path],
    result: TrainResult,
) -> str:
    mix = ", ".join(
        f"{Path(p).name} ({w:g})"
        for p, w in zip(cfg.data.train, cfg.data.train_weights or [1.0] * len(cfg.data.train), strict=True)
    )
    augment = dataclasses.asdict(cfg.augment)
    lines = [
        "# Fine-tuned model",
        "",
        f"Fine-tuned by `echostream finetune` from `{cfg.init}` on {datetime.date.today().isoformat()}.",
        "",
        f"- Data (sampling weights): {mix}",
        f"- Validation: {', '.join(Path(p).name for p in cfg.data.valid)}, chunk/left/right "
        + "/".join(map(str, context)),
        f"- Schedule: lr {cfg.schedule.lr:g}, {cfg.schedule.warmup_steps} warm-up steps, "
        + f"{cfg.schedule.decay} decay; stopped at step {result.step} (epoch {result.epoch})"
        + (" early" if result.stopped_early else ""),
        f"- Augmentation: {augment}",
        f"- Averaged: {', '.join(p.name for p in paths)}",
        f"- Validation WER: {100 * after.words.rate:.2f}% after"
        + f", {100 * before.words.rate:.2f}% before",
        "",
    ]
    return "\n".join(lines)
