"""``echostream train``, ``average`` and ``eval``."""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from echostream.cli.common import (
    CLIError,
    add_context_arguments,
    add_device_arguments,
    add_model_argument,
    check_writable_dir,
    check_writable_file,
    open_model,
    parse_context,
    parser_of,
    set_threads,
)
from echostream.encoders.base import OFFLINE_CONTEXT
from echostream.extras import require

if TYPE_CHECKING:
    from echostream.training.config import TrainConfig
    from echostream.training.trainer import StepReport, TrainResult


def add_train_parser(sub: argparse._SubParsersAction) -> None:
    p = parser_of(
        sub, "train", help="train or fine-tune a model (under torchrun: data-parallel across processes)",
        epilog="Distributed: torchrun --nproc_per_node=N -m echostream.cli.main train ... "
        "(gloo on CPU, nccl on GPU; only rank 0 writes).",
    )
    p.add_argument("--config", required=True, help="training config (YAML; see configs/); max_steps in it bounds the run")
    p.add_argument("--init", metavar="MODEL",
                   help="start from this model (replaces the config's init): a bundled model's name, a "
                        "released folder, an echostream checkpoint or a Hugging Face repo id")
    p.add_argument("--out", required=True, help="experiment folder (checkpoints, logs, TensorBoard)")
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --out")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"],
                   help="replaces the config's device (auto: this rank's GPU when torch has one)")
    p.add_argument("--threads", type=int, default=0, help="torch threads per process (0: torch's choice)")


def add_finetune_parser(sub: argparse._SubParsersAction) -> None:
    p = parser_of(
        sub, "finetune",
        help="call-bot fine-tuning in one step: from a trained model on a weighted data mix, augmented, "
             "early-stopped on validation WER, best checkpoints averaged",
        epilog="Defaults are the ChunkFormer team's recipe (configs/finetune.yaml): speed 0.9/1.0/1.1, noise at "
               "5-15 dB SNR, reverb RT60 50-150 ms, SpecAugment 2xF27 2xT100, lr 5e-5 after 2000 warm-up "
               "steps, context 64/128/128, up to 20 epochs, the 5 best checkpoints averaged. Rerun the same "
               "command to continue a run that stopped.",
    )
    p.add_argument("--init", required=True, metavar="MODEL",
                   help="the model to start from: a bundled model's name, a released folder, a checkpoint")
    p.add_argument("--data", required=True, action="append", metavar="MANIFEST[:WEIGHT]",
                   help="training manifest and its sampling weight (e.g. telephony.jsonl:0.8); repeat")
    p.add_argument("--valid", required=True, action="append", metavar="MANIFEST",
                   help="validation manifest (WER before and after, early stopping); repeat for several")
    p.add_argument("--out", required=True, help="output folder (the run, the averaged model in OUT/model, the report)")
    p.add_argument("--config", help="a training config (YAML) to start from instead of the recipe; "
                                    "--init, --data and --valid replace its own")
    p.add_argument("--context", metavar="C/L/R", help="chunk/left/right the model was trained for (default 64/128/128)")
    p.add_argument("--lr", type=float, help="peak learning rate (recipe: 5e-5)")
    p.add_argument("--warmup-steps", type=int, help="warm-up steps (recipe: 2000)")
    p.add_argument("--max-epochs", type=int, help="at most this many epochs (recipe: 20)")
    p.add_argument("--max-steps", type=int, help="at most this many optimizer steps (0: no limit)")
    p.add_argument("--valid-every", type=int, metavar="STEPS", help="validate every STEPS steps (recipe config: 500)")
    p.add_argument("--patience", type=int, help="stop after this many validations without improvement (recipe: 3)")
    p.add_argument("--average", type=int, default=5, metavar="N", help="average the N best checkpoints")
    p.add_argument("--noise-dir", metavar="DIR", help="also mix in recordings from this folder (e.g. call-centre noise)")
    p.add_argument("--music-dir", metavar="DIR", help="also mix in hold music from this folder")
    p.add_argument("--babble", metavar="MANIFEST", help="also mix in babble of several talkers from this manifest")
    p.add_argument("--no-noise", action="store_true", help="no additive noise")
    p.add_argument("--no-reverb", action="store_true", help="no reverberation")
    p.add_argument("--channel", type=float, metavar="P",
                   help="put this share of the utterances through a simulated telephone line in the loader")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], help="training device (default auto)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's choice)")


def add_average_parser(sub: argparse._SubParsersAction) -> None:
    p = parser_of(sub, "average", help="average the weights of an experiment's best or last checkpoints")
    p.add_argument("--exp", required=True, help="experiment folder written by `echostream train`")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--best", type=int, metavar="N", help="the N checkpoints with the best validation metric")
    which.add_argument("--last", type=int, metavar="N", help="the N newest checkpoints")
    p.add_argument("--metric", choices=["wer", "loss"], help="metric for --best (default: the run's validation.metric)")
    p.add_argument("--out", required=True, help="checkpoint file to write (load_model reads it)")
    p.add_argument("--weights", choices=["fp32", "fp16"], default="fp32",
                   help="store the averaged parameters in fp32 or fp16 (half the file; loading gives fp32)")


def add_eval_parser(sub: argparse._SubParsersAction) -> None:
    p = parser_of(sub, "eval", help="word and character error rates of a model on a manifest")
    p.add_argument("--manifest", required=True, action="append", help="manifest (JSONL); repeat for several")
    add_model_argument(p)
    add_context_arguments(p, OFFLINE_CONTEXT.chunk, OFFLINE_CONTEXT.left, None)
    p.add_argument("--decoding", choices=["greedy", "prefix_beam", "attention_rescoring"], default="greedy",
                   help="greedy CTC, CTC prefix beam search, or the beam re-ranked by the attention decoder")
    p.add_argument("--beam-size", type=int, default=10, help="beam for prefix_beam and attention_rescoring")
    p.add_argument("--group-by", choices=["speaker", "language"],
                   help="also score per group: the field's value up to its first ':' (espeak:en-us -> espeak)")
    p.add_argument("--worst", type=int, default=10, help="list this many worst utterances")
    p.add_argument("--out", help="write per-utterance results here (JSONL)")
    p.add_argument("--no-normalize", action="store_true", help="score the texts as written (default: normalised)")
    p.add_argument("--score-empty", action="store_true",
                   help="decode rows with an empty transcript too (silence, noise): their output words are insertions")
    add_device_arguments(p)


def run_train(args: argparse.Namespace) -> int:
    require("train", "echostream train")
    from echostream.training.config import load_train_config
    from echostream.training.distributed import environment
    from echostream.training.trainer import train

    set_threads(args.threads)
    cfg = load_train_config(args.config, init=args.init)
    check_writable_dir(args.out)
    if args.device is not None:
        cfg = dataclasses.replace(cfg, device=args.device)
    main_rank = environment().is_main
    bar = _StepBar(cfg.max_steps, main_rank)
    try:
        result = train(cfg, args.out, resume=args.resume, on_step=bar.on_step, on_message=bar.write)
    finally:
        bar.close()
    if main_rank:
        print(f"{_summary(result)}; checkpoints in {Path(args.out) / 'checkpoints'}", file=sys.stderr)
    return 130 if result.interrupted else 0  # interrupted: a script running training stops there


class _StepBar:
    """A progress bar of optimizer steps with an ETA (to max_steps, or to the end of max_epochs)."""

    def __init__(self, total: int, enabled: bool) -> None:
        from tqdm import tqdm

        self.bar = tqdm(total=total or None, unit="step", desc="training", disable=None if enabled else True,
                        file=sys.stderr, dynamic_ncols=True)

    def on_step(self, report: StepReport) -> None:
        if self.bar.total is None and report.planned_steps:
            self.bar.total = report.planned_steps  # epochs bound the run: the ETA comes from them
        if self.bar.n == 0 and report.step > 1:
            self.bar.n = report.step - 1  # resumed
        self.bar.set_postfix_str(
            f"epoch {report.epoch} loss {report.loss:.3f} lr {report.lr:.2e} "
            f"{report.audio_per_second:.1f} audio s/s", refresh=False,
        )
        self.bar.update(1)

    def write(self, text: str) -> None:
        self.bar.write(text, file=sys.stderr)

    def close(self) -> None:
        self.bar.close()


def _summary(result: TrainResult) -> str:
    best = next((v for v in result.validations if v.step == result.best_step), None)
    summary = f"stopped at step {result.step} (epoch {result.epoch})" + (
        " early" if result.stopped_early else " by a signal (--resume continues)" if result.interrupted else "")
    if best is not None:
        summary += f"; best validation at step {best.step}: WER {100 * best.wer:.2f}%, loss {best.loss:.3f}"
    return summary


def finetune_config(args: argparse.Namespace) -> TrainConfig:
    """The recipe (or ``--config``) with the command line's data, model and overrides."""
    from echostream.config import ConfigError
    from echostream.data.channel import ChannelConfig
    from echostream.data.noise import NoiseConfig
    from echostream.training.config import load_train_config
    from echostream.training.context import ContextSampler
    from echostream.training.finetune import RECIPE_CONTEXT, parse_weighted, recipe_config

    try:
        mix = [parse_weighted(spec) for spec in args.data]
    except ValueError as err:
        raise CLIError(f"--data {err}") from None
    paths, weights = [p for p, _ in mix], [w for _, w in mix]
    if sum(weights) <= 0:
        raise CLIError("--data: the weights are all 0")
    context = parse_context(args.context) if args.context else RECIPE_CONTEXT
    init = os.path.abspath(args.init) if os.path.exists(args.init) else args.init
    if args.config:
        base = load_train_config(args.config, init=init)
        cfg = dataclasses.replace(base, data=dataclasses.replace(
            base.data, train=tuple(os.path.abspath(p) for p in paths), train_weights=tuple(weights),
            valid=tuple(os.path.abspath(p) for p in args.valid)))
    else:
        cfg = recipe_config(init, [os.path.abspath(p) for p in paths], weights,
                            [os.path.abspath(p) for p in args.valid], context=context)
    try:
        if args.context and args.config:
            chunk, left, right = context
            cfg = dataclasses.replace(
                cfg, context=ContextSampler(chunk_sizes=(chunk,), left_sizes=(left,), right_sizes=(right,)),
                validation=dataclasses.replace(cfg.validation, chunk_size=chunk, left_context=left, right_context=right))
        schedule = cfg.schedule
        if args.lr is not None:
            schedule = dataclasses.replace(schedule, lr=args.lr)
        if args.warmup_steps is not None:
            schedule = dataclasses.replace(schedule, warmup_steps=args.warmup_steps)
        validation = cfg.validation
        if args.valid_every is not None:
            validation = dataclasses.replace(validation, every_steps=args.valid_every)
        augment = cfg.augment
        if args.no_noise:
            augment = dataclasses.replace(augment, noise=None)
        elif args.noise_dir or args.music_dir or args.babble:
            noise = augment.noise or NoiseConfig()
            extra = [(k, s) for k, s in (("folder", args.noise_dir), ("music", args.music_dir),
                                         ("babble", args.babble)) if s]
            augment = dataclasses.replace(augment, noise=dataclasses.replace(
                noise, kinds=noise.kinds + tuple(k for k, _ in extra),
                kind_weights=noise.kind_weights + (1.0,) * len(extra),
                **{k: os.path.abspath(s) for k, s in extra}))
        if args.no_reverb:
            augment = dataclasses.replace(augment, reverb=None)
        if args.channel is not None:
            augment = dataclasses.replace(augment, channel=ChannelConfig(probability=args.channel))
        early = cfg.early_stopping
        if args.patience is not None:
            early = dataclasses.replace(early, patience=args.patience)
        cfg = dataclasses.replace(
            cfg, schedule=schedule, validation=validation, augment=augment, early_stopping=early,
            max_epochs=args.max_epochs if args.max_epochs is not None else cfg.max_epochs,
            max_steps=args.max_steps if args.max_steps is not None else cfg.max_steps,
            device=args.device or cfg.device,
        )
    except (ValueError, ConfigError) as err:
        raise CLIError(str(err)) from None
    return cfg


def run_finetune(args: argparse.Namespace) -> int:
    require("train", "echostream finetune")
    from tqdm import tqdm

    from echostream.data.manifest import ManifestError, read_manifest
    from echostream.training.finetune import finetune

    set_threads(args.threads)
    cfg = finetune_config(args)
    for manifest in (*cfg.data.train, *cfg.data.valid):  # before the first evaluation, not after it
        try:
            read_manifest(manifest)
        except ManifestError as err:
            raise CLIError(str(err)) from None
    check_writable_dir(args.out)
    bar = _StepBar(cfg.max_steps, True)
    evaluating: list[tqdm] = []

    def on_eval(seconds: float) -> None:
        if not evaluating:
            evaluating.append(tqdm(unit="s", desc="evaluating", disable=None, file=sys.stderr, leave=False))
        evaluating[0].update(seconds)

    def on_message(text: str) -> None:
        if evaluating:
            evaluating.pop().close()
        bar.write(text)

    try:
        result = finetune(cfg, args.out, average=args.average, on_step=bar.on_step, on_message=on_message,
                          on_eval=on_eval)
    finally:
        bar.close()
        for b in evaluating:
            b.close()
    print(f"{_summary(result.training)}\nvalidation WER before {100 * result.before.words.rate:.2f}%, "
          f"after {100 * result.after.words.rate:.2f}%; "
          f"model in {result.model} (load_model / --model take it); report in {Path(args.out) / 'report.md'}",
          file=sys.stderr)
    return 0


def run_average(args: argparse.Namespace) -> int:
    from echostream.models.checkpoint import save_checkpoint
    from echostream.training.config import read_saved_config
    from echostream.training.experiment import CONFIG_FILE, average_checkpoints, choose_checkpoints

    count = args.best if args.best is not None else args.last
    if count < 1:
        raise CLIError(f"--{'best' if args.best is not None else 'last'} must be at least 1, got {count}")
    metric = args.metric
    if metric is None:
        saved = Path(args.exp) / CONFIG_FILE
        metric = read_saved_config(saved).validation.metric if saved.is_file() else "wer"
    check_writable_file(args.out)
    paths = choose_checkpoints(args.exp, "best" if args.best is not None else "last", count, metric)
    bundle = average_checkpoints(paths)
    save_checkpoint(args.out, bundle, weights=args.weights, averaged=[p.name for p in paths])
    print(f"averaged {len(paths)} checkpoints ({', '.join(p.name for p in paths)}) into {args.out}", file=sys.stderr)
    return 0


def run_eval(args: argparse.Namespace) -> int:
    require("train", "echostream eval")
    from tqdm import tqdm

    from echostream.data.manifest import read_manifest
    from echostream.text.normalize import DEFAULT_NORMALIZER
    from echostream.training.evaluation import evaluate, format_report, write_results

    if args.out:
        check_writable_file(args.out)
    rows = [row for path in args.manifest for row in read_manifest(path)]
    if not rows:
        raise CLIError("the manifests hold no rows")
    model = open_model(args)
    seconds = sum(row.duration for row in rows)
    with tqdm(total=round(seconds, 1), unit="s", desc="decoding", disable=None, file=sys.stderr,
              bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} s [{elapsed}<{remaining}]") as bar:
        report = evaluate(
            model, rows, chunk_size=args.chunk_size, left_context=args.left_context,
            right_context=args.right_context, decoding=args.decoding, beam_size=args.beam_size,
            normalizer=None if args.no_normalize else DEFAULT_NORMALIZER, group_by=args.group_by,
            progress=lambda s: bar.update(s), score_empty=args.score_empty,
        )
    for failure in report.failed[:20]:
        print(f"warning: {failure}", file=sys.stderr)
    print(format_report(report, worst=args.worst, group_by=args.group_by))
    if args.out:
        write_results(args.out, report)
        print(f"per-utterance results written to {args.out}", file=sys.stderr)
    return 0 if report.utterances else 1
