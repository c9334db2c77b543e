"""The ``echostream`` command. It parses arguments and calls the library; nothing more.

Each verb lives in its own module (``transcribe``, ``serve``/``client``, data, training); this one
builds the parser, dispatches, and turns every error into one line and an exit status.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from echostream.cli import data, export, serve, training, transcribe
from echostream.cli.common import CLIError, HelpFormatter, default_model_path, expand_inputs
from echostream.extras import MissingExtraError

__all__ = ["CLIError", "build_parser", "default_model_path", "expand_inputs", "main"]


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("echostream")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="echostream", formatter_class=HelpFormatter,
                                     description="Streaming and long-form speech recognition.")
    parser.add_argument("--version", action="version", version=f"echostream {_version()}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks instead of one-line errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    transcribe.add_parser(sub)
    serve.add_serve_parser(sub)
    serve.add_client_parser(sub)
    data.add_manifest_parser(sub)
    data.add_tokenizer_parser(sub)
    data.add_synth_parser(sub)
    data.add_augment_parser(sub)
    training.add_train_parser(sub)
    training.add_finetune_parser(sub)
    training.add_average_parser(sub)
    training.add_eval_parser(sub)
    export.add_export_parser(sub)
    return parser


VERBS: dict[str, Callable[[argparse.Namespace], int]] = {
    "transcribe": transcribe.run,
    "serve": serve.run_serve,
    "client": serve.run_client,
    "manifest": data.run_manifest,
    "tokenizer": data.run_tokenizer,
    "synth": data.run_synth,
    "augment": data.run_augment,
    "train": training.run_train,
    "finetune": training.run_finetune,
    "average": training.run_average,
    "eval": training.run_eval,
    "export": export.run_export,
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return VERBS[args.command](args)
    except (CLIError, MissingExtraError) as err:
        if args.debug:
            raise
        print(f"echostream: error: {err}", file=sys.stderr)
        return 2
    except (ValueError, OSError) as err:  # CheckpointError, AudioError, ConfigError, DeviceError
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
