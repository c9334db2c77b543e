"""Helpers of the server tests: live servers (uvicorn in a background thread on a free loopback
port) and a WeNet-protocol client built on the ``websockets`` sync client."""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import uvicorn
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

import echostream
from echostream.server import ServerConfig, build_server, listen

SETTINGS = {"chunk_size": 8, "left_context": 32, "right_context": 0}
RIGHT_CONTEXT_SETTINGS = {"chunk_size": 8, "left_context": 16, "right_context": 8}
"""The protocol tests run at both: finals made with and without a provisional tail."""
TIMEOUT = 20.0  # seconds any single wait in these tests may take before it is a failure


@dataclass
class LiveServer:
    server: uvicorn.Server
    thread: threading.Thread
    port: int

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def get_json(self, path: str) -> Any:
        with urllib.request.urlopen(self.http + path, timeout=TIMEOUT) as response:
            return json.loads(response.read())

    def wait_streams(self, n: int) -> None:
        """Wait until the server holds ``n`` streams (connections have been cleaned up)."""
        deadline = time.monotonic() + TIMEOUT
        while self.get_json("/healthz")["streams"] != n:
            assert time.monotonic() < deadline, f"server still holds streams other than {n}"
            time.sleep(0.02)


@contextmanager
def run_server(model: echostream.Model, config: ServerConfig) -> Iterator[LiveServer]:
    sock = listen("127.0.0.1", 0)
    port = sock.getsockname()[1]
    server = build_server(model, replace(config, port=port), model_name="chunkformer-tiny")
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + TIMEOUT
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "server did not start"
        time.sleep(0.01)
    try:
        yield LiveServer(server, thread, port)
    finally:
        server.should_exit = True
        thread.join(TIMEOUT)
        sock.close()


# ------------------------------------------------------------------------------- protocol helpers


def pcm16(path: Path) -> tuple[bytes, int]:
    """A 16-bit file's samples as little-endian bytes, and its rate."""
    samples, rate = sf.read(path, dtype="int16")
    return np.asarray(samples, dtype="<i2").tobytes(), rate


def start(ws: ClientConnection, rate: int = 16000, continuous: bool = True) -> None:
    ws.send(json.dumps({"signal": "start", "nbest": 1, "continuous_decoding": continuous, "sample_rate": rate}))
    assert receive(ws) == {"status": "ok", "type": "server_ready"}


def send_pcm(ws: ClientConnection, data: bytes, rate: int, chunk_ms: int = 100) -> None:
    step = rate * chunk_ms // 1000 * 2
    for begin in range(0, len(data), step):
        ws.send(data[begin : begin + step])


def receive(ws: ClientConnection) -> dict[str, Any]:
    message = ws.recv(timeout=TIMEOUT)
    assert isinstance(message, str), "the server sends text messages only"
    return json.loads(message)  # type: ignore[no-any-return]


def until_closed(ws: ClientConnection) -> tuple[list[dict[str, Any]], int | None]:
    """Every message until the server closes, and the close code it sent."""
    messages = []
    try:
        while True:
            messages.append(receive(ws))
    except ConnectionClosed as closed:
        assert closed.rcvd is not None, "the server closed without a close frame"
        return messages, closed.rcvd.code


def nbest(message: dict[str, Any]) -> dict[str, Any]:
    """The best hypothesis of a result message (``nbest`` is a JSON string, as WeNet sends it)."""
    assert isinstance(message["nbest"], str)
    best = json.loads(message["nbest"])
    assert isinstance(best, list) and len(best) == 1
    return best[0]  # type: ignore[no-any-return]


def stream_file(url: str, path: Path, *, continuous: bool = True) -> tuple[list[dict[str, Any]], int | None]:
    """Send a whole file (100 ms messages, as fast as the server takes them) and ``end``."""
    data, rate = pcm16(path)
    with connect(url, open_timeout=TIMEOUT) as ws:
        start(ws, rate, continuous)
        send_pcm(ws, data, rate)
        ws.send(json.dumps({"signal": "end"}))
        return until_closed(ws)


def finals(messages: list[dict[str, Any]]) -> list[str]:
    return [nbest(m)["sentence"] for m in messages if m.get("type") == "final_result"]


def joined(texts: list[str]) -> str:
    """Finals joined, spaces removed: a segment may end inside a word."""
    return "".join(texts).replace(" ", "")
