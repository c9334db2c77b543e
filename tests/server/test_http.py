"""The HTTP side: /transcribe (multipart and raw body), /healthz, the page and its scripts."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest
from server_helpers import SETTINGS, TIMEOUT, LiveServer, stream_file

import echostream


def _post(url: str, body: bytes, content_type: str) -> tuple[int, Any]:
    request = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def _multipart(field: str, filename: str, data: bytes) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="{filename}"\r\n'
        f"Content-Type: application/octet-stream\r\n\r\n"
    ).encode() + data + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def _expected_json(model: echostream.Model, path: Path, settings: dict[str, int] = SETTINGS) -> dict[str, Any]:
    t = model.transcribe(path, **settings)[0]
    return {
        "text": t.text,
        "segments": [{"start": round(s.start, 3), "end": round(s.end, 3), "text": s.text} for s in t.segments],
        "words": [{"word": w.word, "start": round(w.start, 3), "end": round(w.end, 3)} for w in t.words],
        "duration": round(t.duration, 3),
        "settings": settings,
    }


def test_transcribe_a_multipart_upload(live: LiveServer, audio_dir: Path, fixture_model: echostream.Model) -> None:
    path = audio_dir / "utt1.wav"
    status, reply = _post(live.http + "/transcribe", *_multipart("file", path.name, path.read_bytes()))
    assert status == 200
    assert reply == _expected_json(fixture_model, path)
    assert reply["text"] and reply["duration"] == pytest.approx(2.859, abs=1e-3)


def test_transcribe_a_raw_body(live: LiveServer, shared_dir: Path, fixture_model: echostream.Model) -> None:
    path = shared_dir / "data" / "fsdd" / "3_jackson_0.wav"
    if not path.is_file():
        pytest.skip(f"8 kHz speech not found at {path}")
    url = live.http + "/transcribe?" + urllib.parse.urlencode({"filename": path.name})
    status, reply = _post(url, path.read_bytes(), "audio/wav")
    assert status == 200
    assert reply == _expected_json(fixture_model, path)


@pytest.mark.parametrize(
    "body, query, words",
    [
        (b"this is not audio at all", "notes.wav", "notes.wav: "),
        (b"RIFF\x10\x00\x00\x00WAVEfmt ", "cut.wav", "cut.wav: "),
        (b"", "empty.wav", "empty.wav: empty upload"),
    ],
)
def test_bad_audio_is_a_400_with_one_line(live: LiveServer, body: bytes, query: str, words: str) -> None:
    status, reply = _post(f"{live.http}/transcribe?filename={query}", body, "application/octet-stream")
    assert status == 400
    assert set(reply) == {"error"}
    assert reply["error"].startswith(words) and "\n" not in reply["error"]
    assert "/tmp" not in reply["error"] and "echostream-upload" not in reply["error"]


def test_bad_multipart_uploads(live: LiveServer) -> None:
    status, reply = _post(live.http + "/transcribe", *_multipart("audio", "a.wav", b"RIFF"))
    assert status == 400 and reply == {"error": "multipart upload has no 'file' field"}
    status, reply = _post(live.http + "/transcribe", *_multipart("file", "../../etc/a b.txt", b"not audio"))
    assert status == 400 and reply["error"].startswith("../../etc/a b.txt: ")


def test_healthz(live: LiveServer) -> None:
    assert live.get_json("/healthz") == {"status": "ok", "streams": 0, "model": "chunkformer-tiny"}


def test_the_page_and_its_scripts_are_served(live: LiveServer) -> None:
    with urllib.request.urlopen(live.http + "/", timeout=TIMEOUT) as response:
        assert response.headers["content-type"].startswith("text/html")
        page = response.read().decode()
    assert 'id="start"' in page and "static/app.js" in page
    for name in ("app.js", "pcm.js", "recorder-worklet.js", "transcript.js", "style.css"):
        with urllib.request.urlopen(f"{live.http}/static/{name}", timeout=TIMEOUT) as response:
            kind = "css" if name.endswith(".css") else "javascript"
            assert kind in response.headers["content-type"]
            assert response.read()


def test_info_names_the_model_and_settings(live: LiveServer) -> None:
    info = live.get_json("/info")
    assert info["model"] == "chunkformer-tiny" and info["parameters"] > 0
    assert (info["chunk_size"], info["left_context"], info["right_context"]) == (8, 32, 0)
    assert info["chunk_ms"] == 640 and info["final_latency_ms"] == 640


def test_chunk_settings_per_request(live: LiveServer, audio_dir: Path, fixture_model: echostream.Model) -> None:
    path = audio_dir / "long.wav"
    settings = {"chunk_size": 16, "left_context": 32, "right_context": 16}
    status, reply = _post(f"{live.http}/transcribe?{urllib.parse.urlencode(settings)}", path.read_bytes(), "audio/wav")
    assert status == 200
    assert reply == _expected_json(fixture_model, path, settings)
    assert reply["text"] != _expected_json(fixture_model, path)["text"]  # the setting made a difference
    for query, words in (("chunk_size=0", "chunk_size must be positive"), ("right_context=99999", "above the maximum"),
                         ("left_context=ten", "left_context must be an integer")):
        status, reply = _post(f"{live.http}/transcribe?{query}", path.read_bytes(), "audio/wav")
        assert status == 400 and words in reply["error"], reply


def test_uploads_over_the_limit_are_a_413(start_server: Any, audio_dir: Path, fixture_model: echostream.Model) -> None:
    path = audio_dir / "utt1.wav"  # 91 kB
    with start_server(max_upload_bytes=50_000) as server:
        status, reply = _post(server.http + "/transcribe", path.read_bytes(), "audio/wav")  # Content-Length
        assert status == 413 and "exceeds the limit of 50000 bytes" in reply["error"]
        status, reply = _post(server.http + "/transcribe", *_multipart("file", path.name, path.read_bytes()))
        assert status == 413

        def chunks() -> Any:  # no Content-Length: the body is counted as it comes
            data = path.read_bytes()
            for i in range(0, len(data), 8192):
                yield data[i : i + 8192]

        request = urllib.request.Request(server.http + "/transcribe", data=chunks(), method="POST",
                                         headers={"Content-Type": "audio/wav", "Transfer-Encoding": "chunked"})
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(request, timeout=TIMEOUT)
        assert info.value.code == 413
        small = audio_dir / "utt0.wav"
        if small.stat().st_size < 50_000:
            status, _ = _post(server.http + "/transcribe", small.read_bytes(), "audio/wav")
            assert status == 200


def test_uploads_wait_while_streams_are_ready(live: LiveServer, audio_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A file job advances only in steps where no stream was ready: record each worker step."""
    from echostream.server.batcher import Batcher

    steps: list[tuple[int, bool]] = []  # (ready streams decoded, whether a job advanced)
    original = Batcher._advance
    step = Batcher._step

    def advance(job: Any) -> bool:
        steps.append((-1, True))
        return original(job)

    def recorded(self: Batcher, feeds: Any, sessions: Any, job: Any = None) -> Any:
        ready = sum(1 for s in sessions if not s.done and self.recognizer.is_ready(s.stream))
        steps.append((ready, False))
        return step(self, feeds, sessions, job)

    monkeypatch.setattr(Batcher, "_advance", staticmethod(advance))
    monkeypatch.setattr(Batcher, "_step", recorded)
    results: dict[str, Any] = {}

    def upload() -> None:
        results["upload"] = _post(live.http + "/transcribe", (audio_dir / "long.wav").read_bytes(), "audio/wav")

    def stream() -> None:
        results["stream"] = stream_file(live.ws, audio_dir / "long.wav")

    threads = [threading.Thread(target=stream), threading.Thread(target=upload)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(TIMEOUT * 3)
    assert results["upload"][0] == 200 and results["stream"][1] == 1000
    advanced_after = [steps[i - 1][0] for i, (_, advanced) in enumerate(steps) if advanced]
    assert advanced_after and all(ready == 0 for ready in advanced_after)
