"""``echostream transcribe``: files of any length, each output written the moment it is done."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import TextIO

from echostream.audio import parse_channel
from echostream.cli.common import (
    CLIError,
    add_context_arguments,
    add_device_arguments,
    add_model_argument,
    check_writable_dir,
    expand_inputs,
    open_model,
    parser_of,
)
from echostream.encoders.base import OFFLINE_CONTEXT, user_context
from echostream.extras import require
from echostream.transcript import Transcript

FORMATS = ("txt", "json", "srt", "vtt")
DECODINGS = ("greedy", "prefix_beam", "attention_rescoring")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = parser_of(sub, "transcribe", help="transcribe audio files of any length",
                  description="Transcribe audio files of any length. Each file's transcript is written "
                              "(or printed) as soon as it is done, so an interrupted run keeps them.")
    p.add_argument("inputs", nargs="*", metavar="FILE", help="audio files or directories (searched for audio)")
    p.add_argument("--list", dest="list_file", metavar="FILE",
                   help="a file listing audio paths, one per line (relative to the current directory)")
    add_model_argument(p)
    add_context_arguments(p, OFFLINE_CONTEXT.chunk, OFFLINE_CONTEXT.left, None)
    p.add_argument("--format", choices=FORMATS, default="txt",
                   help="txt: the text; json: text, segments, words and tokens with times (several "
                        "files on stdout: one JSON object per line); srt / vtt: subtitles, a cue per segment")
    p.add_argument("--output-dir", metavar="DIR",
                   help="write one FILE.<format> per input here instead of printing (checked before decoding)")
    p.add_argument("--shard", metavar="K/N",
                   help="transcribe only part K of N (1 <= K <= N) of the inputs: a deterministic split "
                        "balanced by duration, for SLURM arrays, Kubernetes jobs or GNU parallel")
    p.add_argument("--resume", action="store_true",
                   help="skip inputs whose output file is already in --output-dir (outputs are written "
                        "atomically, so a killed run leaves none half-written)")
    p.add_argument("--ray-workers", type=int, metavar="N",
                   help="transcribe on N Ray workers (the 'ray' extra; --threads per worker, default 1): "
                        "a local cluster, or --ray-address's")
    p.add_argument("--ray-address", metavar="ADDR", help="an existing Ray cluster (auto, ray://host:10001)")
    p.add_argument("--channel", metavar="left|right|N",
                   help="transcribe this channel of each file (0-based N), e.g. one side of a stereo call "
                        "recording; the channels are averaged otherwise")
    p.add_argument("--batch-seconds", type=float, default=300.0, help="audio seconds encoded per step (bounds memory)")
    p.add_argument("--block-seconds", type=float, default=30.0, help="audio seconds read per input per step")
    p.add_argument("--decoding", choices=DECODINGS, default="greedy",
                   help="greedy CTC, CTC prefix beam search, or the beam re-ranked by the attention decoder")
    p.add_argument("--beam-size", type=int, default=10, help="beam for prefix_beam and attention_rescoring")
    add_device_arguments(p)


def output_names(sources: list[str]) -> list[str]:
    """Each input's output name (no suffix): its stem, with -2, -3, ... for repeated stems in
    input order. Named from the whole input list, so that every shard and every resumed run
    gives an input the same name."""
    used: set[str] = set()
    names = []
    for source in sources:
        stem = Path(source).stem or "audio"
        name, n = stem, 1
        while name in used:
            n += 1
            name = f"{stem}-{n}"
        used.add(name)
        names.append(name)
    return names


def parse_shard(text: str) -> tuple[int, int]:
    """``"K/N"`` -> (K, N), 1 <= K <= N."""
    try:
        k, n = (int(part) for part in text.split("/"))
    except ValueError:
        raise CLIError(f"--shard must be K/N (part K of N, e.g. 2/8), got {text!r}") from None
    if not 1 <= k <= n:
        raise CLIError(f"--shard K/N needs 1 <= K <= N, got {text!r}")
    return k, n


def shard_of(durations: list[float], k: int, n: int) -> list[int]:
    """The indices of part ``k`` of ``n``: inputs longest first, each to the part with the least
    audio so far (ties: the lowest part, then input order), so the parts are balanced and every
    process that sees the same inputs makes the same split.

    >>> [shard_of([5.0, 1.0, 4.0, 2.0], k, 2) for k in (1, 2)]
    [[0, 1], [2, 3]]
    """
    load = [0.0] * n
    part = [0] * len(durations)
    for i in sorted(range(len(durations)), key=lambda i: (-durations[i], i)):
        best = min(range(n), key=lambda j: (load[j], j))
        part[i] = best
        load[best] += durations[i]
    return [i for i in range(len(durations)) if part[i] == k - 1]


class _Writer:
    """Writes each transcript where it belongs as soon as it comes."""

    def __init__(self, fmt: str, out_dir: Path | None, several: bool, out: TextIO) -> None:
        from echostream.transcript import FORMATS as WRITERS

        self.fmt, self.out_dir, self.several, self.out = fmt, out_dir, several, out
        self.render = WRITERS[fmt]

    def path(self, name: str, complete: bool = True) -> Path:
        """Where a transcript goes; one cut short by an error goes to NAME.incomplete.FMT, which
        ``--resume`` does not take for done (so a rerun tries the file again)."""
        assert self.out_dir is not None
        return self.out_dir / (f"{name}.{self.fmt}" if complete else f"{name}.incomplete.{self.fmt}")

    def write(self, result: object, name: str) -> Path | None:
        """Write one transcript; the file it went to, if it went to one."""
        from echostream.transcript import Transcript, to_json_line

        assert isinstance(result, Transcript)
        if self.out_dir is not None:  # atomically: --resume trusts any file it finds
            path = self.path(name, complete=result.error is None)
            partial = path.with_name(f".{path.name}.partial")
            partial.write_text(self.render(result), encoding="utf-8")
            partial.replace(path)
            if result.error is None:
                self.path(name, complete=False).unlink(missing_ok=True)  # an earlier run's cut-short one
            return path
        elif self.fmt == "txt":
            print(f"{result.source}\t{result.text}" if self.several else result.text, file=self.out)
        elif self.fmt == "json":
            print(to_json_line(result) if self.several else self.render(result), end="" if not self.several else "\n",
                  file=self.out)
        else:
            if self.several:
                print(f"==> {result.source} <==", file=self.out)
            print(self.render(result), end="", file=self.out)
        self.out.flush()
        return None


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from echostream.audio import AudioError, audio_duration
    from echostream.model import TranscribeOptions

    files = expand_inputs(args.inputs, args.list_file)
    if args.ray_workers is not None:
        if args.ray_workers < 1:
            raise CLIError(f"--ray-workers must be at least 1, got {args.ray_workers}")
        require("ray", "echostream transcribe --ray-workers")
    elif args.ray_address:
        raise CLIError("--ray-address needs --ray-workers")
    shard = parse_shard(args.shard) if args.shard else None
    if args.resume and not args.output_dir:
        raise CLIError("--resume needs --output-dir (it skips the inputs whose output file is there)")
    out_dir = check_writable_dir(args.output_dir) if args.output_dir else None
    if args.beam_size < 1:
        raise CLIError(f"--beam-size must be at least 1, got {args.beam_size}")
    names = output_names(files)
    durations = []
    for f in files:
        try:
            durations.append(audio_duration(f))
        except AudioError:
            durations.append(0.0)  # reported when it is decoded
    chosen = shard_of(durations, *shard) if shard else list(range(len(files)))
    several = len(files) > 1
    writer = _Writer(args.format, out_dir, several, sys.stdout)
    if args.resume:
        todo = [i for i in chosen if not writer.path(names[i]).is_file()]
        if len(todo) < len(chosen):
            print(f"resuming: {len(chosen) - len(todo)} of {len(chosen)} inputs already have their output",
                  file=sys.stderr)
        chosen = todo
    if shard:
        print(f"shard {shard[0]}/{shard[1]}: {len(chosen)} of {len(files)} inputs, "
              f"{sum(durations[i] for i in chosen):.1f} s of audio", file=sys.stderr)
    total = sum(durations[i] for i in chosen)
    files, names = [files[i] for i in chosen], [names[i] for i in chosen]
    if not files:
        print("nothing to transcribe", file=sys.stderr)
        return 0
    options = TranscribeOptions(
        chunk_size=args.chunk_size, left_context=args.left_context, right_context=args.right_context,
        batch_seconds=args.batch_seconds, block_seconds=args.block_seconds, decoding=args.decoding,
        beam_size=args.beam_size, channel=parse_channel(args.channel),
    )
    user_context(args.chunk_size, args.left_context, args.right_context or 0)  # before any worker starts
    done = failed = 0
    audio = 0.0
    started = time.perf_counter()
    with tqdm(total=round(total, 1), unit="s", desc="transcribing", disable=None, file=sys.stderr,
              bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} s [{elapsed}<{remaining}]") as bar:

        def finished(index: int, result: Transcript, *, count_progress: bool = False) -> None:
            nonlocal audio, done, failed
            audio += result.duration
            if count_progress:
                bar.update(result.duration)
            if result.error is None:
                done += 1
                writer.write(result, names[index])
                return
            failed += 1
            kept = ""
            if result.duration:
                where = writer.write(result, names[index])
                kept = f" (kept the transcript of its first {result.duration:.1f} s" + (
                    f" in {where}; --resume tries the file again)" if where else ")")
            bar.write(f"error: {result.error}{kept}", file=sys.stderr)

        if args.ray_workers:
            from echostream.ray_runner import RayJob, run_on_ray

            job = RayJob(model=args.model, workers=args.ray_workers, threads=max(1, args.threads),
                         address=args.ray_address, device=args.device, options=options)
            run_on_ray(files, job, lambda i, r: finished(i, r, count_progress=True))
        else:
            model = open_model(args)
            for index, result in model.transcribe_iter(files, options, progress=lambda s: bar.update(s)):
                finished(index, result)
    wall = time.perf_counter() - started
    summary = f"{done} of {len(files)} files transcribed"
    if audio > 0:
        summary += f": {audio:.1f} s of audio in {wall:.1f} s (real-time factor {wall / audio:.3f})"
    print(summary, file=sys.stderr)
    return 1 if failed else 0


