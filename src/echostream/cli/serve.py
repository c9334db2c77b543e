"""``echostream serve`` and ``echostream client``: the streaming server and a client for it."""

from __future__ import annotations

import argparse
import sys

from echostream.cli.common import (
    CLIError,
    add_context_arguments,
    add_device_arguments,
    add_model_argument,
    model_label,
    open_model,
    parser_of,
)
from echostream.encoders.base import STREAMING_CONTEXT
from echostream.extras import require


def add_serve_parser(sub: argparse._SubParsersAction) -> None:
    p = parser_of(sub, "serve", help="serve streaming recognition (WebSocket) and file transcription (HTTP)")
    add_model_argument(p)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on")
    p.add_argument("--port", type=int, default=8090, help="port to listen on")
    add_context_arguments(p, *STREAMING_CONTEXT.as_tuple())
    p.add_argument("--max-connections", type=int, default=64, help="WebSocket connections served at once")
    p.add_argument("--max-message-bytes", type=int, default=1 << 20, help="largest WebSocket message")
    p.add_argument("--idle-timeout", type=float, default=30.0, help="seconds to wait for a client's next message")
    p.add_argument("--max-batch", type=int, default=32, help="streams decoded together in one step")
    p.add_argument("--max-upload-mb", type=float, default=200.0,
                   help="largest file POST /transcribe takes, in MB (larger: 413)")
    add_device_arguments(p)


def add_client_parser(sub: argparse._SubParsersAction) -> None:
    p = parser_of(sub, "client", help="stream an audio file to a running server and print the results")
    p.add_argument("file", metavar="FILE", help="audio file (8 kHz files are sent at 8 kHz, others at 16 kHz)")
    p.add_argument("--url", default="ws://127.0.0.1:8090/ws", help="server WebSocket URL")
    p.add_argument("--realtime", action=argparse.BooleanOptionalAction, default=True,
                   help="send the audio at the pace it plays, or as fast as the server takes it (--no-realtime)")
    p.add_argument("--chunk-ms", type=int, default=100, help="milliseconds of audio per message")


def run_serve(args: argparse.Namespace) -> int:
    require("server", "echostream serve")
    from echostream.server import ServerConfig, listen, serve

    try:
        config = ServerConfig(
            host=args.host, port=args.port, chunk_size=args.chunk_size, left_context=args.left_context,
            right_context=args.right_context, max_connections=args.max_connections,
            max_message_bytes=args.max_message_bytes, idle_timeout=args.idle_timeout, max_batch=args.max_batch,
            max_upload_bytes=round(args.max_upload_mb * 1e6),
        )
    except ValueError as err:
        raise CLIError(str(err).replace("ServerConfig.", "--").replace("_", "-")) from None
    sock = listen(config.host, config.port)  # a busy port is reported before a long model load
    try:
        model = open_model(args)
        serve(model, config, model_name=model_label(args.model), sock=sock)
    finally:
        sock.close()
    return 0


def run_client(args: argparse.Namespace) -> int:
    require("server", "echostream client")
    from echostream.server.client import ClientError, FinalResult, stream_file

    if args.chunk_ms < 1:
        raise CLIError(f"--chunk-ms must be at least 1, got {args.chunk_ms}")
    shown = 0  # characters of the partial line on stderr

    def partial(text: str) -> None:
        nonlocal shown
        sys.stderr.write("\r" + text.ljust(shown))
        sys.stderr.flush()
        shown = len(text)

    def final(result: FinalResult) -> None:
        nonlocal shown
        if shown:
            sys.stderr.write("\r" + " " * shown + "\r")
            sys.stderr.flush()
            shown = 0
        print(result.sentence, flush=True)

    try:
        stream_file(args.file, args.url, realtime=args.realtime, chunk_ms=args.chunk_ms,
                    on_partial=partial, on_final=final)
    except ClientError as err:
        if shown:
            sys.stderr.write("\n")
        print(f"echostream: error: {err}", file=sys.stderr)
        return 1
    return 0
