"""A streaming client for the server's WebSocket protocol: send a file as a live stream would.

>>> finals = stream_file("call.wav", "ws://127.0.0.1:8090/ws", realtime=False)  # doctest: +SKIP
>>> [f.sentence for f in finals]                                               # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from echostream.audio import load_audio
from echostream.server.protocol import SAMPLE_RATES, WordPiece

NARROWBAND, WIDEBAND = SAMPLE_RATES

OPEN_TIMEOUT = 10.0


class ClientError(Exception):
    """The server could not be reached, refused the stream or ended it early (one line)."""


@dataclass(frozen=True)
class FinalResult:
    """One ``final_result``: the sentence and its words (times in ms from the stream's start)."""

    sentence: str
    words: list[WordPiece]


def read_pcm16(path: str | Path) -> tuple[np.ndarray, int]:
    """(N,) int16 samples and their rate: 8 kHz files stay at 8 kHz, the rest become 16 kHz."""
    try:
        native = sf.info(str(path)).samplerate
    except (sf.LibsndfileError, RuntimeError, OSError):
        native = None  # not for libsndfile: load_audio decodes it (or says why not)
    rate = native if native == NARROWBAND else WIDEBAND
    samples = load_audio(path, rate)  # (N,) float32
    pcm = np.clip(np.round(samples * 32768.0), -32768, 32767).astype("<i2")
    return pcm, rate


def stream_file(
    path: str | Path,
    url: str,
    *,
    realtime: bool = True,
    chunk_ms: int = 100,
    on_partial: Callable[[str], None] | None = None,
    on_final: Callable[[FinalResult], None] | None = None,
) -> list[FinalResult]:
    """Stream an audio file to the server; the final results, in order.

    ``realtime`` paces the pieces of ``chunk_ms`` milliseconds as a microphone would. Raises
    AudioError for a file that cannot be read and ClientError for everything on the wire.
    """
    pcm, rate = read_pcm16(path)
    return asyncio.run(stream_pcm(pcm, rate, url, realtime=realtime, chunk_ms=chunk_ms,
                                  on_partial=on_partial, on_final=on_final))


async def stream_pcm(
    pcm: np.ndarray,
    sample_rate: int,
    url: str,
    *,
    realtime: bool = True,
    chunk_ms: int = 100,
    on_partial: Callable[[str], None] | None = None,
    on_final: Callable[[FinalResult], None] | None = None,
) -> list[FinalResult]:
    """Stream (N,) int16 samples at ``sample_rate`` (8000 or 16000); see :func:`stream_file`."""
    if chunk_ms < 1:
        raise ValueError(f"chunk_ms must be at least 1, got {chunk_ms}")
    try:
        async with connect(url, open_timeout=OPEN_TIMEOUT, max_size=None) as ws:
            await ws.send(json.dumps(
                {"signal": "start", "nbest": 1, "continuous_decoding": True, "sample_rate": sample_rate}
            ))
            reply = await _next(ws)
            if reply.get("type") != "server_ready":
                raise ClientError(f"server did not get ready: {reply}")
            sender = asyncio.create_task(_send(ws, pcm, sample_rate, realtime, chunk_ms))
            try:
                return await _receive(ws, on_partial, on_final)
            finally:
                sender.cancel()
                await asyncio.gather(sender, return_exceptions=True)
    except OSError as err:  # refused, unreachable, timed out
        reason = "timed out" if isinstance(err, TimeoutError) else (err.strerror or str(err) or type(err).__name__)
        raise ClientError(f"cannot connect to {url}: {reason}") from None
    except InvalidURI:
        raise ClientError(f"not a WebSocket URL: {url}") from None
    except InvalidHandshake as err:
        raise ClientError(f"{url}: WebSocket handshake failed ({err})") from None


async def _send(ws: ClientConnection, pcm: np.ndarray, rate: int, realtime: bool, chunk_ms: int) -> None:
    step = max(1, rate * chunk_ms // 1000)
    started = time.monotonic()
    try:
        for i, begin in enumerate(range(0, len(pcm), step)):
            await ws.send(pcm[begin : begin + step].tobytes())
            if realtime:
                await asyncio.sleep(max(0.0, started + (i + 1) * step / rate - time.monotonic()))
        await ws.send(json.dumps({"signal": "end"}))
    except ConnectionClosed:
        pass  # the receiving side reports why


async def _next(ws: ClientConnection) -> dict[str, Any]:
    """The next server message; ClientError if it is a failure or the connection closed."""
    try:
        raw = await ws.recv()
    except ConnectionClosed as err:
        raise ClientError(f"server closed the connection (code {err.code})") from None
    try:
        message = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ClientError("server sent a message that is not JSON") from None
    if not isinstance(message, dict):
        raise ClientError("server sent a message that is not a JSON object")
    if message.get("status") != "ok":
        raise ClientError(f"server: {message.get('message', message)}")
    return message


async def _receive(
    ws: ClientConnection,
    on_partial: Callable[[str], None] | None,
    on_final: Callable[[FinalResult], None] | None,
) -> list[FinalResult]:
    finals: list[FinalResult] = []
    while True:
        message = await _next(ws)
        kind = message.get("type")
        if kind == "speech_end":
            return finals
        if kind not in ("partial_result", "final_result"):
            continue
        best = json.loads(message["nbest"])[0]
        if kind == "partial_result":
            if on_partial is not None:
                on_partial(best["sentence"])
            continue
        words = [WordPiece(w["word"], w["start"], w["end"]) for w in best.get("word_pieces", [])]
        final = FinalResult(best["sentence"], words)
        finals.append(final)
        if on_final is not None:
            on_final(final)
