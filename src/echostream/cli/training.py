"""``echostream train``, ``average`` and ``eval``."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from echostream.cli.common import (
    CLIError,
    add_context_arguments,
    add_device_arguments,
    add_model_argument,
    open_model,
    parser_of,
    set_threads,
)
from echostream.encoders.base import OFFLINE_CONTEXT
from echostream.extras import require


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


def add_average_parser(sub: argparse._SubParsersAction) -> None:
    p = parser_of(sub, "average", help="average the weights of an experiment's best or last checkpoints")
    p.add_argument("--exp", required=True, help="experiment folder written by `echostream train`")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--best", type=int, metavar="N", help="the N checkpoints with the best validation metric")
    which.add_argument("--last", type=int, metavar="N", help="the N newest checkpoints")
    p.add_argument("--metric", choices=["wer", "loss"], help="metric for --best (default: the run's validation.metric)")
    p.add_argument("--out", required=True, help="checkpoint file to write (load_model reads it)")


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
    add_device_arguments(p)


def run_train(args: argparse.Namespace) -> int:
    require("train", "echostream train")
    from tqdm import tqdm

    from echostream.training.config import load_train_config
    from echostream.training.distributed import environment
    from echostream.training.trainer import StepReport, train

    set_threads(args.threads)
    cfg = load_train_config(args.config, init=args.init)
    if args.device is not None:
        cfg = dataclasses.replace(cfg, device=args.device)
    main_rank = environment().is_main
    bar = tqdm(total=cfg.max_steps or None, unit="step", desc="training", disable=None if main_rank else True,
               file=sys.stderr, dynamic_ncols=True)

    def on_step(report: StepReport) -> None:
        if bar.n == 0 and report.step > 1:
            bar.n = report.step - 1  # resumed
        bar.set_postfix_str(
            f"epoch {report.epoch} loss {report.loss:.3f} lr {report.lr:.2e} "
            f"{report.audio_per_second:.1f} audio s/s", refresh=False,
        )
        bar.update(1)

    def on_message(text: str) -> None:
        bar.write(text, file=sys.stderr)

    try:
        result = train(cfg, args.out, resume=args.resume, on_step=on_step, on_message=on_message)
    finally:
        bar.close()
    if main_rank:
        best = next((v for v in result.validations if v.step == result.best_step), None)
        summary = f"stopped at step {result.step} (epoch {result.epoch})" + (" early" if result.stopped_early else "")
        if best is not None:
            summary += f"; best validation at step {best.step}: WER {100 * best.wer:.2f}%, loss {best.loss:.3f}"
        print(f"{summary}; checkpoints in {Path(args.out) / 'checkpoints'}", file=sys.stderr)
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
    paths = choose_checkpoints(args.exp, "best" if args.best is not None else "last", count, metric)
    bundle = average_checkpoints(paths)
    save_checkpoint(args.out, bundle, averaged=[p.name for p in paths])
    print(f"averaged {len(paths)} checkpoints ({', '.join(p.name for p in paths)}) into {args.out}", file=sys.stderr)
    return 0


def run_eval(args: argparse.Namespace) -> int:
    require("train", "echostream eval")
    from tqdm import tqdm

    from echostream.data.manifest import read_manifest
    from echostream.text.normalize import DEFAULT_NORMALIZER
    from echostream.training.evaluation import evaluate, format_report, write_results

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
            progress=lambda s: bar.update(s),
        )
    for failure in report.failed[:20]:
        print(f"warning: {failure}", file=sys.stderr)
    print(format_report(report, worst=args.worst, group_by=args.group_by))
    if args.out:
        write_results(args.out, report)
        print(f"per-utterance results written to {args.out}", file=sys.stderr)
    return 0 if report.utterances else 1
