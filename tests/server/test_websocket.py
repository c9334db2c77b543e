"""The WebSocket endpoint: WeNet's protocol, its errors and limits, and batched decoding."""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
import soxr
from server_helpers import (
    RIGHT_CONTEXT_SETTINGS,
    SETTINGS,
    TIMEOUT,
    LiveServer,
    finals,
    joined,
    nbest,
    pcm16,
    receive,
    run_server,
    send_pcm,
    start,
    stream_file,
    until_closed,
)
from websockets.sync.client import ClientConnection, connect

import echostream
from echostream.server import ServerConfig
from echostream.streaming.recognizer import Recognizer

FILES = ("utt0.wav", "utt1.wav", "utt2.wav", "utt3.wav")


def _expected(model: echostream.Model, path: Path, settings: dict[str, int] = SETTINGS) -> str:
    return model.transcribe(path, **settings)[0].text


Served = tuple[LiveServer, dict[str, int]]


def test_happy_path_gives_the_long_form_text(served: Served, audio_dir: Path,
                                             fixture_model: echostream.Model) -> None:
    live, settings = served
    path = audio_dir / "utt0.wav"
    messages, code = stream_file(live.ws, path)
    assert code == 1000
    kinds = [m["type"] for m in messages]
    assert all(m["status"] == "ok" for m in messages)
    assert kinds[-2:] == ["final_result", "speech_end"]
    partials = [nbest(m)["sentence"] for m in messages if m["type"] == "partial_result"]
    assert partials, "partial results while the audio comes in"
    assert all(a != b for a, b in itertools.pairwise(partials)), "a partial is sent only when the text changes"
    final = nbest(messages[-2])
    assert final["sentence"] == _expected(fixture_model, path, settings) != ""
    words = final["word_pieces"]
    assert " ".join(w["word"] for w in words) == final["sentence"]
    starts = [w["start"] for w in words]
    assert starts == sorted(starts) and all(w["start"] < w["end"] for w in words)
    assert words[-1]["end"] <= sf.info(path).duration * 1000 + 80


def test_root_path_speaks_the_same_protocol(served: Served, audio_dir: Path,
                                            fixture_model: echostream.Model) -> None:
    live, settings = served
    path = audio_dir / "utt2.wav"
    messages, code = stream_file(live.ws.removesuffix("ws"), path)
    assert code == 1000
    assert finals(messages) == [_expected(fixture_model, path, settings)]


def test_8khz_stream(served: Served, shared_dir: Path, fixture_model: echostream.Model) -> None:
    live, settings = served
    path = shared_dir / "data" / "fsdd" / "0_george_1.wav"
    if not path.is_file():
        pytest.skip(f"8 kHz speech not found at {path}")
    assert sf.info(path).samplerate == 8000
    messages, code = stream_file(live.ws, path)
    assert code == 1000
    assert finals(messages) == [_expected(fixture_model, path, settings)]
    assert messages[-1]["type"] == "speech_end"


def _send_whole(url: str, path: Path, continuous: bool) -> tuple[list[dict[str, Any]], int | None]:
    """The file in one message: the server decodes it a chunk per step, whatever the timing."""
    data, rate = pcm16(path)
    with connect(url, open_timeout=TIMEOUT) as ws:
        start(ws, rate, continuous)
        ws.send(data)
        ws.send(json.dumps({"signal": "end"}))
        return until_closed(ws)


def test_continuous_decoding_sends_a_final_result_per_segment(
    served: Served, audio_dir: Path, fixture_model: echostream.Model
) -> None:
    live, settings = served
    path = audio_dir / "long.wav"  # 30 s: the 20 s utterance limit ends the first segment
    offline = _expected(fixture_model, path, settings)
    messages, code = _send_whole(live.ws, path, continuous=True)
    assert code == 1000
    texts = finals(messages)
    assert len(texts) == 2
    assert joined(texts) == offline.replace(" ", ""), "no word sent twice or lost"
    first, second = (nbest(m) for m in messages if m["type"] == "final_result")
    assert second["word_pieces"][0]["start"] >= 20000, "word times count from the stream's start"
    assert first["word_pieces"][-1]["end"] <= second["word_pieces"][0]["start"]
    # without continuous decoding the first endpoint ends the session, as in WeNet
    messages, code = _send_whole(live.ws, path, continuous=False)
    assert code == 1000
    assert finals(messages) == texts[:1]
    assert messages[-1]["type"] == "speech_end"


def test_continuous_finals_of_the_bundled_model_at_right_context(default_model: echostream.Model) -> None:
    """The reproduction of the repeated words: three sentences joined by 2 s pauses, served at
    8/16/8. Each pause ends a segment at once, and the finals joined equal the offline text."""
    root = Path(__file__).resolve().parents[2]
    parts = []
    for name in ("booking_16k", "phone_16k", "options_16k"):
        x, _ = sf.read(root / "samples" / f"{name}.wav", dtype="int16")
        parts += [x, np.zeros(32000, np.int16)]
    samples = np.concatenate(parts)
    offline = default_model.transcribe((samples, 16000), **RIGHT_CONTEXT_SETTINGS)[0].text
    config = ServerConfig(**RIGHT_CONTEXT_SETTINGS)
    with run_server(default_model, config) as server, connect(server.ws, open_timeout=TIMEOUT) as ws:
        start(ws, 16000, continuous=True)
        send_pcm(ws, samples.astype("<i2").tobytes(), 16000)
        ws.send(json.dumps({"signal": "end"}))
        messages, code = until_closed(ws)
    assert code == 1000
    texts = finals(messages)
    assert len(texts) >= 3
    assert joined(texts) == offline.replace(" ", "")
    words = offline.split()
    assert sum(len(t.split()) for t in texts) <= len(words) + len(texts)  # no repeated words


def test_streams_are_decoded_together(live: LiveServer, audio_dir: Path, fixture_model: echostream.Model,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    batches: list[int] = []
    decode = Recognizer.decode_streams

    def slow_first_step(self: Recognizer, streams: Any) -> None:
        batches.append(len(streams))
        if len(batches) == 1:
            time.sleep(0.3)  # the others' audio piles up meanwhile
        decode(self, streams)

    monkeypatch.setattr(Recognizer, "decode_streams", slow_first_step)
    paths = [audio_dir / FILES[i % len(FILES)] for i in range(6)]
    results: dict[int, list[str]] = {}

    def client(i: int) -> None:
        messages, code = stream_file(live.ws, paths[i])
        results[i] = finals(messages) if code == 1000 else [f"closed with {code}"]

    threads = [threading.Thread(target=client, args=(i,)) for i in range(len(paths))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(TIMEOUT)
    for i, path in enumerate(paths):
        assert results.get(i) == [_expected(fixture_model, path)], path.name
    assert max(batches) > 1, f"batch sizes {batches}"
    live.wait_streams(0)


def test_max_batch_bounds_a_step_and_every_stream_finishes(
    start_server: Callable[..., Any], audio_dir: Path, fixture_model: echostream.Model,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    batches: list[int] = []
    decode = Recognizer.decode_streams

    def record(self: Recognizer, streams: Any) -> None:
        batches.append(len(streams))
        decode(self, streams)

    monkeypatch.setattr(Recognizer, "decode_streams", record)
    with start_server(max_batch=2) as server:
        results: dict[int, list[str]] = {}

        def client(i: int) -> None:
            messages, code = stream_file(server.ws, audio_dir / FILES[i])
            results[i] = finals(messages) if code == 1000 else [f"closed with {code}"]

        threads = [threading.Thread(target=client, args=(i,)) for i in range(len(FILES))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(TIMEOUT)
    assert results == {i: [_expected(fixture_model, audio_dir / f)] for i, f in enumerate(FILES)}
    assert max(batches) <= 2


def test_a_failing_stream_fails_alone(live: LiveServer, audio_dir: Path, tmp_path: Path,
                                      fixture_model: echostream.Model, monkeypatch: pytest.MonkeyPatch) -> None:
    """An injected model failure for one stream (the 8 kHz one): it gets a failed reply and
    1011; the streams decoded in the same batches carry on, with none of their audio lost."""
    poisoned = tmp_path / "long_8k.wav"
    x, rate = sf.read(audio_dir / "long.wav", dtype="float32")
    sf.write(poisoned, soxr.resample(x, rate, 8000), 8000, subtype="PCM_16")
    batches: list[list[int]] = []
    decode = Recognizer.decode_streams
    shared = False  # the 8 kHz stream has been in a batch with others: from then on it fails

    def failing(self: Recognizer, streams: Any) -> None:
        nonlocal shared
        rates = [s._input_rate for s in streams if self.is_ready(s)]
        batches.append(rates)
        if len(batches) == 1:  # hold the worker until every client is connected and sending,
            deadline = time.monotonic() + TIMEOUT  # so that the next batches are shared
            while live.get_json("/healthz")["streams"] < len(FILES) + 1 and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(0.3)
        shared = shared or (8000 in rates and len(rates) > 1)
        if shared and 8000 in rates:  # the shared batch, and the retry of the stream alone
            raise RuntimeError("injected failure")
        decode(self, streams)

    monkeypatch.setattr(Recognizer, "decode_streams", failing)
    paths = [audio_dir / f for f in FILES]
    results: dict[int, tuple[list[dict[str, Any]], int | None]] = {}

    def client(i: int, path: Path) -> None:
        results[i] = stream_file(live.ws, path)

    threads = [threading.Thread(target=client, args=(i, p)) for i, p in enumerate([poisoned, *paths])]
    for t in threads:
        t.start()
        time.sleep(0.05)
    for t in threads:
        t.join(TIMEOUT)
    messages, code = results[0]
    assert code == 1011 and messages[-1] == {"status": "failed", "message": "decoding failed: injected failure"}
    for i, path in enumerate(paths, 1):
        messages, code = results[i]
        assert code == 1000 and finals(messages) == [_expected(fixture_model, path)], path.name
    assert any(8000 in b and len(b) > 1 for b in batches), "the failing stream shared a batch"
    live.wait_streams(0)


# ----------------------------------------------------------------------------- client mistakes


def _expect_failure(ws: ClientConnection, code: int, words: str) -> None:
    messages, closed = until_closed(ws)
    failures = [m for m in messages if m["status"] == "failed"]
    assert len(failures) == 1 and messages[-1] is failures[0], messages
    assert words in failures[0]["message"] and "\n" not in failures[0]["message"]
    assert closed == code


START = json.dumps({"signal": "start", "sample_rate": 16000})

MISTAKES: dict[str, tuple[list[str | bytes], int, str]] = {
    # name: (messages sent, close code, words of the failure message)
    "audio_before_start": ([b"\x00\x00" * 160], 1008, "audio before the start signal"),
    "end_before_start": ([json.dumps({"signal": "end"})], 1008, "end signal before the start signal"),
    "start_twice": ([START, START], 1008, "start signal sent twice"),
    "bad_json": ([START, "{nope"], 1003, "not JSON"),
    "not_an_object": (["[1]"], 1003, "JSON object"),
    "unknown_signal": ([START, json.dumps({"signal": "pause"})], 1003, "unknown signal 'pause'"),
    "bad_sample_rate": ([json.dumps({"signal": "start", "sample_rate": 22050})], 1003, "sample_rate"),
    "odd_byte_count": ([START, b"\x00\x00" * 100, b"\x00" * 3], 1003, "even number"),
}


@pytest.mark.parametrize("name", list(MISTAKES))
def test_a_mistake_gets_an_error_and_a_clean_close_while_others_carry_on(
    live: LiveServer, audio_dir: Path, fixture_model: echostream.Model, name: str
) -> None:
    path = audio_dir / "utt1.wav"
    data, rate = pcm16(path)
    sent, code, words = MISTAKES[name]
    with connect(live.ws, open_timeout=TIMEOUT) as good:
        start(good, rate)
        send_pcm(good, data[: len(data) // 2], rate)
        with connect(live.ws, open_timeout=TIMEOUT) as bad:
            for message in sent:
                bad.send(message)
            _expect_failure(bad, code, words)
        send_pcm(good, data[len(data) // 2 :], rate)
        good.send(json.dumps({"signal": "end"}))
        messages, closed = until_closed(good)
    assert closed == 1000
    assert finals(messages) == [_expected(fixture_model, path)]
    live.wait_streams(0)


def test_a_disconnect_mid_stream_drops_only_that_stream(live: LiveServer, audio_dir: Path,
                                                        fixture_model: echostream.Model) -> None:
    data, rate = pcm16(audio_dir / "utt3.wav")
    with connect(live.ws, open_timeout=TIMEOUT) as gone:
        start(gone, rate)
        send_pcm(gone, data, rate)
    path = audio_dir / "utt2.wav"
    messages, code = stream_file(live.ws, path)
    assert code == 1000 and finals(messages) == [_expected(fixture_model, path)]
    live.wait_streams(0)


def test_messages_after_end_are_ignored(live: LiveServer, audio_dir: Path, fixture_model: echostream.Model) -> None:
    path = audio_dir / "utt2.wav"
    data, rate = pcm16(path)
    with connect(live.ws, open_timeout=TIMEOUT) as ws:
        start(ws, rate)
        send_pcm(ws, data, rate)
        ws.send(json.dumps({"signal": "end"}))
        ws.send(b"\x00")  # odd, but the stream has ended: not read any more
        ws.send(START)
        messages, code = until_closed(ws)
    assert code == 1000
    assert finals(messages) == [_expected(fixture_model, path)]


# ------------------------------------------------------------------------------------- limits


def test_a_message_over_the_limit_is_refused(start_server: Callable[..., Any], audio_dir: Path,
                                             fixture_model: echostream.Model) -> None:
    path = audio_dir / "utt2.wav"
    with start_server(max_message_bytes=4000) as server:
        for big in (b"\x00" * 4002, json.dumps({"signal": "start", "pad": "x" * 4000})):
            with connect(server.ws, open_timeout=TIMEOUT, max_size=None) as ws:
                if isinstance(big, bytes):
                    start(ws)
                ws.send(big)
                _expect_failure(ws, 1009, "exceeds the limit of 4000 bytes")
        # a huge message is cut off by the WebSocket layer itself, with the same reply
        for huge in (b"\x00" * 20000, "x" * 100_000):
            with connect(server.ws, open_timeout=TIMEOUT) as ws:
                start(ws)
                ws.send(huge)
                _expect_failure(ws, 1009, "exceeds the limit of 4000 bytes")
        messages, code = stream_file(server.ws, path)  # 3200-byte messages are fine
        assert code == 1000 and finals(messages) == [_expected(fixture_model, path)]


def test_connections_beyond_the_limit_are_refused(start_server: Callable[..., Any], audio_dir: Path,
                                                  fixture_model: echostream.Model) -> None:
    path = audio_dir / "utt2.wav"
    with start_server(max_connections=2) as server:
        with connect(server.ws, open_timeout=TIMEOUT) as first, connect(server.ws, open_timeout=TIMEOUT) as second:
            start(first)
            start(second)
            with connect(server.ws, open_timeout=TIMEOUT) as third:
                _expect_failure(third, 1008, "too many connections")
            data, rate = pcm16(path)
            send_pcm(first, data, rate)
            first.send(json.dumps({"signal": "end"}))
            messages, code = until_closed(first)
            assert code == 1000 and finals(messages) == [_expected(fixture_model, path)]
        server.wait_streams(0)
        messages, code = stream_file(server.ws, path)  # room again
        assert code == 1000 and finals(messages) == [_expected(fixture_model, path)]


def test_idle_connections_time_out(start_server: Callable[..., Any], audio_dir: Path) -> None:
    with start_server(idle_timeout=0.3) as server:
        with connect(server.ws, open_timeout=TIMEOUT) as silent:
            _expect_failure(silent, 1008, "idle timeout: no message for 0.3 s")
        with connect(server.ws, open_timeout=TIMEOUT) as paused:
            start(paused)
            paused.send(b"\x00\x00" * 1600)
            began = time.monotonic()
            _expect_failure(paused, 1008, "idle timeout")
            assert time.monotonic() - began < 5
        # a client that keeps talking is not idle, however long it takes
        data, rate = pcm16(audio_dir / "utt2.wav")
        with connect(server.ws, open_timeout=TIMEOUT) as steady:
            start(steady, rate)
            for begin in range(0, len(data), 3200):
                steady.send(data[begin : begin + 3200])
                time.sleep(0.1)
            steady.send(json.dumps({"signal": "end"}))
            messages, code = until_closed(steady)
        assert code == 1000 and messages[-1]["type"] == "speech_end"
        server.wait_streams(0)


def test_server_ready_comes_first(live: LiveServer) -> None:
    with connect(live.ws, open_timeout=TIMEOUT) as ws:
        ws.send(json.dumps({"signal": "start"}))
        assert receive(ws) == {"status": "ok", "type": "server_ready"}
        ws.send(json.dumps({"signal": "end"}))
        messages, code = until_closed(ws)
    assert code == 1000
    assert [m["type"] for m in messages] == ["final_result", "speech_end"]
    assert nbest(messages[0]) == {"sentence": "", "word_pieces": []}
