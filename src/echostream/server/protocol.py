"""WeNet's WebSocket runtime protocol: the client's signals, the server's replies, the close codes.

A session, as WeNet's ``websocket_server`` speaks it::

    client: {"signal": "start", "nbest": 1, "continuous_decoding": true, "sample_rate": 16000}
    server: {"status": "ok", "type": "server_ready"}
    client: binary frames of 16-bit little-endian mono PCM
    server: {"status": "ok", "type": "partial_result", "nbest": "[{\\"sentence\\": \\"...\\"}]"}
    server: {"status": "ok", "type": "final_result",   "nbest": "[{\\"sentence\\": ..., \\"word_pieces\\": [...]}]"}
    client: {"signal": "end"}
    server: {"status": "ok", "type": "final_result", ...}, then {"status": "ok", "type": "speech_end"}

``nbest`` is a JSON *string* holding a list, as WeNet sends it. Word pieces carry absolute times in
milliseconds. Partial results also carry ``audio_ms``, the audio decoded so far (an extra field). A failure is ``{"status": "failed", "message": "<one line>"}`` followed by a close
with one of the codes below.

This module only builds and parses messages; it does no I/O.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from echostream.transcript import Token, words_of

SAMPLE_RATES = (8000, 16000)
"""The PCM rates a client may announce (Hz)."""
DEFAULT_SAMPLE_RATE = 16000


class CloseCode(IntEnum):
    """WebSocket close codes the server ends a session with (RFC 6455, section 7.4.1)."""

    NORMAL = 1000
    BAD_DATA = 1003  # a message that cannot be used: bad JSON, unknown signal, odd PCM bytes
    POLICY = 1008  # out of order (audio before start, start twice), idle, too many connections
    TOO_BIG = 1009  # a message larger than the server's limit
    INTERNAL = 1011  # the server failed


class ProtocolError(Exception):
    """A client mistake or a server limit: sent as a ``failed`` message, then the session closes."""

    def __init__(self, message: str, code: CloseCode) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True, kw_only=True)
class StartSignal:
    """The options of a ``start`` signal. ``nbest`` is accepted, but only the best path is sent."""

    sample_rate: int = DEFAULT_SAMPLE_RATE
    nbest: int = 1
    continuous_decoding: bool = False


@dataclass(frozen=True)
class EndSignal:
    """The client has sent all its audio."""


def parse_signal(text: str) -> StartSignal | EndSignal:
    """Parse a text message; raise :class:`ProtocolError` (``BAD_DATA``) if it is not a signal.

    >>> parse_signal('{"signal": "start", "sample_rate": 8000, "continuous_decoding": true}')
    StartSignal(sample_rate=8000, nbest=1, continuous_decoding=True)
    >>> parse_signal('{"signal": "end"}')
    EndSignal()
    >>> parse_signal('{"signal": "pause"}')
    Traceback (most recent call last):
    ...
    echostream.server.protocol.ProtocolError: unknown signal 'pause' (expected 'start' or 'end')
    """
    try:
        message = json.loads(text)
    except json.JSONDecodeError as err:
        raise ProtocolError(f"text message is not JSON ({err.msg} at character {err.pos})", CloseCode.BAD_DATA) from None
    if not isinstance(message, dict):
        raise ProtocolError(f"text message must be a JSON object, got {type(message).__name__}", CloseCode.BAD_DATA)
    signal = message.get("signal")
    if signal == "end":
        return EndSignal()
    if signal != "start":
        if signal is None:
            raise ProtocolError("text message has no 'signal'", CloseCode.BAD_DATA)
        raise ProtocolError(f"unknown signal {signal!r} (expected 'start' or 'end')", CloseCode.BAD_DATA)
    rate = message.get("sample_rate", DEFAULT_SAMPLE_RATE)
    if isinstance(rate, bool) or rate not in SAMPLE_RATES:
        raise ProtocolError(
            f"sample_rate must be one of {', '.join(map(str, SAMPLE_RATES))}, got {rate!r}", CloseCode.BAD_DATA
        )
    nbest = message.get("nbest", 1)
    if isinstance(nbest, bool) or not isinstance(nbest, int) or nbest < 1:
        raise ProtocolError(f"nbest must be a positive integer, got {nbest!r}", CloseCode.BAD_DATA)
    continuous = message.get("continuous_decoding", False)
    if not isinstance(continuous, bool):
        raise ProtocolError(f"continuous_decoding must be true or false, got {continuous!r}", CloseCode.BAD_DATA)
    return StartSignal(sample_rate=int(rate), nbest=nbest, continuous_decoding=continuous)


# ------------------------------------------------------------------------------- server replies


@dataclass(frozen=True)
class WordPiece:
    """A word and its span in milliseconds from the start of the stream."""

    word: str
    start: int
    end: int


def word_pieces(tokens: list[Token], frame_seconds: float) -> list[WordPiece]:
    """Words of a token sequence (:func:`echostream.transcript.words_of`) in milliseconds.

    >>> toks = [Token("\u2581he", 0.0), Token("llo", 0.16), Token("\u2581world", 0.4), Token("s", 1.2)]
    >>> [(w.word, w.start, w.end) for w in word_pieces(toks, 0.08)]
    [('hello', 0, 240), ('worlds', 400, 1280)]
    """
    return [WordPiece(w.word, round(w.start * 1000), round(w.end * 1000)) for w in words_of(tokens, frame_seconds)]


def _nbest(entry: dict[str, Any]) -> str:
    return json.dumps([entry], ensure_ascii=False)


def server_ready() -> dict[str, Any]:
    return {"status": "ok", "type": "server_ready"}


def partial_result(sentence: str, *, audio_ms: int | None = None) -> dict[str, Any]:
    """A partial hypothesis. ``audio_ms``, an extra field WeNet clients ignore, is how much of the
    stream's audio (ms from its start) had been decoded when the hypothesis was made.

    >>> partial_result("hi")
    {'status': 'ok', 'type': 'partial_result', 'nbest': '[{"sentence": "hi"}]'}
    >>> partial_result("hi", audio_ms=640)["audio_ms"]
    640
    """
    nbest = _nbest({"sentence": sentence})
    message: dict[str, Any] = {"status": "ok", "type": "partial_result", "nbest": nbest}
    if audio_ms is not None:
        message["audio_ms"] = audio_ms
    return message


def final_result(sentence: str, words: list[WordPiece]) -> dict[str, Any]:
    pieces = [{"word": w.word, "start": w.start, "end": w.end} for w in words]
    return {"status": "ok", "type": "final_result", "nbest": _nbest({"sentence": sentence, "word_pieces": pieces})}


def speech_end() -> dict[str, Any]:
    return {"status": "ok", "type": "speech_end"}


def failed(message: str) -> dict[str, Any]:
    """A failure reply; the message is cut to its first line."""
    line = message.strip().splitlines()[0] if message.strip() else "error"
    return {"status": "failed", "message": line}
