"""The microphone page in headless Chromium, driven over the Chrome DevTools protocol.

Chromium's fake capture device plays a 16 kHz file as the microphone; the page records it through
its AudioWorklet, streams it, and must show partial and then final text.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import soundfile as sf
from server_helpers import LiveServer, run_server
from websockets.sync.client import ClientConnection, connect

import echostream
from echostream.server import ServerConfig
from echostream.text.normalize import NormalizerConfig, normalize_text
from echostream.training.evaluation import word_errors

CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="Chromium is not installed (.ci/install-browser installs it with apt-get)"
)
STARTUP_SECONDS = 30.0
PAGE_SECONDS = 30.0


class DevTools:
    """A minimal Chrome DevTools protocol client for one page."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.last_id = 0

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        self.last_id += 1
        self.ws.send(json.dumps({"id": self.last_id, "method": method, "params": params}))
        while True:  # events come in between; skip them
            message = json.loads(self.ws.recv(timeout=PAGE_SECONDS))
            if message.get("id") == self.last_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message["result"]  # type: ignore[no-any-return]

    def evaluate(self, expression: str, *, user_gesture: bool = False) -> Any:
        result = self.call(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True,
            userGesture=user_gesture,
        )
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, what: str) -> Any:
        deadline = time.monotonic() + PAGE_SECONDS
        while not (value := self.evaluate(expression)):
            if time.monotonic() > deadline:
                status = self.evaluate("document.getElementById('status').textContent")
                raise AssertionError(f"timed out waiting for {what}; the page says {status!r}")
            time.sleep(0.1)
        return value


@contextmanager
def chromium(fake_microphone: Path, profile: Path) -> Iterator[DevTools]:
    assert CHROMIUM is not None
    args = [
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
        "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
        f"--use-file-for-fake-audio-capture={fake_microphone}",
        "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run",
        f"--user-data-dir={profile}", "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0",
        "about:blank",
    ]
    log = (profile.parent / "chromium.log").open("w")
    process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
    try:
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + STARTUP_SECONDS
        while not (port_file.is_file() and port_file.read_text().strip()):
            assert process.poll() is None, f"Chromium exited: {(profile.parent / 'chromium.log').read_text()[-2000:]}"
            assert time.monotonic() < deadline, "Chromium did not open its DevTools port"
            time.sleep(0.05)
        port = int(port_file.read_text().split()[0])
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=STARTUP_SECONDS) as response:
            pages = [t for t in json.loads(response.read()) if t["type"] == "page"]
        with connect(pages[0]["webSocketDebuggerUrl"], max_size=None, open_timeout=STARTUP_SECONDS) as ws:
            yield DevTools(ws)
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


OUTPUT_DIR = Path(__file__).resolve().parents[2] / "test-output"
"""Screenshots of the page land here (ignored by git), to be looked at after a run."""
SPAN = r"^\d+:\d\d\.\d – \d+:\d\d\.\d$"


def _texts(page: DevTools, selector: str) -> list[str]:
    return page.evaluate(f"Array.from(document.querySelectorAll({selector!r})).map(e => e.textContent)")  # type: ignore[no-any-return]


def test_the_page_streams_the_microphone(live: LiveServer, audio_dir: Path, tmp_path: Path,
                                         fixture_model: echostream.Model) -> None:
    with chromium(audio_dir / "utt3.wav", tmp_path / "profile") as page:
        page.call("Page.navigate", url=live.http + "/")
        page.wait_for("document.body && document.body.dataset.ready === 'true'", "the page's script")
        # the model and settings in use
        assert page.evaluate("document.getElementById('model').textContent").startswith("chunkformer-tiny (")
        assert page.evaluate("document.getElementById('context').textContent") == "8 / 32 / 0 frames (640 ms chunks)"
        assert page.evaluate("document.getElementById('final-latency').textContent") == "640 ms"
        # the microphone: level, partial text with the measured lag, then finals with times
        page.evaluate("document.getElementById('start').click()", user_gesture=True)
        page.wait_for("window.echostream.levelDb > -50", "the level meter to show speech")
        assert float(page.evaluate("parseFloat(document.getElementById('level-bar').style.width)")) > 0
        text = page.wait_for(
            "Array.from(document.querySelectorAll('#transcript .partial .text, #transcript .final .text'))"
            ".map(p => p.textContent).join(' ').trim()",
            "partial text",
        )
        assert text
        assert live.get_json("/healthz")["streams"] == 1
        page.wait_for("window.echostream.lagMs !== null", "a measured lag")
        assert re.fullmatch(r"\d+ ms", page.evaluate("document.getElementById('lag').textContent"))
        color = page.evaluate(
            "(() => { const p = document.querySelector('#transcript .partial .text');"
            " return p ? getComputedStyle(p).color : 'rgb(136, 136, 136)'; })()"
        )
        assert color == "rgb(136, 136, 136)", "partial text is grey"
        page.evaluate("document.getElementById('stop').click()", user_gesture=True)
        page.wait_for("document.getElementById('status').textContent === 'done'", "the end of the stream")
        finals = _texts(page, "#transcript .final .text")
        assert finals and all(finals), finals
        assert all(re.fullmatch(SPAN, t) for t in _texts(page, "#transcript .final .time"))
        assert page.evaluate("getComputedStyle(document.querySelector('#transcript .final .text')).color") == "rgb(0, 0, 0)"
        assert page.evaluate("document.querySelectorAll('#transcript .partial').length") == 0
        live.wait_streams(0)

        # a file through /transcribe
        upload = audio_dir / "utt1.wav"
        document = page.call("DOM.getDocument")
        node = page.call("DOM.querySelector", nodeId=document["root"]["nodeId"], selector="#upload-file")
        page.call("DOM.setFileInputFiles", files=[str(upload)], nodeId=node["nodeId"])
        page.wait_for("!document.getElementById('upload').disabled", "the upload button")
        page.evaluate("document.getElementById('upload').click()", user_gesture=True)
        page.wait_for("document.getElementById('status').textContent.startsWith('utt1.wav: ')", "the file's transcript")
        expected = fixture_model.transcribe(upload, chunk_size=8, left_context=32, right_context=0)[0]
        assert _texts(page, "#transcript .file:not(.heading) .text") == [s.text for s in expected.segments]

        # download and copy give the transcript as shown
        shown = page.evaluate("document.getElementById('transcript').innerText")
        page.evaluate("document.getElementById('download').click()", user_gesture=True)
        downloaded = page.evaluate("fetch(window.echostream.lastDownload).then(r => r.text())")
        lines = downloaded.splitlines()
        assert len(lines) == len(finals) + 1 + len(expected.segments)
        assert all(f in downloaded for f in finals) and all(s.text in downloaded for s in expected.segments)
        assert "utt1.wav" in shown
        page.call("Browser.grantPermissions", origin=live.http,
                  permissions=["clipboardReadWrite", "clipboardSanitizedWrite"])
        page.call("Emulation.setFocusEmulationEnabled", enabled=True)  # the clipboard wants a focused page
        page.evaluate("document.getElementById('copy').click()", user_gesture=True)
        copied = page.wait_for("window.echostream.copied", "the copy")
        assert copied + "\n" == downloaded

        OUTPUT_DIR.mkdir(exist_ok=True)
        shot = page.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        (OUTPUT_DIR / "microphone-page.png").write_bytes(base64.b64decode(shot["data"]))


def test_the_page_transcribes_a_sample_with_the_bundled_model(default_model: echostream.Model, tmp_path: Path) -> None:
    """What a new user meets: `echostream serve` (the bundled default model at the server's
    default settings) and the page, with a sample sentence played once as the microphone; the
    finals shown are that sentence (the bound is the one of tests/test_default_model.py)."""
    sample = Path(__file__).resolve().parents[2] / "samples" / "phone_16k.wav"
    with run_server(default_model, ServerConfig()) as live, chromium(Path(f"{sample}%noloop"), tmp_path / "profile") as page:
        page.call("Page.navigate", url=live.http + "/")
        page.wait_for("document.body && document.body.dataset.ready === 'true'", "the page's script")
        page.evaluate("document.getElementById('start').click()", user_gesture=True)
        page.wait_for("window.echostream.levelDb > -50", "the level meter to show speech")
        time.sleep(sf.info(sample).duration)  # the whole sentence has been played
        page.wait_for("window.echostream.levelDb < -80", "the silence after it")
        page.evaluate("document.getElementById('stop').click()", user_gesture=True)
        page.wait_for("document.getElementById('status').textContent === 'done'", "the end of the stream")
        shown = " ".join(_texts(page, "#transcript .final .text"))
    reference = normalize_text(sample.with_suffix(".txt").read_text(encoding="utf-8"), NormalizerConfig())
    assert word_errors(reference, normalize_text(shown, NormalizerConfig())).rate <= 0.35, shown
