"""The server is encoder-agnostic: an Emformer and a Zipformer model stream through the WebSocket
protocol and `/transcribe` with the same results as offline decoding, and `/info` reports their
40 ms frames."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from server_helpers import TIMEOUT, finals, run_server, stream_file

import echostream
from echostream.encoders.base import EncoderConfig
from echostream.encoders.emformer import EmformerConfig
from echostream.encoders.zipformer import ZipformerConfig
from echostream.frontend.fbank import FbankConfig
from echostream.models.asr import ASRModelConfig
from echostream.models.build import build_model
from echostream.models.checkpoint import ModelBundle
from echostream.server import ServerConfig
from echostream.text.vocab import Vocabulary

ENCODERS: dict[str, tuple[EncoderConfig, int]] = {  # a tiny encoder and the right context it can run
    "emformer": (EmformerConfig(input_dim=80, output_size=32, attention_heads=4, linear_units=64, num_blocks=2,
                                memory_size=2, dropout_rate=0.0, attention_dropout_rate=0.0), 4),
    "zipformer": (ZipformerConfig(input_dim=80, downsampling_factors=(1, 2, 4, 2), encoder_dims=(16, 24, 32, 24),
                                  num_layers=(1, 1, 1, 1), attention_heads=(2, 2, 2, 2),
                                  feedforward_dims=(32, 48, 64, 48), cnn_module_kernels=(7, 5, 3, 5),
                                  query_head_dim=8, value_head_dim=4, dropout_rate=0.0), 0),
}


def _model(encoder: EncoderConfig) -> echostream.Model:
    torch.manual_seed(5)
    tokens = ("<blank>", "\u2581a", "b", "\u2581c", "d", "e", "\u2581f", "g")
    model = build_model(ASRModelConfig(encoder=encoder, vocab_size=len(tokens))).eval()
    with torch.no_grad():
        model.ctc.ctc_lo.bias[0] = -2.0  # emits often: a non-empty text to compare
    return echostream.Model(ModelBundle(model=model, vocab=Vocabulary(tokens), fbank=FbankConfig()))


@pytest.mark.parametrize("name", list(ENCODERS))
def test_another_encoder_is_served_like_any_other(name: str, tmp_path: Path) -> None:
    encoder, right = ENCODERS[name]
    model = _model(encoder)
    path = tmp_path / "noise.wav"
    sf.write(path, (0.1 * np.random.default_rng(1).standard_normal(6 * 16000)).astype(np.float32), 16000,
             subtype="PCM_16")
    settings = {"chunk_size": 8, "left_context": 32, "right_context": right}
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
