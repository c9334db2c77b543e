"""The HTTP side: /transcribe (multipart and raw body), /healthz, the page and its scripts."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest
from server_helpers import SETTINGS, TIMEOUT, LiveServer

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


def _expected_json(model: echostream.Model, path: Path) -> dict[str, Any]:
    t = model.transcribe(path, **SETTINGS)[0]
    return {
        "text": t.text,
        "segments": [{"start": round(s.start, 3), "end": round(s.end, 3), "text": s.text} for s in t.segments],
        "duration": round(t.duration, 3),
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
    for name in ("app.js", "pcm.js", "recorder-worklet.js"):
        with urllib.request.urlopen(f"{live.http}/static/{name}", timeout=TIMEOUT) as response:
            assert "javascript" in response.headers["content-type"]
            assert response.read()
