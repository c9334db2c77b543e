"""What the verbs of the ``echostream`` command share: errors, input lists, model and device flags."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the library is imported by the verbs that need it, so that --help stays fast
    from echostream.model import Model

AUDIO_SUFFIXES = {".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".m4a", ".aac", ".webm", ".mp4", ".aiff", ".aif"}
DEVICE_HELP = "torch device: cpu, cuda, cuda:N or mps"
MODEL_HELP = ("a bundled model's name, a model folder, a checkpoint file, "
              "or a Hugging Face repo id (owner/name or hf:owner/name)")


class CLIError(Exception):
    """A problem with the command line itself: reported as one line, exit code 2."""


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Every flag's help ends with its default, unless it has none worth showing."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.default in (None, False, argparse.SUPPRESS) or "(default" in text:
            return text
        return super()._get_help_string(action) or text


def parser_of(sub: argparse._SubParsersAction, name: str, **kwargs: Any) -> argparse.ArgumentParser:
    """A verb's parser, with the shared help formatter."""
    return sub.add_parser(name, formatter_class=HelpFormatter, **kwargs)  # type: ignore[no-any-return]


def add_model_argument(p: argparse.ArgumentParser, flag: str = "--model") -> None:
    p.add_argument(flag, metavar="MODEL", default="default", help=MODEL_HELP)


def add_context_arguments(p: argparse.ArgumentParser, chunk: int, left: int, right: int | None) -> None:
    """``right`` None: the model's default look-ahead (the long-form 128, none for a chunk-causal
    encoder), resolved once the model is loaded."""
    p.add_argument("--chunk-size", type=int, default=chunk, metavar="FRAMES",
                   help="chunk size in the model's encoder frames (80 ms ChunkFormer, 40 ms Emformer and "
                        "Zipformer; 1 to 1024)")
    p.add_argument("--left-context", type=int, default=left, metavar="FRAMES",
                   help="frames of left context each chunk attends to (0 to 1024)")
    default = (f"default {right}" if right is not None
               else "default 128, or 0 for a chunk-causal encoder such as the Zipformer")
    p.add_argument("--right-context", type=int, default=right, metavar="FRAMES",
                   help=f"frames of right context (look-ahead) each chunk attends to (0 to 1024; {default})")


def add_device_arguments(p: argparse.ArgumentParser, device: str = "cpu") -> None:
    p.add_argument("--device", default=device, help=DEVICE_HELP)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's choice, one per core)")
    p.add_argument("--precision", default="fp32", metavar="{fp32,int8}",
                   help="fp32 (exact) or int8 (linear layers dynamically quantised; cpu only, faster "
                        "by how much the CPU's int8 instructions allow)")
    p.add_argument("--runtime", default="torch", choices=("torch", "onnx"),
                   help="onnx: run the encoder in onnxruntime; --model is then a folder written by "
                        "echostream export --format onnx")


def set_threads(threads: int) -> None:
    if threads < 0:
        raise CLIError(f"--threads must be 0 or more, got {threads}")
    if threads > 0:
        import torch

        torch.set_num_threads(threads)


def open_model(args: argparse.Namespace) -> Model:
    """The model ``--model`` names, on ``--device`` at ``--precision``, with ``--threads`` set."""
    from echostream.model import load_model

    set_threads(args.threads)
    return load_model(args.model, device=args.device, precision=args.precision, runtime=args.runtime)


def model_label(name: str) -> str:
    """How a --model value is shown (a folder's name, a bundled model's name)."""
    return Path(name).name or name


def default_model_path() -> Path | None:
    """The folder of the bundled default model, if this build has one."""
    from echostream.model import bundled_models

    return bundled_models().get("default")


def expand_inputs(paths: Sequence[str], list_file: str | None) -> list[str]:
    """Files named on the command line, files under named directories, and a list file's lines
    (paths relative to the current directory, as everywhere else)."""
    out: list[str] = []
    empty: list[str] = []  # directories without audio: said, and the other inputs still go
    for p in paths:
        path = Path(p)
        if path.is_dir():
            found = sorted(str(f) for f in path.rglob("*") if f.is_file() and f.suffix.lower() in AUDIO_SUFFIXES)
            if not found:
                empty.append(f"{p}: directory holds no audio files ({', '.join(sorted(AUDIO_SUFFIXES))})")
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
        out.extend(line.strip() for line in lines if line.strip() and not line.strip().startswith("#"))
    if not out:
        raise CLIError(empty[0] if len(empty) == 1 else "no input files: name files or directories, or give --list FILE")
    for text in empty:
        warn(text)
    return out


def check_writable_dir(folder: str | os.PathLike[str]) -> Path:
    """Create ``folder`` if needed and check that files can be written in it, before any work."""
    path = Path(folder)
    in_the_way = next((p for p in (path, *path.parents) if p.exists() and not p.is_dir()), None)
    if in_the_way is not None:
        raise CLIError(f"{folder}: cannot make this folder: {in_the_way} is a file")
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".echostream-write-test-"):
            pass
    except OSError as err:
        raise CLIError(f"{folder}: cannot write there ({err.strerror or err})") from None
    return path


def check_writable_file(file: str | os.PathLike[str]) -> Path:
    """Check, before any work, that ``file`` can be written (its folder made if needed)."""
    path = Path(file)
    if path.is_dir():
        raise CLIError(f"{file}: is a folder; name a file to write")
    check_writable_dir(path.parent)
    return path


def warn(text: str) -> None:
    print(f"warning: {text}", file=sys.stderr)


def report_problems(problems: Sequence[object], shown: int = 20) -> None:
    for problem in problems[:shown]:
        warn(str(problem))
    if len(problems) > shown:
        warn(f"... and {len(problems) - shown} more")


def relative(path: str) -> str:
    """``path`` relative to the working directory when it lies under it (for messages)."""
    try:
        return os.path.relpath(path)
    except ValueError:
        return path


def parse_context(text: str) -> tuple[int, int, int]:
    """``"64/128/128"`` -> (64, 128, 128); CLIError naming the value otherwise."""
    parts = text.split("/")
    if len(parts) != 3 or not all(p.strip().isdigit() for p in parts):
        raise CLIError(f"--context {text!r}: expected CHUNK/LEFT/RIGHT in encoder frames, such as 64/128/128")
    chunk, left, right = (int(p) for p in parts)
    return chunk, left, right
