"""``echostream transcribe``: files of any length, each output written the moment it is done."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import TextIO

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
from echostream.encoders.base import OFFLINE_CONTEXT

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
    p.add_argument("--batch-seconds", type=float, default=300.0, help="audio seconds encoded per step (bounds memory)")
    p.add_argument("--block-seconds", type=float, default=30.0, help="audio seconds read per input per step")
    p.add_argument("--decoding", choices=DECODINGS, default="greedy",
                   help="greedy CTC, CTC prefix beam search, or the beam re-ranked by the attention decoder")
    p.add_argument("--beam-size", type=int, default=10, help="beam for prefix_beam and attention_rescoring")
    add_device_arguments(p)


def _output_name(source: str, used: set[str]) -> str:
    stem = Path(source).stem or "audio"
    name, n = stem, 1
    while name in used:
        n += 1
        name = f"{stem}-{n}"
    used.add(name)
    return name


class _Writer:
    """Writes each transcript where it belongs as soon as it comes."""

    def __init__(self, fmt: str, out_dir: Path | None, several: bool, out: TextIO) -> None:
        from echostream.transcript import FORMATS as WRITERS

        self.fmt, self.out_dir, self.several, self.out = fmt, out_dir, several, out
        self.render = WRITERS[fmt]
        self.used: set[str] = set()

    def write(self, result: object) -> None:
        from echostream.transcript import Transcript, to_json_line

        assert isinstance(result, Transcript)
        if self.out_dir is not None:
            path = self.out_dir / f"{_output_name(result.source, self.used)}.{self.fmt}"
            path.write_text(self.render(result), encoding="utf-8")
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


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from echostream.audio import AudioError, audio_duration
    from echostream.model import TranscribeOptions

    files = expand_inputs(args.inputs, args.list_file)
    out_dir = check_writable_dir(args.output_dir) if args.output_dir else None
    if args.beam_size < 1:
        raise CLIError(f"--beam-size must be at least 1, got {args.beam_size}")
    model = open_model(args)
    total = 0.0
    for f in files:
        try:
            total += audio_duration(f)
        except AudioError:
            pass
    writer = _Writer(args.format, out_dir, len(files) > 1, sys.stdout)
    done = failed = 0
    audio = 0.0
    started = time.perf_counter()
    with tqdm(total=round(total, 1), unit="s", desc="transcribing", disable=None, file=sys.stderr,
              bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} s [{elapsed}<{remaining}]") as bar:
        options = TranscribeOptions(
            chunk_size=args.chunk_size, left_context=args.left_context, right_context=args.right_context,
            batch_seconds=args.batch_seconds, block_seconds=args.block_seconds, decoding=args.decoding,
            beam_size=args.beam_size,
        )
        for _, result in model.transcribe_iter(files, options, progress=lambda s: bar.update(s)):
            audio += result.duration
            if result.error is not None:
                failed += 1
                kept = f" (kept the transcript of its first {result.duration:.1f} s)" if result.duration else ""
                bar.write(f"error: {result.error}{kept}", file=sys.stderr)
                if not result.duration:
                    continue
            else:
                done += 1
            writer.write(result)
    wall = time.perf_counter() - started
    summary = f"{done} of {len(files)} files transcribed"
    if audio > 0:
        summary += f": {audio:.1f} s of audio in {wall:.1f} s (real-time factor {wall / audio:.3f})"
    print(summary, file=sys.stderr)
    return 1 if failed else 0


