"""``serve --runtime onnx``: the server streams an exported model with the torch server's results."""

from __future__ import annotations

from pathlib import Path

import pytest
from server_helpers import SETTINGS, finals, run_server, stream_file

import echostream
from echostream.server import ServerConfig

SAMPLE = Path(__file__).resolve().parents[2] / "samples" / "phone_16k.wav"


def test_onnx_runtime_is_served_like_torch(exported_default: Path, default_model: echostream.Model) -> None:
    pytest.importorskip("onnxruntime", reason="the 'onnx' extra (onnx, onnxruntime) is not installed")
    onnx_model = echostream.load_model(exported_default, runtime="onnx")
    results = []
    for model in (default_model, onnx_model):
        with run_server(model, ServerConfig(**SETTINGS)) as live:
            messages, code = stream_file(live.ws, SAMPLE)
            assert code == 1000
            results.append(finals(messages))
    assert results[0] == results[1] and "".join(results[0]).strip()
