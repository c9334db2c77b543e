"""``echostream export``: a model as an ONNX folder that ``--runtime onnx`` and other runtimes load."""

from __future__ import annotations

import argparse
import sys

from echostream.cli.common import CLIError, add_model_argument, parse_context, parser_of
from echostream.extras import require


def add_export_parser(sub: argparse._SubParsersAction) -> None:
    p = parser_of(sub, "export", help="export a model to ONNX (a streaming step per context; for ChunkFormer also its offline graph)")
    add_model_argument(p)
    p.add_argument("--format", default="onnx", choices=("onnx",), help="what to export to")
    p.add_argument("--out", required=True, metavar="DIR", help="the export folder to write (new or empty)")
    p.add_argument("--context", action="append", metavar="C/L/R",
                   help="a chunk/left/right context (encoder frames) to export; repeat for more "
                        "(default: 64/128/128 for long-form, right 0 for a chunk-causal encoder, and "
                        "8/32/0 for streaming)")
    p.add_argument("--step-chunks", type=int, default=None, metavar="G",
                   help="chunks per streaming step (default: 1 without right context, else 256 frames' worth)")
    p.add_argument("--int8", action="store_true", help="also write int8 graphs (for --precision int8)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing export folder")


def run_export(args: argparse.Namespace) -> int:
    require("onnx", "echostream export")
    from echostream.encoders.base import user_context
    from echostream.export.onnx import export_onnx
    from echostream.model import load_model

    if args.context:
        try:
            contexts = [user_context(*parse_context(text)) for text in args.context]
        except ValueError as err:
            raise CLIError(f"--context: {err}") from None
    else:
        contexts = None  # the long-form and streaming defaults
    model = load_model(args.model)
    folder = export_onnx(model.bundle, args.out, contexts, chunks_per_step=args.step_chunks, int8=args.int8,
                         overwrite=args.overwrite, progress=lambda text: print(text, file=sys.stderr))
    print(f"exported to {folder} (load it with --runtime onnx --model {folder})", file=sys.stderr)
    return 0
