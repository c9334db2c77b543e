"""``echostream serve`` and ``echostream client``, end to end."""

from __future__ import annotations

import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from server_helpers import SETTINGS, TIMEOUT, LiveServer

import echostream
from echostream.cli.main import main


def _client(capsys: pytest.CaptureFixture[str], *args: str | Path) -> tuple[int, str, str]:
    code = main(["client", *(str(a) for a in args)])
    out, err = capsys.readouterr()
    return code, out, err


def _one_line_error(err: str, *words: str) -> None:
    assert "Traceback" not in err, err
    lines = [line for line in err.replace("\r", "\n").splitlines() if line.strip()]
    assert lines and lines[-1].startswith("echostream: error: "), err
    assert sum(line.startswith("echostream") for line in lines) == 1, err
    for word in words:
        assert word in lines[-1], err


def test_client_prints_each_final_result_on_stdout(
    live: LiveServer, audio_dir: Path, fixture_model: echostream.Model, capsys: pytest.CaptureFixture[str]
) -> None:
    path = audio_dir / "utt3.wav"
    code, out, err = _client(capsys, path, "--url", live.ws, "--no-realtime")
    assert code == 0, err
    assert out == fixture_model.transcribe(path, **SETTINGS)[0].text + "\n"
    assert "\r" in err, "partial results on one updating line"
    assert err.endswith("\r"), "the partial line is cleared before the final result"


def test_client_sends_in_real_time_by_default(
    live: LiveServer, shared_dir: Path, fixture_model: echostream.Model, capsys: pytest.CaptureFixture[str]
) -> None:
    path = shared_dir / "data" / "fsdd" / "5_george_3.wav"
    if not path.is_file():
        pytest.skip(f"8 kHz speech not found at {path}")
    began = time.monotonic()
    code, out, err = _client(capsys, path, "--url", live.ws, "--chunk-ms", "50")
    elapsed = time.monotonic() - began
    assert code == 0, err
    assert out == fixture_model.transcribe(path, **SETTINGS)[0].text + "\n"
    import soundfile as sf

    assert elapsed >= sf.info(path).duration - 0.06


def test_client_errors_are_one_line(
    start_server: Callable[..., Any], audio_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code, _, err = _client(capsys, audio_dir / "utt2.wav", "--url", f"ws://127.0.0.1:{port}/ws")
    assert code == 1
    _one_line_error(err, "cannot connect to", str(port))
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"not audio")
    code, _, err = _client(capsys, bad, "--url", f"ws://127.0.0.1:{port}/ws")
    assert code == 1
    _one_line_error(err, "bad.wav")
    code, _, err = _client(capsys, audio_dir / "utt2.wav", "--url", "http://127.0.0.1/ws")
    assert code == 1
    _one_line_error(err, "http://127.0.0.1/ws")
    with start_server(max_message_bytes=1000) as server:  # 100 ms of 16 kHz PCM is 3200 bytes
        code, _, err = _client(capsys, audio_dir / "utt2.wav", "--url", server.ws, "--no-realtime")
    assert code == 1
    _one_line_error(err, "server: message of 3200 bytes exceeds the limit of 1000 bytes")


# ------------------------------------------------------------------------------- the serve verb


def _start_serve(*args: str) -> tuple[subprocess.Popen[str], queue.Queue[str]]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "echostream.cli.main", "serve", *args],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env,
    )
    lines: queue.Queue[str] = queue.Queue()

    def read() -> None:
        assert process.stderr is not None
        for line in process.stderr:
            lines.put(line)
        lines.put("")  # end of output

    threading.Thread(target=read, daemon=True).start()
    return process, lines


def _wait_for(lines: queue.Queue[str], pattern: str, seen: list[str]) -> re.Match[str]:
    deadline = time.monotonic() + TIMEOUT
    while True:
        line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
        seen.append(line)
        assert line, f"server exited before printing {pattern!r}: {''.join(seen)}"
        if found := re.search(pattern, line):
            return found


def test_serve_runs_until_interrupted(
    fixture_dir: Path, audio_dir: Path, fixture_model: echostream.Model, capsys: pytest.CaptureFixture[str]
) -> None:
    process, lines = _start_serve("--model", str(fixture_dir / "model"), "--port", "0", "--idle-timeout", "5")
    seen: list[str] = []
    try:
        found = _wait_for(lines, r"echostream server on http://127\.0\.0\.1:(\d+)/", seen)
        url = f"ws://127.0.0.1:{found.group(1)}/ws"
        path = audio_dir / "utt0.wav"
        code, out, err = _client(capsys, path, "--url", url, "--no-realtime")
        assert code == 0, err
        assert out == fixture_model.transcribe(path, **SETTINGS)[0].text + "\n"
        _wait_for(lines, r"ws 127\.0\.0\.1:\d+ closed \(3\.4 s of audio, 1 final result\)", seen)
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(TIMEOUT)
    while (line := lines.get(timeout=TIMEOUT)) != "":
        seen.append(line)
    assert process.returncode == 0, "".join(seen)
    assert "Traceback" not in "".join(seen)
    ws_lines = [line for line in seen if " ws " in line]
    assert len(ws_lines) == 2, "one line when a connection opens, one when it closes"


def test_serve_reports_a_busy_port_in_one_line(fixture_dir: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        process, lines = _start_serve("--model", str(fixture_dir / "model"), "--port", str(port))
        process.wait(TIMEOUT)
    output = []
    while (line := lines.get(timeout=TIMEOUT)) != "":
        output.append(line)
    assert process.returncode == 1
    _one_line_error("".join(output), f"cannot listen on 127.0.0.1:{port}")


def test_serve_rejects_bad_limits(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--model", "unused", "--max-batch", "0"]) == 2
    _one_line_error(capsys.readouterr().err, "--max-batch must be at least 1")
