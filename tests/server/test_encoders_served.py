"""The server is encoder-agnostic: an Emformer model streams through the WebSocket protocol and
`/transcribe` with the same results as offline decoding, and `/info` reports its 40 ms frames."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from server_helpers import TIMEOUT, finals, run_server, stream_file

import echostream
from echostream.encoders.emformer import EmformerConfig
from echostream.frontend.fbank import FbankConfig
from echostream.models.asr import ASRModelConfig
from echostream.models.build import build_model
from echostream.models.checkpoint import ModelBundle
from echostream.server import ServerConfig
from echostream.text.vocab import Vocabulary


def _emformer_model() -> echostream.Model:
    torch.manual_seed(5)
    encoder = EmformerConfig(input_dim=80, output_size=32, attention_heads=4, linear_units=64, num_blocks=2,
                             memory_size=2, dropout_rate=0.0, attention_dropout_rate=0.0)
    tokens = ("<blank>", "\u2581a", "b", "\u2581c", "d", "e", "\u2581f", "g")
    model = build_model(ASRModelConfig(encoder=encoder, vocab_size=len(tokens))).eval()
    with torch.no_grad():
        model.ctc.ctc_lo.bias[0] = -2.0  # emits often: a non-empty text to compare
    return echostream.Model(ModelBundle(model=model, vocab=Vocabulary(tokens), fbank=FbankConfig()))


def test_an_emformer_model_is_served_like_any_other(tmp_path: Path) -> None:
    model = _emformer_model()
    path = tmp_path / "noise.wav"
    sf.write(path, (0.1 * np.random.default_rng(1).standard_normal(6 * 16000)).astype(np.float32), 16000,
             subtype="PCM_16")
    settings = {"chunk_size": 8, "left_context": 32, "right_context": 4}
    offline = model.transcribe(path, **settings)[0].text
    assert offline
    config = ServerConfig(**settings)
    with run_server(model, config) as live:
        info = live.get_json("/info")
        assert info["frame_ms"] == 40 and info["chunk_ms"] == 320
        messages, code = stream_file(live.ws, path, continuous=False)
        assert code == 1000 and finals(messages) == [offline]
        request = urllib.request.Request(live.http + "/transcribe", data=path.read_bytes(), method="POST",
                                         headers={"Content-Type": "audio/wav"})
        with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
            assert json.loads(response.read())["text"] == offline
