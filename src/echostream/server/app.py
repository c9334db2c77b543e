"""The HTTP/WebSocket server: WeNet's streaming protocol, file transcription, a microphone page.

Routes:
    ``WS /ws`` and ``WS /``  streaming recognition (:mod:`echostream.server.protocol`)
    ``POST /transcribe``     a whole file: multipart field ``file``, or the raw body (``?filename=``)
    ``GET /healthz``         ``{"status": "ok", "streams": n, "model": name}``
    ``GET /info``            the model and settings in use (what the microphone page shows)
    ``GET /``                a page that streams the microphone (``static/``)

Each connection gets a :class:`~echostream.server.batcher.Session`; the one
:class:`~echostream.server.batcher.Batcher` task decodes them all. A connection's own task only
reads messages (feeding PCM to its session) and a second one sends its replies, so a slow or
misbehaving client holds up nobody else.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import socket
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import uvicorn
from fastapi import FastAPI, Request, WebSocket
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.datastructures import UploadFile
from starlette.types import Message
from starlette.websockets import WebSocketDisconnect
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.exceptions import PayloadTooBig
from websockets.frames import Frame, Opcode

from echostream.encoders.base import STREAMING_CONTEXT, ChunkContext, user_context
from echostream.model import Model, TranscribeOptions
from echostream.server import protocol
from echostream.server.batcher import FILE_BLOCK_SECONDS, Batcher, CloseRequest, Reply, Session
from echostream.server.protocol import CloseCode, EndSignal, ProtocolError
from echostream.streaming.recognizer import Recognizer
from echostream.transcript import Transcript
from echostream.transcript import to_dict as transcript_dict

log = logging.getLogger("echostream.server")

STATIC_DIR = Path(str(resources.files("echostream.server"))) / "static"
_UNSAFE = re.compile(r"[^\w.-]+")
DRAIN_BYTES = 64 << 20  # how much of a rejected upload is read before the reply (larger: a reset)


@dataclass(frozen=True, kw_only=True)
class ServerConfig:
    """Where the server listens, how it decodes and what it allows.

    Chunk and contexts are in the model's encoder frames (80 ms ChunkFormer, 40 ms Emformer); they apply to streams and, unless a request
    names its own (query parameters), to ``/transcribe``, so both give the same text.
    ``idle_timeout`` is the longest wait (s) for a client's next message before its ``end``
    signal. ``max_batch`` bounds the streams decoded in one step. ``max_upload_bytes`` bounds a
    ``/transcribe`` body (larger: 413).
    """

    host: str = "127.0.0.1"
    port: int = 8090
    chunk_size: int = STREAMING_CONTEXT.chunk
    left_context: int = STREAMING_CONTEXT.left
    right_context: int = STREAMING_CONTEXT.right
    max_connections: int = 64
    max_message_bytes: int = 1 << 20
    idle_timeout: float = 30.0
    max_batch: int = 32
    max_upload_bytes: int = 200_000_000

    def __post_init__(self) -> None:
        for name in ("chunk_size", "max_connections", "max_message_bytes", "max_batch", "max_upload_bytes"):
            if getattr(self, name) < 1:
                raise ValueError(f"ServerConfig.{name} must be at least 1, got {getattr(self, name)}")
        for name in ("left_context", "right_context", "port"):
            if getattr(self, name) < 0:
                raise ValueError(f"ServerConfig.{name} must not be negative, got {getattr(self, name)}")
        try:
            user_context(self.chunk_size, self.left_context, self.right_context)
        except ValueError as err:
            raise ValueError(f"ServerConfig.{err}") from None
        if not self.idle_timeout > 0:
            raise ValueError(f"ServerConfig.idle_timeout must be positive, got {self.idle_timeout}")


class _Connection:
    """One WebSocket: a receiving task (signals and PCM in) and a sending task (replies out)."""

    def __init__(self, ws: WebSocket, batcher: Batcher, config: ServerConfig) -> None:
        self.ws = ws
        self.batcher = batcher
        self.config = config
        self.outbox: asyncio.Queue[Reply] = asyncio.Queue()
        self.session: Session | None = None
        self.ended = False
        self.disconnect_code: int | None = None  # the close code of a disconnect we did not ask for

    async def run(self) -> CloseRequest | None:
        """Serve the connection; the close the server sent, or None if the client went away."""
        receiver = asyncio.create_task(self._receive())
        sender = asyncio.create_task(self._send())
        try:
            await asyncio.wait({receiver, sender}, return_when=asyncio.FIRST_COMPLETED)
            if not sender.done():
                error = receiver.exception()
                if error is None:  # the client disconnected
                    return None
                if isinstance(error, ProtocolError):
                    self._fail(error.code, str(error))
                else:
                    log.error("internal error on a connection", exc_info=error)
                    self._fail(CloseCode.INTERNAL, "internal server error")
            try:
                return await sender
            except WebSocketDisconnect:  # the client left while we were sending
                return None
        finally:
            for task in (receiver, sender):
                task.cancel()
            await asyncio.gather(receiver, sender, return_exceptions=True)

    def _fail(self, code: CloseCode, message: str) -> None:
        if self.session is not None:
            self.batcher.close(self.session)  # no more replies from the decoder
        self.outbox.put_nowait(CloseRequest(code, message))

    async def _send(self) -> CloseRequest:
        while True:
            reply = await self.outbox.get()
            if isinstance(reply, CloseRequest):
                if reply.message is not None:
                    await self.ws.send_text(json.dumps(protocol.failed(reply.message)))
                await self.ws.close(int(reply.code))
                return reply
            await self.ws.send_text(json.dumps(reply, ensure_ascii=False))

    async def _receive(self) -> None:
        """Read messages until the client disconnects; raise ProtocolError on a client mistake."""
        limit = self.config.max_message_bytes
        while True:
            if self.session is not None and not self.session.room.is_set():
                await self.session.room.wait()  # the decoder is behind: stop reading for a while
            timeout = None if self.ended else self.config.idle_timeout
            try:
                message = await asyncio.wait_for(self.ws.receive(), timeout)
            except TimeoutError:
                raise ProtocolError(
                    f"idle timeout: no message for {self.config.idle_timeout:g} s", CloseCode.POLICY
                ) from None
            if message["type"] == "websocket.disconnect":
                self.disconnect_code = message.get("code")
                return
            if self.ended:
                continue  # after "end" the server only finishes; anything else is ignored
            data: bytes | None = message.get("bytes")
            text: str | None = message.get("text")
            size = len(data) if data is not None else len((text or "").encode("utf-8"))
            if size > limit:
                raise ProtocolError(f"message of {size} bytes exceeds the limit of {limit} bytes", CloseCode.TOO_BIG)
            if data is not None:
                self._audio(data)
            else:
                self._signal(text or "")

    def _audio(self, data: bytes) -> None:
        if self.session is None:
            raise ProtocolError("audio before the start signal", CloseCode.POLICY)
        if len(data) % 2:
            raise ProtocolError(
                f"binary message of {len(data)} bytes: 16-bit PCM needs an even number", CloseCode.BAD_DATA
            )
        samples = np.frombuffer(data, dtype="<i2").astype(np.int16)  # (N,)
        self.batcher.push(self.session, samples)

    def _signal(self, text: str) -> None:
        signal = protocol.parse_signal(text)
        if isinstance(signal, EndSignal):
            if self.session is None:
                raise ProtocolError("end signal before the start signal", CloseCode.POLICY)
            self.ended = True
            self.batcher.finish(self.session)
            return
        if self.session is not None:
            raise ProtocolError("start signal sent twice", CloseCode.POLICY)
        self.session = self.batcher.open(signal.sample_rate, signal.continuous_decoding, self.outbox)
        self.outbox.put_nowait(protocol.server_ready())


class _Server:
    """The application's state: the model, the batcher and the open connections."""

    def __init__(self, model: Model, config: ServerConfig, model_name: str) -> None:
        self.model = model
        self.config = config
        self.model_name = model_name
        self.recognizer = Recognizer(
            model, chunk_size=config.chunk_size, left_context=config.left_context,
            right_context=config.right_context,
        )
        self.batcher: Batcher | None = None
        self.connections = 0

    @contextlib.asynccontextmanager
    async def lifespan(self, app: FastAPI) -> AsyncIterator[None]:
        self.batcher = Batcher(self.recognizer, max_batch=self.config.max_batch)
        task = asyncio.create_task(self.batcher.run(), name="echostream-batcher")
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            self.batcher.shutdown()

    # ----------------------------------------------------------------------------- WebSocket

    async def websocket(self, ws: WebSocket) -> None:
        peer = f"{ws.client.host}:{ws.client.port}" if ws.client else "unknown peer"
        assert self.batcher is not None, "the lifespan starts the batcher"
        await ws.accept()
        if self.connections >= self.config.max_connections:
            log.warning("ws %s rejected: %d connections open (the limit)", peer, self.connections)
            with contextlib.suppress(WebSocketDisconnect):
                await ws.send_text(json.dumps(protocol.failed(
                    f"too many connections: the server allows {self.config.max_connections}"
                )))
                await ws.close(int(CloseCode.POLICY))
            return
        self.connections += 1
        log.info("ws %s open (%d of %d connections)", peer, self.connections, self.config.max_connections)
        conn = _Connection(ws, self.batcher, self.config)
        closed: CloseRequest | None
        try:
            closed = await conn.run()
        except Exception:  # a bug here must not take the server down
            log.exception("ws %s: internal error", peer)
            closed = CloseRequest(CloseCode.INTERNAL, "internal server error")
        finally:
            self.connections -= 1
            if conn.session is not None:
                self.batcher.close(conn.session)
        session = conn.session
        done = (f"{session.audio_seconds:.1f} s of audio, {session.results} final result"
                f"{'' if session.results == 1 else 's'}") if session else "no stream"
        if closed is None:
            state = "after its stream ended" if session is not None and session.done else "mid-stream"
            log.info("ws %s disconnected %s (code %s, %s)", peer, state, conn.disconnect_code, done)
        elif closed.message is not None:
            log.warning("ws %s failed (%d): %s (%s)", peer, closed.code, closed.message, done)
        else:
            log.info("ws %s closed (%s)", peer, done)

    # ---------------------------------------------------------------------------------- HTTP

    async def transcribe(self, request: Request) -> JSONResponse:
        """A whole file, decoded by the batching worker between stream steps (see the batcher)."""
        assert self.batcher is not None, "the lifespan starts the batcher"
        # A reply sent while the client is still sending is often lost to a connection reset:
        # every early rejection reads (and drops) what is left of the body first, up to a bound.
        try:
            context = self._request_context(request)
        except ValueError as err:
            await _drain(request, DRAIN_BYTES)
            return _bad_request(str(err))
        limit = self.config.max_upload_bytes
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            await _drain(request, DRAIN_BYTES)
            return _too_large(int(declared), limit)
        limited = Request(request.scope, _limited_receive(request, limit))
        with tempfile.TemporaryDirectory(prefix="echostream-upload-") as tmp:
            try:
                if request.headers.get("content-type", "").startswith("multipart/form-data"):
                    async with limited.form() as form:
                        upload = form.get("file")
                        if not isinstance(upload, UploadFile):
                            return _bad_request("multipart upload has no 'file' field")
                        name = upload.filename or "upload"
                        path = Path(tmp) / _safe_name(name)
                        with path.open("wb") as f:
                            while chunk := await upload.read(1 << 20):
                                f.write(chunk)
                else:
                    name = request.query_params.get("filename") or "upload"
                    path = Path(tmp) / _safe_name(name)
                    with path.open("wb") as f:
                        async for chunk in limited.stream():
                            f.write(chunk)
            except _TooLarge as err:
                if not err.body_ended:
                    await _drain(request, DRAIN_BYTES)
                return _too_large(err.size, limit)
            if path.stat().st_size == 0:
                return _bad_request(f"{name}: empty upload")
            options = TranscribeOptions(
                chunk_size=context.chunk, left_context=context.left, right_context=context.right,
                block_seconds=FILE_BLOCK_SECONDS, batch_seconds=FILE_BLOCK_SECONDS,
            )
            steps = self.model.transcription_steps(str(path), options)
            try:
                transcript = await self.batcher.submit(steps)
            except Exception:  # reported as a 500, logged with its traceback
                log.exception("transcribing %s failed", name)
                return JSONResponse({"error": "internal server error"}, status_code=500)
        if transcript.error is not None and not transcript.text:
            message = transcript.error.replace(str(path), name)
            log.info("transcribe %s rejected: %s", name, message)
            return _bad_request(message)
        body = _transcript_json(transcript)
        body["settings"] = {"chunk_size": context.chunk, "left_context": context.left, "right_context": context.right}
        if transcript.error is not None:  # decoded part-way: what was decoded, and why it stopped
            body["error"] = transcript.error.replace(str(path), name)
        return JSONResponse(body)

    def _request_context(self, request: Request) -> ChunkContext:
        """The chunk/context of a request: its query parameters, else the server's settings."""
        cfg = self.config
        values = {"chunk_size": cfg.chunk_size, "left_context": cfg.left_context, "right_context": cfg.right_context}
        for name in values:
            given = request.query_params.get(name)
            if given is not None:
                if not given.lstrip("-").isdigit():
                    raise ValueError(f"{name} must be an integer, got {given!r}")
                values[name] = int(given)
        return user_context(values["chunk_size"], values["left_context"], values["right_context"])

    async def healthz(self) -> dict[str, Any]:
        streams = len(self.batcher.sessions) if self.batcher is not None else 0
        return {"status": "ok", "streams": streams, "model": self.model_name}

    async def info(self) -> dict[str, Any]:
        """The model and the settings streams are decoded with; latencies in milliseconds."""
        cfg, rec = self.config, self.recognizer
        frame_ms = round(self.model.bundle.frame_seconds * 1000)
        return {
            "model": self.model_name,
            "parameters": sum(p.numel() for p in self.model.bundle.model.parameters()),
            "chunk_size": cfg.chunk_size,
            "left_context": cfg.left_context,
            "right_context": cfg.right_context,
            "frame_ms": frame_ms,
            "chunk_ms": cfg.chunk_size * frame_ms,
            "final_latency_ms": round(rec.latency_seconds * 1000),
            "max_upload_bytes": cfg.max_upload_bytes,
            "sample_rates": list(protocol.SAMPLE_RATES),
        }


def _bad_request(message: str) -> JSONResponse:
    return JSONResponse({"error": protocol.failed(message)["message"]}, status_code=400)


class _TooLarge(Exception):
    def __init__(self, size: int, body_ended: bool) -> None:
        super().__init__(size)
        self.size = size
        self.body_ended = body_ended  # the message that passed the limit was the body's last


def _too_large(size: int, limit: int) -> JSONResponse:
    return JSONResponse(
        {"error": f"upload of {size} bytes or more exceeds the limit of {limit} bytes (--max-upload-mb)"},
        status_code=413,
    )


async def _drain(request: Request, most: int) -> None:
    """Read and drop the rest of a request body, at most ``most`` bytes of it."""
    dropped = 0
    while dropped <= most:
        message = await request.receive()
        if message["type"] != "http.request":
            return
        dropped += len(message.get("body", b""))
        if not message.get("more_body", False):
            return


def _limited_receive(request: Request, limit: int) -> Callable[[], Awaitable[Message]]:
    """The request's ``receive``, raising _TooLarge once the body passes ``limit`` bytes."""
    received = 0

    async def receive() -> Message:
        nonlocal received
        message = await request.receive()
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > limit:
                raise _TooLarge(received, body_ended=not message.get("more_body", False))
        return message

    return receive


def _safe_name(name: str) -> str:
    """A file name for an upload that keeps its extension (decoders look at it)."""
    return _UNSAFE.sub("_", Path(name).name)[-100:].lstrip(".") or "upload"


def _transcript_json(t: Transcript) -> dict[str, Any]:
    body = transcript_dict(t)
    del body["source"], body["tokens"]
    body.pop("error", None)
    return body


def create_app(model: Model, config: ServerConfig, *, model_name: str = "model") -> FastAPI:
    """The ASGI application. Its lifespan starts and stops the batching task."""
    server = _Server(model, config, model_name)
    app = FastAPI(title="echostream", lifespan=server.lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.add_api_websocket_route("/ws", server.websocket)
    app.add_api_websocket_route("/", server.websocket)
    app.add_api_route("/transcribe", server.transcribe, methods=["POST"])
    app.add_api_route("/healthz", server.healthz, methods=["GET"])
    app.add_api_route("/info", server.info, methods=["GET"])

    async def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html")

    app.add_api_route("/", index, methods=["GET"], include_in_schema=False)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app


class _WebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's sans-I/O WebSocket protocol, answering an oversized message as the app does.

    The WebSocket layer refuses a message over ``ws_max_size`` before the application sees it and
    queues a 1009 close; this sends the protocol's ``failed`` reply ahead of that close frame.
    """

    message_limit = 0  # the application's limit (bytes), set by build_server

    def handle_parser_exception(self) -> None:
        error = self.conn.parser_exc
        if isinstance(error, PayloadTooBig) and not self.close_sent:
            size = f" of over {error.size} bytes" if error.size is not None else ""
            reply = protocol.failed(f"message{size} exceeds the limit of {self.message_limit} bytes")
            frame = Frame(Opcode.TEXT, json.dumps(reply).encode("utf-8"))
            self.transport.write(frame.serialize(mask=False, extensions=self.conn.extensions))
        super().handle_parser_exception()


def build_server(model: Model, config: ServerConfig, *, model_name: str = "model",
                 configure_logging: bool = False) -> uvicorn.Server:
    """A uvicorn server for :func:`create_app`; start it with ``.run(sockets=[...])``.

    Messages up to ``max_message_bytes`` reach the application, which answers larger ones with a
    ``failed`` reply and close code 1009; the WebSocket layer itself cuts off messages over four
    times the limit, so that a huge message is never buffered whole, with the same reply.
    """
    app = create_app(model, config, model_name=model_name)
    ws_protocol = type("WebSocketProtocol", (_WebSocketProtocol,), {"message_limit": config.max_message_bytes})
    uv_config = uvicorn.Config(
        app, host=config.host, port=config.port, ws=ws_protocol,
        ws_max_size=4 * config.max_message_bytes, log_config=uvicorn.config.LOGGING_CONFIG if configure_logging else None,
        timeout_graceful_shutdown=5, lifespan="on",
    )
    if configure_logging:
        # uvicorn's own lines about each WebSocket would double ours; keep its access log for HTTP.
        logging.getLogger("uvicorn.error").setLevel(logging.WARNING)
    return uvicorn.Server(uv_config)


def listen(host: str, port: int) -> socket.socket:
    """A listening socket; OSError (one line) when the address cannot be used."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as err:
        raise OSError(f"cannot listen on {host}:{port}: {err.strerror}") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
    except OSError as err:
        sock.close()
        raise OSError(f"cannot listen on {host}:{port}: {err.strerror or err}") from None
    return sock


def serve(model: Model, config: ServerConfig, *, model_name: str = "model", sock: socket.socket | None = None) -> None:
    """Run the server until interrupted (blocking); Ctrl-C stops it gracefully and returns.

    ``sock`` is a socket from :func:`listen` (default: one for ``config.host`` and ``config.port``).
    Logs one line when a connection opens and one when it closes or fails."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("echostream.server").setLevel(logging.INFO)
    if sock is None:
        sock = listen(config.host, config.port)
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    log.info(
        "echostream server on http://%s:%d/ (WebSocket /ws; model %s, chunk %d, left %d, right %d)",
        shown, port, model_name, config.chunk_size, config.left_context, config.right_context,
    )
    server = build_server(model, config, model_name=model_name, configure_logging=True)
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:  # uvicorn shut down gracefully, then re-raised the interrupt
        pass
    log.info("echostream server stopped")
