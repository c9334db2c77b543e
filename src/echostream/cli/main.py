"""The ``echostream`` command. It parses arguments and calls the library; nothing more."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

AUDIO_SUFFIXES = {".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".m4a", ".aac", ".webm", ".mp4", ".aiff", ".aif"}


class CLIError(Exception):
    """A problem with the command line itself: reported as one line, exit code 2."""


def default_model_path() -> Path | None:
    """The model bundled with the package, if this build has one."""
    path = Path(str(resources.files("echostream"))) / "assets" / "default_model"
    return path if path.exists() else None


def expand_inputs(paths: Sequence[str], list_file: str | None) -> list[str]:
    """Files named on the command line, files under named directories, and a list file's lines."""
    out: list[str] = []
    for p in paths:
        path = Path(p)
        if path.is_dir():
            found = sorted(str(f) for f in path.rglob("*") if f.is_file() and f.suffix.lower() in AUDIO_SUFFIXES)
            if not found:
                raise CLIError(f"{p}: directory holds no audio files ({', '.join(sorted(AUDIO_SUFFIXES))})")
            out.extend(found)
        else:
            out.append(p)
    if list_file is not None:
        try:
            lines = Path(list_file).read_text(encoding="utf-8").splitlines()
        except OSError as err:
            raise CLIError(f"{list_file}: cannot read list file ({err.strerror})") from None
        except UnicodeDecodeError:
            raise CLIError(f"{list_file}: list file is not UTF-8 text") from None
        base = Path(list_file).parent
        for line in lines:
            line = line.strip()
            if line and not line.startswith("#"):
                out.append(line if Path(line).is_absolute() else str(base / line))
    if not out:
        raise CLIError("no input files: name files or directories, or give --list FILE")
    return out


def _add_transcribe(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("transcribe", help="transcribe audio files of any length")
    p.add_argument("inputs", nargs="*", metavar="FILE", help="audio files or directories")
    p.add_argument("--list", dest="list_file", metavar="FILE", help="a file listing audio paths, one per line")
    p.add_argument("--model", help="model folder, checkpoint file or Hugging Face repo id (default: the bundled model)")
    p.add_argument("--chunk-size", type=int, default=64, help="chunk size in encoder frames of 80 ms (default 64)")
    p.add_argument("--left-context", type=int, default=128, help="left context in encoder frames (default 128)")
    p.add_argument("--right-context", type=int, default=128, help="right context in encoder frames (default 128)")
    p.add_argument("--format", choices=["txt", "json", "srt", "vtt"], default="txt")
    p.add_argument("--output-dir", help="write one FILE.<format> per input here instead of printing")
    p.add_argument("--batch-seconds", type=float, default=300.0, help="audio seconds encoded per step (memory bound)")
    p.add_argument("--block-seconds", type=float, default=30.0, help="audio seconds read per input per step")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's choice)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="echostream", description="Streaming and long-form speech recognition.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_transcribe(sub)
    return parser


def _output_name(source: str, used: set[str]) -> str:
    stem = Path(source).stem or "audio"
    name, n = stem, 1
    while name in used:
        n += 1
        name = f"{stem}-{n}"
    used.add(name)
    return name


def run_transcribe(args: argparse.Namespace) -> int:
    import torch
    from tqdm import tqdm

    from echostream.audio import AudioError, audio_duration
    from echostream.model import load_model
    from echostream.transcript import FORMATS

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    files = expand_inputs(args.inputs, args.list_file)
    model_path = args.model or default_model_path()
    if model_path is None:
        raise CLIError("no model is bundled with this build yet: pass --model DIR")
    model = load_model(model_path, device=args.device)
    total = 0.0
    for f in files:
        try:
            total += audio_duration(f)
        except AudioError:
            pass
    started = time.perf_counter()
    with tqdm(total=round(total, 1), unit="s", desc="transcribing", disable=None, file=sys.stderr,
              bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} s [{elapsed}<{remaining}]") as bar:
        results = model.transcribe(
            files, chunk_size=args.chunk_size, left_context=args.left_context,
            right_context=args.right_context, batch_seconds=args.batch_seconds,
            block_seconds=args.block_seconds, progress=lambda s: bar.update(s),
        )
    wall = time.perf_counter() - started
    write = FORMATS[args.format]
    out_dir = Path(args.output_dir) if args.output_dir else None
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
    used: set[str] = set()
    failed = 0
    for result in results:
        if not result.ok:
            failed += 1
            print(f"error: {result.error}", file=sys.stderr)
            continue
        text = write(result)
        if out_dir is not None:
            (out_dir / f"{_output_name(result.source, used)}.{args.format}").write_text(text, encoding="utf-8")
        elif args.format == "txt":
            print(f"{result.source}\t{result.text}" if len(results) > 1 else result.text)
        else:
            if len(results) > 1:
                print(f"==> {result.source} <==")
            print(text, end="")
    audio = sum(r.duration for r in results if r.ok)
    rtf = wall / audio if audio > 0 else float("nan")
    print(
        f"{len(results) - failed} of {len(results)} files transcribed: {audio:.1f} s of audio "
        f"in {wall:.1f} s (real-time factor {rtf:.3f})",
        file=sys.stderr,
    )
    return 1 if failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "transcribe":
            return run_transcribe(args)
        raise CLIError(f"unknown command {args.command}")  # pragma: no cover - argparse prevents it
    except CLIError as err:
        if args.debug:
            raise
        print(f"echostream: error: {err}", file=sys.stderr)
        return 2
    except (ValueError, OSError) as err:  # CheckpointError, AudioError, ConfigError are ValueErrors
        if args.debug:
            raise
        message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        print(f"echostream: error: {message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("echostream: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
