"""Load and fault test of ``echostream serve``: loopback only, bounded in time.

Starts ``echostream serve`` as a subprocess on 127.0.0.1 (port 0: the system picks a free port,
read back from the server's first log line), waits for ``GET /healthz``, then runs at once, in one
asyncio loop with the ``websockets`` client:

- 20 well-behaved clients, each streaming its own 60 s signal in real time: 100 ms binary messages,
  each sent when its audio would have been recorded, ``continuous_decoding`` true; 16 at 16 kHz and
  4 at 8 kHz (announced with ``sample_rate``). The signals are the fixture speech and the FSDD
  digits concatenated in different orders, with different rotations and pauses;
- 3 clients that vanish mid-stream: two drop the TCP connection with no close frame, one closes with
  1001 without sending ``end``;
- 3 clients that send garbage: audio before ``start`` (expected: a ``failed`` reply and close 1008),
  invalid JSON mid-stream (1003), a message over the server's size limit (1009);
- ``--uploads N`` clients that ``POST /transcribe`` whole files (the well-behaved clients' signals
  as WAV, one after another) for as long as the streams run: whole-file work competing with the
  live streams. Each answer must be the offline transcript of its file; the streams must keep
  real time all the same (partial latency p99 below one chunk).

Partial latency, for each ``partial_result``: its receive time minus the send time of the audio
message that completed the audio the hypothesis covers. The server says how much audio that is in
the partial's ``audio_ms`` field (the client's audio the stream had been fed when the step that made
the hypothesis was decoded); the message that completed it is the first whose end is at or past
``audio_ms``. It is the delay the server adds (queueing, batching, decoding, sending) on top of
the algorithmic latency of the chunk: a frame cannot be decoded before its chunk of audio
(``chunk_size`` encoder frames: 80 ms each for ChunkFormer, 40 ms for Emformer) has arrived, and
that wait is not counted.

Checks (exit code 1 if any fails, 2 if the test could not run):
- every well-behaved client got ``server_ready``, partial results, its final results,
  ``speech_end`` and a 1000 close within its own timeout, and kept real time while sending;
- its final results equal the offline transcript of its audio with the same chunk settings.
  The test model emits no blanks on silence, so its endpoints come from the 20 s utterance limit
  alone: a 60 s stream gives three finals, cut at encoder frames 256 and 512 (the first chunk
  boundary past 20 s). Expected finals: the offline CTC best path (``Model.ctc_log_probs``), cut
  where the endpoint rules cut it when checked after each chunk, each piece collapsed and decoded.
  Final text: the finals concatenated with a space between them, or with nothing where the offline
  path continues a word across the cut (a ``final_result`` sentence does not say whether it starts
  a word), compared with ``Model.transcribe(...).text``;
- the fault clients got what they should, and the server's log accounts for every connection
  (closed / disconnected mid-stream / failed with the right code);
- the server's log (stderr and stdout, captured) holds no ERROR or Traceback other than ones
  attributable to the deliberate faults (listed), no stream is left open at the end, and the
  server stops cleanly on SIGINT.

Also measured: server CPU (psutil: CPU seconds over the wall time of the load phase) and peak RSS
(sampled every 0.2 s, and the kernel's high-water mark).

Outputs: a summary on stdout, ``benchmarks/results/load_test.json``,
``benchmarks/results/load_test_latency.png`` and the server's log ``load_test_server.log``.

    python benchmarks/load_test.py [--model DIR] [--chunk-size 8 --left-context 32 --right-context 0]
                                   [--uploads N] [--tag NAME]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from bisect import bisect_left
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import soundfile as sf
import soxr
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
FIXTURE = SHARED / "fixtures" / "chunkformer-tiny"
FSDD = SHARED / "data" / "fsdd"
RESULTS = ROOT / "benchmarks" / "results"
MESSAGE_S = 0.1  # audio per binary message
STARTUP_TIMEOUT = 60.0  # for the server to listen and answer /healthz
SHUTDOWN_TIMEOUT = 15.0
MAX_SEND_LAG_S = 0.25  # a client sending later than this behind real time makes the run invalid
LOG_RECORD = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ [A-Z]+ |[A-Z]+: +)")
ERROR_RECORD = re.compile(r"\b(ERROR|CRITICAL)\b|Traceback \(most recent call last\)")


# ------------------------------------------------------------------------------------ signals


@dataclass(frozen=True)
class Signal:
    name: str
    pcm: np.ndarray  # (N,) int16
    rate: int


def _read(path: Path, rate: int) -> np.ndarray:
    """(N,) float32 mono at ``rate``."""
    x, native = sf.read(path, dtype="float32", always_2d=True)
    mono = x.mean(axis=1)
    return soxr.resample(mono, native, rate, quality="HQ") if native != rate else mono


def _compose(pool: list[np.ndarray], rng: np.random.Generator, total: int, rate: int) -> np.ndarray:
    """Pieces of ``pool`` in a random order, each rotated by a random offset, 0-0.4 s apart."""
    out: list[np.ndarray] = []
    n = 0
    while n < total:
        for i in rng.permutation(len(pool)):
            piece = np.roll(pool[i], int(rng.integers(len(pool[i]))))
            gap = np.zeros(int(rng.uniform(0.0, 0.4) * rate), np.float32)
            out += [piece, gap]
            n += len(piece) + len(gap)
            if n >= total:
                break
    return np.concatenate(out)[:total]


def build_signals(count: int, narrowband: int, seconds: float, seed: int) -> list[Signal]:
    """``count`` different signals of ``seconds``; ``narrowband`` of them at 8 kHz, spread out."""
    fixture = sorted((FIXTURE / "audio").glob("*.wav"))
    digits = sorted(FSDD.glob("*.wav"))
    if not fixture or not digits:
        raise FileNotFoundError(f"audio not found under {FIXTURE / 'audio'} and {FSDD}")
    narrow = set(np.linspace(0, count - 1, narrowband).round().astype(int).tolist()) if narrowband else set()
    signals = []
    for k in range(count):
        rng = np.random.default_rng(seed + k)
        rate = 8000 if k in narrow else 16000
        picks = rng.choice(len(digits), size=40 if rate == 8000 else 6, replace=False)
        pool = [_read(p, rate) for p in fixture] + [_read(digits[i], rate) for i in picks]
        x = _compose(pool, rng, round(seconds * rate), rate)
        pcm = np.clip(np.round(x * 32768.0), -32768, 32767).astype(np.int16)
        signals.append(Signal(f"{'nb' if rate == 8000 else 'wb'}{k:02d}", pcm, rate))
    return signals


# --------------------------------------------------------------------------- offline expectation


@dataclass
class Expected:
    text: str  # Model.transcribe(...).text
    finals: list[str]  # the offline best path cut at the endpoints, each piece decoded
    separators: list[str]  # between consecutive non-empty finals: " " or "" (a word goes on)
    cuts: list[int]  # encoder frames where the endpoint rules cut
    straddles: list[int]  # cuts inside one run of a CTC label (the stream emits that token twice)


def offline_expectations(model_path: str, signals: list[Signal], settings: dict[str, int]) -> list[Expected]:
    import torch

    import echostream
    from echostream.heads.ctc import collapse_ctc
    from echostream.streaming.recognizer import EndpointConfig
    from echostream.text.vocab import WORD_BOUNDARY

    torch.set_num_threads(1)  # the other core is the server's
    model = echostream.load_model(model_path)
    vocab, blank = model.bundle.vocab, model.bundle.model.cfg.blank_id
    frame_s = model.bundle.frame_seconds
    rules = EndpointConfig()  # what the server's Recognizer uses
    audio = [(s.pcm.astype(np.float32) / 32768.0, s.rate) for s in signals]
    transcripts = model.transcribe(audio, chunk_size=settings["chunk_size"], left_context=settings["left_context"],
                                   right_context=settings["right_context"])
    out = []
    for x, transcript in zip(audio, transcripts):
        if transcript.error is not None:
            raise ValueError(f"offline transcription failed: {transcript.error}")
        labels = model.ctc_log_probs(x, **settings).argmax(axis=-1).tolist()  # (T',)
        if vocab.decode(collapse_ctc(labels, blank).tokens) != transcript.text:
            raise ValueError("Model.ctc_log_probs and Model.transcribe disagree")
        cuts, start = [], 0
        # endpoints are checked after each decoding step, and a real-time step adds one chunk;
        # the flush (after the end signal) adds the rest and ends the stream without a check
        for end in range(settings["chunk_size"], len(labels), settings["chunk_size"]):
            seg = labels[start:end]
            trailing = next((i for i, label in enumerate(reversed(seg)) if label != blank), len(seg))
            silence = trailing * frame_s
            spoke = any(label != blank for label in seg)
            if ((not spoke and silence >= rules.silence_without_speech)
                    or (spoke and silence >= rules.silence_after_speech)
                    or len(seg) * frame_s >= rules.max_utterance):
                cuts.append(end)
                start = end
        bounds = [0, *cuts, len(labels)]
        # a label run across a cut is emitted once, in the earlier segment (as the Recognizer does)
        pieces = [collapse_ctc(labels[a:b], blank, previous=labels[a - 1] if a else None).tokens
                  for a, b in itertools.pairwise(bounds)]
        kept = [p for i, p in enumerate(pieces) if p or i == len(pieces) - 1]  # the server's rule
        separators = []
        for before, after in zip([p for p in kept if p], [p for p in kept if p][1:]):
            word_goes_on = not (vocab.token(before[-1]).endswith(WORD_BOUNDARY)
                                or vocab.token(after[0]).startswith(WORD_BOUNDARY))
            separators.append("" if word_goes_on else " ")
        straddles = [c for c in cuts if labels[c - 1] == labels[c] != blank]
        out.append(Expected(transcript.text, [vocab.decode(p) for p in kept], separators, cuts, straddles))
    return out


def join_finals(finals: list[str], separators: list[str]) -> str:
    """The non-empty finals joined by ``separators`` (a space where there are too few)."""
    texts = [f for f in finals if f]
    joined = texts[0] if texts else ""
    for i, text in enumerate(texts[1:]):
        joined += (separators[i] if i < len(separators) else " ") + text
    return joined


# ------------------------------------------------------------------------------------- server


class ServerProcess:
    """``echostream serve`` in a subprocess; its output lines are collected with their times."""

    def __init__(self, args: argparse.Namespace) -> None:
        exe = Path(sys.executable).parent / "echostream"
        command = [str(exe)] if exe.exists() else [sys.executable, "-m", "echostream.cli.main"]
        command += [
            "serve", "--model", args.model, "--host", "127.0.0.1", "--port", "0",
            "--chunk-size", str(args.chunk_size), "--left-context", str(args.left_context),
            "--right-context", str(args.right_context), "--max-message-bytes", str(args.max_message_bytes),
            "--threads", str(args.server_threads),
        ]
        self.command = command
        self.process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self.lines: list[str] = []
        self._new: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self.port: int | None = None

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))
            self._new.put(line)
        self._new.put("")

    def wait_ready(self, timeout: float) -> None:
        """Wait for the listening line and a healthy /healthz; RuntimeError (one line) if not."""
        deadline = time.monotonic() + timeout
        while self.port is None:
            try:
                line = self._new.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                raise RuntimeError(f"server did not start listening within {timeout:g} s") from None
            if not line:
                raise RuntimeError(f"server exited (code {self.process.wait()}): {self.tail()}")
            if found := re.search(r"echostream server on http://127\.0\.0\.1:(\d+)/", line):
                self.port = int(found.group(1))
        while time.monotonic() < deadline:
            try:
                if get_json(f"{self.http}/healthz", 2.0).get("status") == "ok":
                    return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"/healthz did not answer within {timeout:g} s")

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def tail(self) -> str:
        return " | ".join(self.lines[-3:])

    def stop(self) -> int:
        """SIGINT (a graceful stop), then a kill if it does not end in time; the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(SHUTDOWN_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        time.sleep(0.1)  # the reader thread takes the last lines
        return self.process.returncode


def get_json(url: str, timeout: float) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.loads(response.read())


class Monitor(threading.Thread):
    """Samples the server's RSS every 0.2 s and its /healthz every second."""

    def __init__(self, pid: int, http: str) -> None:
        super().__init__(daemon=True)
        self.proc = psutil.Process(pid)
        self.http = http
        self.stopped = threading.Event()
        self.peak_rss = 0
        self.max_streams = 0
        self.healthz_ms: list[float] = []
        self.healthz_failures = 0

    def run(self) -> None:
        n = 0
        while not self.stopped.wait(0.2):
            try:
                self.peak_rss = max(self.peak_rss, self.proc.memory_info().rss)
            except psutil.Error:
                return
            n += 1
            if n % 5 == 0:
                t0 = time.monotonic()
                try:
                    self.max_streams = max(self.max_streams, get_json(f"{self.http}/healthz", 5.0)["streams"])
                    self.healthz_ms.append((time.monotonic() - t0) * 1000)
                except OSError:
                    self.healthz_failures += 1

    def cpu_seconds(self) -> float:
        times = self.proc.cpu_times()
        return times.user + times.system

    def high_water_rss(self) -> int | None:
        """VmHWM, the peak resident set the kernel saw (Linux), in bytes."""
        try:
            status = Path(f"/proc/{self.proc.pid}/status").read_text()
        except OSError:
            return None
        found = re.search(r"^VmHWM:\s+(\d+) kB", status, re.MULTILINE)
        return int(found.group(1)) * 1024 if found else None


# ------------------------------------------------------------------------------------ clients


@dataclass
class ClientRun:
    """What one client did and saw (times are time.monotonic())."""

    name: str
    kind: str  # "stream", "vanish" or "garbage"
    rate: int
    port: int | None = None
    sends: list[tuple[int, float]] = field(default_factory=list)  # (samples sent so far, time sent)
    end_sent: float | None = None
    messages: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    close_code: int | None = None
    error: str | None = None
    max_send_lag: float = 0.0
    finished: bool = False

    def of_type(self, kind: str) -> list[tuple[float, dict[str, Any]]]:
        return [(t, m) for t, m in self.messages if m.get("type") == kind]

    def finals(self) -> list[str]:
        return [json.loads(m["nbest"])[0]["sentence"] for _, m in self.of_type("final_result")]

    def seconds_sent(self) -> float:
        return self.sends[-1][0] / self.rate if self.sends else 0.0


def start_message(rate: int) -> str:
    return json.dumps({"signal": "start", "nbest": 1, "continuous_decoding": True, "sample_rate": rate})


async def _ready(ws: ClientConnection, run: ClientRun) -> None:
    message = json.loads(await ws.recv())
    run.messages.append((time.monotonic(), message))
    if message.get("type") != "server_ready":
        raise RuntimeError(f"expected server_ready, got {message}")


async def _send_realtime(ws: ClientConnection, sig: Signal, run: ClientRun, seconds: float | None = None) -> None:
    """100 ms messages, each sent when its audio has been recorded; ``seconds`` stops early."""
    step = round(MESSAGE_S * sig.rate)
    end = len(sig.pcm) if seconds is None else min(len(sig.pcm), round(seconds * sig.rate))
    t0 = time.monotonic()
    for begin in range(0, end, step):
        stop = min(begin + step, end)
        await asyncio.sleep(max(0.0, t0 + stop / sig.rate - time.monotonic()))
        run.max_send_lag = max(run.max_send_lag, time.monotonic() - (t0 + stop / sig.rate))
        await ws.send(sig.pcm[begin:stop].tobytes())
        run.sends.append((stop, time.monotonic()))


async def _collect(ws: ClientConnection, run: ClientRun) -> None:
    """Every message until the server closes; the close code."""
    try:
        async for raw in ws:
            run.messages.append((time.monotonic(), json.loads(raw)))
    except ConnectionClosed as err:  # an abnormal close
        run.close_code = err.rcvd.code if err.rcvd is not None else None
        return
    run.close_code = ws.close_code


async def stream_client(url: str, sig: Signal, run: ClientRun, delay: float, timeout: float) -> None:
    """A well-behaved client: the whole signal in real time, then ``end``; every reply."""
    await asyncio.sleep(delay)
    try:
        async with asyncio.timeout(timeout):
            async with connect(url, open_timeout=10, max_size=None) as ws:
                run.port = ws.local_address[1]
                await ws.send(start_message(sig.rate))
                await _ready(ws, run)

                async def send() -> None:
                    await _send_realtime(ws, sig, run)
                    await ws.send(json.dumps({"signal": "end"}))
                    run.end_sent = time.monotonic()

                sender = asyncio.create_task(send())
                try:
                    await _collect(ws, run)
                finally:
                    sender.cancel()
                    await asyncio.gather(sender, return_exceptions=True)
        run.finished = True
    except TimeoutError:
        run.error = f"not done within its timeout of {timeout:g} s"
    except (OSError, InvalidHandshake, ConnectionClosed, RuntimeError, ValueError) as err:
        run.error = f"{type(err).__name__}: {err}"


async def vanish_client(url: str, sig: Signal, run: ClientRun, delay: float, after: float, how: str,
                        timeout: float) -> None:
    """Streams ``after`` seconds, then drops the TCP connection (``abort``) or closes with 1001."""
    await asyncio.sleep(delay)
    try:
        async with asyncio.timeout(timeout):
            ws = await connect(url, open_timeout=10, max_size=None)
            run.port = ws.local_address[1]
            await ws.send(start_message(sig.rate))
            await _ready(ws, run)
            reader = asyncio.create_task(_collect(ws, run))
            await _send_realtime(ws, sig, run, seconds=after)
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
            if how == "abort":
                ws.transport.abort()  # no close frame, no FIN handshake
            else:
                await ws.close(1001, "going away")
        run.finished = True
    except TimeoutError:
        run.error = f"not done within its timeout of {timeout:g} s"
    except (OSError, InvalidHandshake, ConnectionClosed, RuntimeError, ValueError) as err:
        run.error = f"{type(err).__name__}: {err}"


async def garbage_client(url: str, sig: Signal, run: ClientRun, delay: float, what: str, max_bytes: int,
                         timeout: float) -> None:
    """``binary-before-start``, ``invalid-json`` (after 1 s of audio) or ``oversized`` (a binary
    message two bytes over the limit); then every reply until the server closes."""
    await asyncio.sleep(delay)
    try:
        async with asyncio.timeout(timeout):
            async with connect(url, open_timeout=10, max_size=None) as ws:
                run.port = ws.local_address[1]
                if what == "binary-before-start":
                    await ws.send(sig.pcm[: sig.rate // 10].tobytes())
                else:
                    await ws.send(start_message(sig.rate))
                    await _ready(ws, run)
                    if what == "invalid-json":
                        await _send_realtime(ws, sig, run, seconds=1.0)
                        await ws.send('{"signal": "end"')
                    else:
                        await ws.send(bytes(max_bytes + 2))
                await _collect(ws, run)
        run.finished = True
    except TimeoutError:
        run.error = f"no reply and close within its timeout of {timeout:g} s"
    except (OSError, InvalidHandshake, ConnectionClosed, RuntimeError, ValueError) as err:
        run.error = f"{type(err).__name__}: {err}"


VANISH = [("vanish-abort-3s", "abort", 3.0), ("vanish-close1001-6s", "close", 6.0), ("vanish-abort-9s", "abort", 9.0)]
GARBAGE = [("garbage-binary-before-start", "binary-before-start", 1008),
           ("garbage-invalid-json", "invalid-json", 1003), ("garbage-oversized", "oversized", 1009)]


@dataclass
class UploadRun:
    """What one uploading client saw: per request (signal name, seconds taken, status, text)."""

    name: str
    requests: list[tuple[str, float, int, str]] = field(default_factory=list)
    error: str | None = None


def _wav_bytes(sig: Signal) -> bytes:
    import io

    buffer = io.BytesIO()
    sf.write(buffer, sig.pcm, sig.rate, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def _post(url: str, body: bytes, timeout: float) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": "audio/wav"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}")


async def upload_client(http: str, signals: list[Signal], run: UploadRun, offset: int, until: asyncio.Event,
                        timeout: float) -> None:
    """POST the signals as WAV files, one after another, until ``until`` is set."""
    k = offset
    try:
        while not until.is_set():
            sig = signals[k % len(signals)]
            k += 1
            began = time.monotonic()
            status, reply = await asyncio.to_thread(
                _post, f"{http}/transcribe?filename={sig.name}.wav", _wav_bytes(sig), timeout)
            run.requests.append((sig.name, time.monotonic() - began, status, reply.get("text", "")))
    except (OSError, ValueError) as err:
        run.error = f"{type(err).__name__}: {err}"


async def run_load(url: str, signals: list[Signal], args: argparse.Namespace, budget: float
                   ) -> tuple[list[ClientRun], list[UploadRun]]:
    runs: list[ClientRun] = []
    tasks = []
    client_timeout = args.seconds + 25.0
    for k, sig in enumerate(signals):
        run = ClientRun(sig.name, "stream", sig.rate)
        runs.append(run)
        tasks.append(stream_client(url, sig, run, 0.1 * k, client_timeout))
    for k, (name, how, after) in enumerate(VANISH):
        sig = signals[(3 * k + 1) % len(signals)]
        run = ClientRun(name, "vanish", sig.rate)
        runs.append(run)
        tasks.append(vanish_client(url, sig, run, 1.0 + k, after, how, after + 20.0))
    for k, (name, what, _) in enumerate(GARBAGE):
        sig = signals[(3 * k + 2) % len(signals)]
        run = ClientRun(name, "garbage", sig.rate)
        runs.append(run)
        tasks.append(garbage_client(url, sig, run, 5.0 * (k + 1), what, args.max_message_bytes, 20.0))
    pending = [asyncio.create_task(t) for t in tasks]
    streams_done = asyncio.Event()
    uploads = [UploadRun(f"upload{k}") for k in range(args.uploads)]
    http = url.replace("ws://", "http://").removesuffix("/ws")
    upload_tasks = [asyncio.create_task(upload_client(http, signals, u, 7 * k, streams_done, budget))
                    for k, u in enumerate(uploads)]
    _, late = await asyncio.wait(pending, timeout=budget)
    streams_done.set()
    for task in late:  # the overall bound: clients still running are failures
        task.cancel()
    await asyncio.gather(*late, return_exceptions=True)
    for run, task in zip(runs, pending):
        if task in late:
            run.error = run.error or f"cancelled at the overall timeout ({budget:.0f} s left for the load phase)"
    await asyncio.gather(*upload_tasks, return_exceptions=True)  # each finishes its request under way
    return runs, uploads


# ----------------------------------------------------------------------------------- analysis


def partial_latencies(run: ClientRun) -> tuple[list[tuple[float, float]], int]:
    """[(audio_ms / 1000, latency s)] of the partials, and how many lacked ``audio_ms``."""
    ends = [n for n, _ in run.sends]
    out, missing = [], 0
    for received, message in run.of_type("partial_result"):
        audio_ms = message.get("audio_ms")
        if not isinstance(audio_ms, int):
            missing += 1
            continue
        needed = audio_ms * run.rate / 1000.0 - run.rate / 1000.0  # audio_ms is rounded to 1 ms
        i = bisect_left(ends, needed)
        if i == len(ends):
            missing += 1
            continue
        out.append((audio_ms / 1000.0, received - run.sends[i][1]))
    return out, missing


@dataclass
class Check:
    name: str
    passed: bool
    detail: str
    informational: bool = False  # reported, but does not fail the run


def log_records(lines: list[str]) -> list[str]:
    """Log lines grouped into records: a traceback belongs to the record before it."""
    records: list[str] = []
    for line in lines:
        if LOG_RECORD.match(line) or not records:
            records.append(line)
        else:
            records[-1] += "\n" + line
    return records


def first_difference(offline: str, streamed: str, context: int = 12) -> dict[str, str] | None:
    """The two texts around their first difference, or None if they are equal."""
    if offline == streamed:
        return None
    i = next((k for k, (a, b) in enumerate(zip(offline, streamed)) if a != b), min(len(offline), len(streamed)))
    lo = max(0, i - context)
    return {"at": str(i), "offline": offline[lo : i + context], "streamed": streamed[lo : i + context]}


def stats_ms(values: list[float]) -> dict[str, float | int]:
    if not values:
        return {"count": 0}
    ms = np.asarray(values) * 1000.0
    return {"count": len(ms), "p50": round(float(np.percentile(ms, 50)), 1),
            "p95": round(float(np.percentile(ms, 95)), 1), "p99": round(float(np.percentile(ms, 99)), 1),
            "max": round(float(ms.max()), 1), "mean": round(float(ms.mean()), 1)}


def analyse(runs: list[ClientRun], expected: dict[str, Expected], log: list[str]) -> tuple[list[Check], dict[str, Any]]:
    checks: list[Check] = []
    streams = [r for r in runs if r.kind == "stream"]
    details: dict[str, Any] = {"clients": [], "faults": []}

    # -- well-behaved clients
    incomplete, text_bad, finals_bad, no_audio_ms, lags = [], [], [], 0, []
    latencies: list[tuple[str, float, float]] = []  # (client, audio s, latency s)
    after_end: list[float] = []
    for r in streams:
        kinds = [m.get("type") for _, m in r.messages]
        ok = (r.finished and r.error is None and r.close_code == 1000 and kinds[:1] == ["server_ready"]
              and "partial_result" in kinds and kinds[-1:] == ["speech_end"]
              and all(m.get("status") == "ok" for _, m in r.messages))
        if not ok:
            incomplete.append(f"{r.name} ({r.error or f'close {r.close_code}, last {kinds[-1:]}'})")
        exp = expected[r.name]
        finals = r.finals()
        text = join_finals(finals, exp.separators)
        if finals != exp.finals:
            finals_bad.append(r.name)
        if text.replace(" ", "") != exp.text.replace(" ", ""):
            text_bad.append(r.name + (f" (a CTC label run straddles the cut at frame {exp.straddles})"
                                      if exp.straddles else ""))
        lat, missing = partial_latencies(r)
        no_audio_ms += missing
        latencies += [(r.name, a, x) for a, x in lat]
        finals_t = r.of_type("final_result")
        if r.end_sent is not None and finals_t:
            after_end.append(finals_t[-1][0] - r.end_sent)
        lags.append(r.max_send_lag)
        details["clients"].append({
            "name": r.name, "sample_rate": r.rate, "port": r.port, "close_code": r.close_code, "error": r.error,
            "partials": len(r.of_type("partial_result")), "finals": len(finals), "cuts_frames": exp.cuts,
            "finals_match": finals == exp.finals, "text_match": text.replace(" ", "") == exp.text.replace(" ", ""),
            "text_chars": len(exp.text), "first_difference": first_difference(exp.text, text),
            "partial_latency_ms": stats_ms([x for _, x in lat]),
            "max_send_lag_ms": round(r.max_send_lag * 1000, 1),
        })
    n = len(streams)
    checks.append(Check("well-behaved clients completed (ready, partials, finals, speech_end, close 1000)",
                        not incomplete, f"{n - len(incomplete)}/{n}" + (f"; failed: {', '.join(incomplete)}"
                                                                        if incomplete else "")))
    checks.append(Check("joined final text == offline transcript (Model.transcribe(...).text; spaces aside, "
                        "since a segment may end inside a word): no word sent twice or lost",
                        not text_bad, f"{n - len(text_bad)}/{n}" + (f"; differ: {', '.join(text_bad)}"
                                                                    if text_bad else "")))
    checks.append(Check("final results == the offline best path cut where the endpoint rules cut it with one "
                        "chunk per step (holds while the server keeps up: a backlog moves the cuts)",
                        not finals_bad, f"{n - len(finals_bad)}/{n}" + (f"; differ: {', '.join(finals_bad)}"
                                                                        if finals_bad else ""),
                        informational=True))
    checks.append(Check("every partial carries audio_ms (latency measurable)",
                        no_audio_ms == 0 and bool(latencies),
                        f"{len(latencies)} partials measured, {no_audio_ms} without audio_ms"))
    worst = max(lags, default=0.0)
    checks.append(Check(f"load generator kept real time (send lag < {MAX_SEND_LAG_S * 1000:.0f} ms)",
                        worst < MAX_SEND_LAG_S, f"max send lag {worst * 1000:.1f} ms"))

    # -- faults
    vanish_bad, garbage_bad = [], []
    for r in runs:
        if r.kind == "vanish":
            sent = r.seconds_sent()
            if not r.finished or r.error or sent <= 0:
                vanish_bad.append(f"{r.name}: {r.error or 'sent no audio'}")
            details["faults"].append({"name": r.name, "port": r.port, "audio_sent_s": round(sent, 2),
                                      "error": r.error})
        elif r.kind == "garbage":
            code = next(c for name, _, c in GARBAGE if name == r.name)
            failed = [m for _, m in r.messages if m.get("status") == "failed"]
            last = r.messages[-1][1] if r.messages else {}
            ok = (r.finished and len(failed) == 1 and last is failed[0] and bool(failed[0].get("message"))
                  and r.close_code == code)
            if not ok:
                garbage_bad.append(f"{r.name}: close {r.close_code} (want {code}), replies {len(failed)} failed"
                                   + (f", {r.error}" if r.error else ""))
            details["faults"].append({"name": r.name, "port": r.port, "close_code": r.close_code,
                                      "expected_close_code": code, "failed_message":
                                      failed[0].get("message") if failed else None, "error": r.error})
    checks.append(Check("abrupt disconnects happened mid-stream, after some audio", not vanish_bad,
                        "; ".join(vanish_bad) or ", ".join(f"{f['name']} after {f['audio_sent_s']:g} s"
                                                           for f in details["faults"] if "audio_sent_s" in f)))
    checks.append(Check("garbage senders each got one `failed` reply and the right close code",
                        not garbage_bad, "; ".join(garbage_bad) or ", ".join(
                            f"{f['name'].removeprefix('garbage-')}: {f['close_code']} \"{f['failed_message']}\""
                            for f in details["faults"] if "expected_close_code" in f)))

    # -- the server's log
    records = log_records(log)
    by_port = {r.port: r for r in runs if r.port is not None}
    unaccounted = []
    for r in runs:
        mine = [rec for rec in records if f"ws 127.0.0.1:{r.port} " in rec]
        if r.kind == "stream":
            want = f"closed ({r.seconds_sent():.1f} s of audio, {len(r.finals())} final result"
        elif r.kind == "vanish":
            want = "disconnected mid-stream"
        else:
            want = f"failed ({next(c for name, _, c in GARBAGE if name == r.name)})"
        if not any(want in rec for rec in mine):
            unaccounted.append(f"{r.name} (no '{want}' line)")
    checks.append(Check("server log accounts for every connection (closed / disconnected / failed)",
                        not unaccounted, "; ".join(unaccounted) or f"{len(runs)} connections"))
    errors = []
    for rec in records:
        if ERROR_RECORD.search(rec):
            ports = [int(p) for p in re.findall(r"127\.0\.0\.1:(\d+)", rec)]
            culprit = next((by_port[p] for p in ports if p in by_port), None)
            fault = culprit is not None and culprit.kind != "stream"
            errors.append({"record": rec, "client": culprit.name if culprit else None, "attributed": fault})
    stray = [e for e in errors if not e["attributed"]]
    checks.append(Check("server log: no ERROR/Traceback except from the deliberate faults", not stray,
                        f"{len(errors)} error records, {len(errors) - len(stray)} attributed to faults, "
                        f"{len(stray)} not"))
    details["log_error_records"] = errors
    details["latencies"] = latencies
    details["after_end"] = after_end
    return checks, details


# ------------------------------------------------------------------------------------- output


def plot(latencies: list[tuple[str, float, float]], rates: dict[str, int], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ms = np.asarray([x for _, _, x in latencies]) * 1000.0
    fig, (hist, over_time) = plt.subplots(1, 2, figsize=(12, 4.5))
    top = float(np.percentile(ms, 99.5)) * 1.2
    hist.hist(np.minimum(ms, top), bins=60, color="#4477aa")
    for q, style in ((50, "-"), (95, "--")):
        v = float(np.percentile(ms, q))
        hist.axvline(v, color="#cc3311", linestyle=style, label=f"p{q} {v:.0f} ms")
    hist.set_xlabel("partial latency (ms; values past the right edge are drawn at it)")
    hist.set_ylabel("partial results")
    hist.legend()
    for rate, color in ((16000, "#4477aa"), (8000, "#ee7733")):
        pts = [(a, x * 1000.0) for name, a, x in latencies if rates[name] == rate]
        if pts:
            a, x = zip(*pts)
            over_time.scatter(a, x, s=3, alpha=0.4, color=color, label=f"{rate // 1000} kHz clients")
    over_time.set_xlabel("stream time (s of audio)")
    over_time.set_ylabel("partial latency (ms)")
    over_time.set_ylim(bottom=0)
    over_time.legend()
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def print_summary(results: dict[str, Any]) -> None:
    s, lat, server = results["settings"], results["partial_latency_ms"], results["server"]
    nan = float("nan")
    print(f"\nechostream load test: model {s['model_name']}, chunk {s['chunk_size']} / left {s['left_context']} / "
          f"right {s['right_context']} ({s['chunk_ms']} ms chunks), {s['cpus']} CPUs shared "
          f"(load average {s['load_average_at_start'][0]:.1f} at start)")
    print(f"clients: {s['clients']} x {s['seconds_per_client']:g} s in real time, {s['message_ms']:g} ms messages "
          f"({s['clients'] - s['narrowband_clients']} at 16 kHz, {s['narrowband_clients']} at 8 kHz); "
          f"{s['vanishing_clients']} abrupt disconnects; {s['garbage_clients']} garbage senders\n")
    print(f"{'client':<8} {'rate':>6} {'partials':>8} {'finals':>6} {'p50 ms':>7} {'p95 ms':>7}  text")
    for c in results["clients"]:
        pl = c["partial_latency_ms"]
        verdict = "== offline" if c["text_match"] and c["finals_match"] else "DIFFERS"
        if c["first_difference"]:
            verdict += f" (offline {c['first_difference']['offline']!r}, streamed {c['first_difference']['streamed']!r})"
        print(f"{c['name']:<8} {c['sample_rate']:>6} {c['partials']:>8} {c['finals']:>6} "
              f"{pl.get('p50', nan):>7.1f} {pl.get('p95', nan):>7.1f}  {verdict}")
    print(f"\npartial latency: {lat['definition']}")
    print(f"  n {lat.get('count', 0)}   p50 {lat.get('p50', nan):.1f} ms   p95 {lat.get('p95', nan):.1f} ms   "
          f"p99 {lat.get('p99', nan):.1f} ms   max {lat.get('max', nan):.1f} ms")
    up = results["uploads"]
    if up["clients"]:
        spr = up["ms_per_request"]
        print(f"uploads: {up['clients']} clients, {up['requests']} files ({up['audio_seconds']:.0f} s of audio) "
              f"transcribed during the load, {spr.get('p50', nan) / 1000:.1f} s per file (p50)")
    fe = results["final_after_end_ms"]
    print(f"last final result after `end`: p50 {fe.get('p50', nan):.1f} ms, max {fe.get('max', nan):.1f} ms")
    print(f"server: {server['cpu_seconds']:.1f} CPU s over {server['wall_seconds']:.1f} s of load = "
          f"{server['cpu_percent_of_one_core']:.1f} % of one core; peak RSS {server['peak_rss_mb_sampled']:.0f} MB "
          f"sampled, {server['peak_rss_mb_high_water']} MB high-water; up to {server['max_streams_seen']} streams; "
          f"/healthz under load max {server['healthz_ms'].get('max', nan):.0f} ms")
    gen = results["load_generator"]
    print(f"load generator: {gen['cpu_percent_of_one_core']:.1f} % of one core, max send lag {gen['max_send_lag_ms']:.1f} ms")
    errors = results["log"]["error_records"]
    print(f"server log: {results['log']['lines']} lines, {len(errors)} ERROR/Traceback records{':' if errors else ''}")
    for e in errors:
        who = f"{e['client']}, a deliberate fault" if e["attributed"] else (e["client"] or "no client")
        print(f"  [{who}] {e['record'].splitlines()[0]}")
    print("\nchecks:")
    for c in results["checks"]:
        verdict = "PASS" if c["passed"] else ("note" if c.get("informational") else "FAIL")
        print(f"  {verdict}  {c['name']}: {c['detail']}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=str(FIXTURE / "model"), help="server model (default: chunkformer-tiny)")
    parser.add_argument("--chunk-size", type=int, default=8, help="encoder frames (80 ms ChunkFormer, 40 ms Emformer; default 8)")
    parser.add_argument("--left-context", type=int, default=32, help="default 32")
    parser.add_argument("--right-context", type=int, default=0, help="default 0")
    parser.add_argument("--clients", type=int, default=20, help="well-behaved real-time clients (default 20)")
    parser.add_argument("--narrowband", type=int, default=4, help="how many of them send 8 kHz (default 4)")
    parser.add_argument("--seconds", type=float, default=60.0, help="audio per well-behaved client (default 60)")
    parser.add_argument("--timeout", type=float, default=120.0, help="bound (s) on the run until the server stops")
    parser.add_argument("--server-threads", type=int, default=1,
                        help="server torch threads (default 1: the load generator needs the other core of two; "
                             "0: torch's default)")
    parser.add_argument("--max-message-bytes", type=int, default=1 << 20, help="the server's message size limit")
    parser.add_argument("--seed", type=int, default=0, help="for the signals")
    parser.add_argument("--uploads", type=int, default=0,
                        help="clients POSTing whole files to /transcribe during the load (default 0)")
    parser.add_argument("--tag", help="suffix of the output files (default: none)")
    parser.add_argument("--output-dir", default=str(RESULTS))
    args = parser.parse_args()
    if args.clients < 1 or not 0 <= args.narrowband <= args.clients:
        parser.error("need --clients >= 1 and 0 <= --narrowband <= --clients")
    started = time.monotonic()
    settings = {"chunk_size": args.chunk_size, "left_context": args.left_context, "right_context": args.right_context}
    out_dir = Path(args.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    load_at_start = os.getloadavg()

    server = ServerProcess(args)

    def hard_stop() -> None:  # the last resort of the time bound
        print(f"load_test: error: still running {args.timeout + 45:.0f} s after the start; killed", file=sys.stderr)
        server.process.kill()
        os._exit(2)

    watchdog = threading.Timer(args.timeout + 45.0, hard_stop)
    watchdog.daemon = True
    watchdog.start()
    try:  # the offline transcripts are computed while the server loads its model
        signals = build_signals(args.clients, args.narrowband, args.seconds, args.seed)
        expected = dict(zip((s.name for s in signals), offline_expectations(args.model, signals, settings)))
        server.wait_ready(max(1.0, min(STARTUP_TIMEOUT, args.timeout - (time.monotonic() - started))))
    except (RuntimeError, OSError, ValueError) as err:
        server.stop()
        print(f"load_test: error: {str(err).splitlines()[0]}", file=sys.stderr)
        return 2
    frame_ms = get_json(f"{server.http}/info", 5.0)["frame_ms"]  # the served model's frame length
    print(f"server {server.http} (pid {server.process.pid}) ready, offline transcripts done after "
          f"{time.monotonic() - started:.1f} s; streaming {args.clients} x {args.seconds:g} s ...", flush=True)

    monitor = Monitor(server.process.pid, server.http)
    cpu0, t0, own_cpu0 = monitor.cpu_seconds(), time.monotonic(), time.process_time()
    monitor.start()
    budget = args.timeout - (time.monotonic() - started)
    runs, uploads = asyncio.run(run_load(f"ws://127.0.0.1:{server.port}/ws", signals, args, budget))
    cpu1, t1, own_cpu1 = monitor.cpu_seconds(), time.monotonic(), time.process_time()
    streams_left = -1
    while time.monotonic() < t1 + 5.0:  # closing connections may take a moment to be cleaned up
        try:
            streams_left = get_json(f"{server.http}/healthz", 2.0)["streams"]
        except OSError:
            break
        if streams_left == 0:
            break
        time.sleep(0.1)
    monitor.stopped.set()
    monitor.join()
    high_water = monitor.high_water_rss()
    exit_code = server.stop()
    watchdog.cancel()
    log = list(server.lines)
    suffix = f"_{args.tag}" if args.tag else ""
    (out_dir / f"load_test{suffix}_server.log").write_text("\n".join(log) + "\n")

    checks, details = analyse(runs, expected, log)
    chunk_ms = args.chunk_size * frame_ms
    p99 = stats_ms([x for _, _, x in details["latencies"]]).get("p99", float("inf"))
    checks.append(Check(f"streams kept real time (partial latency p99 below one {chunk_ms} ms chunk)",
                        p99 < chunk_ms, f"p99 {p99:.1f} ms"))
    upload_summary: dict[str, Any] = {"clients": args.uploads}
    if args.uploads:
        done = [r for u in uploads for r in u.requests]
        wrong = [f"{u.name}:{name} ({status})" for u in uploads for name, _, status, text in u.requests
                 if status != 200 or text != expected[name].text]
        audio = sum(len(next(s for s in signals if s.name == name).pcm) / next(
            s for s in signals if s.name == name).rate for name, _, status, _ in done if status == 200)
        upload_summary.update({
            "requests": len(done), "audio_seconds": round(audio, 1),
            "ms_per_request": stats_ms([d for _, d, _, _ in done]),
            "errors": [u.error for u in uploads if u.error],
        })
        checks.append(Check("uploads answered with the offline transcript of each file",
                            bool(done) and not wrong and not upload_summary["errors"],
                            f"{len(done) - len(wrong)}/{len(done)} requests, {audio:.0f} s of audio"
                            + (f"; wrong: {', '.join(wrong[:5])}" if wrong else "")))
    checks.append(Check("no stream left open after all clients finished (/healthz streams == 0)",
                        streams_left == 0, f"streams {streams_left}"))
    checks.append(Check("server stopped cleanly on SIGINT (exit code 0)", exit_code == 0, f"exit code {exit_code}"))
    checks.append(Check(f"run bounded in time (load phase within the {args.timeout:g} s budget)",
                        all("overall timeout" not in (r.error or "") for r in runs),
                        f"load phase {t1 - t0:.1f} s of {budget:.1f} s left"))

    wall = t1 - t0
    model_name = "/".join(Path(args.model).resolve().parts[-2:])
    results: dict[str, Any] = {
        "settings": {
            "model": args.model, "model_name": model_name, **settings, "chunk_ms": chunk_ms,
            "clients": args.clients, "narrowband_clients": args.narrowband, "seconds_per_client": args.seconds,
            "message_ms": MESSAGE_S * 1000, "vanishing_clients": len(VANISH), "garbage_clients": len(GARBAGE),
            "timeout_s": args.timeout, "server_threads": args.server_threads, "seed": args.seed,
            "cpus": os.cpu_count(), "load_average_at_start": [round(x, 2) for x in load_at_start],
            "server_command": server.command[1:],
        },
        "partial_latency_ms": {
            "definition": (
                "receive time of a partial_result minus the send time of the client's audio message that "
                "completed the audio the partial covers (its audio_ms: the audio fed to the stream when the step "
                f"that made it was decoded); the algorithmic wait for a {chunk_ms} ms chunk is not included"),
            **stats_ms([x for _, _, x in details["latencies"]]),
        },
        "final_after_end_ms": stats_ms(details["after_end"]),
        "uploads": upload_summary,
        "server": {
            "cpu_seconds": round(cpu1 - cpu0, 2), "wall_seconds": round(wall, 2),
            "cpu_percent_of_one_core": round(100 * (cpu1 - cpu0) / wall, 1),
            "peak_rss_mb_sampled": round(monitor.peak_rss / 2**20, 1),
            "peak_rss_mb_high_water": round(high_water / 2**20, 1) if high_water else None,
            "max_streams_seen": monitor.max_streams, "healthz_ms": stats_ms([x / 1000 for x in monitor.healthz_ms]),
            "healthz_failures": monitor.healthz_failures,
            "exit_code": exit_code,
        },
        "load_generator": {"cpu_percent_of_one_core": round(100 * (own_cpu1 - own_cpu0) / wall, 1),
                           "max_send_lag_ms": round(max(r.max_send_lag for r in runs) * 1000, 1)},
        "checks": [{"name": c.name, "passed": c.passed, "detail": c.detail, "informational": c.informational}
                   for c in checks],
        "passed": all(c.passed for c in checks if not c.informational),
        "clients": details["clients"],
        "faults": details["faults"],
        "log": {"lines": len(log), "error_records": details["log_error_records"]},
    }
    (out_dir / f"load_test{suffix}.json").write_text(json.dumps(results, indent=2) + "\n")
    uploads_note = f", {args.uploads} uploading" if args.uploads else ""
    if details["latencies"]:
        plot(details["latencies"], {r.name: r.rate for r in runs}, out_dir / f"load_test{suffix}_latency.png",
             f"echostream serve, {model_name}, chunk {args.chunk_size} / left {args.left_context} / right "
             f"{args.right_context}: {args.clients} real-time clients + {len(VANISH) + len(GARBAGE)} faulty "
             f"ones{uploads_note}, {results['partial_latency_ms']['count']} partial results")
    print_summary(results)
    print(f"\n{'PASSED' if results['passed'] else 'FAILED'} in {time.monotonic() - started:.0f} s; wrote "
          f"{out_dir / f'load_test{suffix}.json'}, load_test{suffix}_latency.png, load_test{suffix}_server.log")
    return 0 if results["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
