"""precision="int8": a quantised copy of the model that runs everywhere fp32 does, close to it."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch

import echostream
from echostream.cli.main import main
from echostream.model import Model
from echostream.models.precision import PrecisionError, check_precision, is_quantized
from echostream.training.evaluation import word_errors

SAMPLES = sorted((Path(__file__).resolve().parents[1] / "samples").glob("*.wav"))


@pytest.fixture(scope="module")
def int8_model(default_model: echostream.Model) -> echostream.Model:
    return Model(default_model.bundle, precision="int8")


def test_int8_is_a_quantised_copy(default_model: echostream.Model, int8_model: echostream.Model) -> None:
    assert int8_model.precision == "int8" and is_quantized(int8_model.bundle.model)
    assert default_model.precision == "fp32" and not is_quantized(default_model.bundle.model)
    linear = default_model.bundle.model.encoder.layers[0].feed_forward.w_1
    assert isinstance(linear, torch.nn.Linear)  # the fp32 model is not quantised in place


@pytest.mark.parametrize("path", SAMPLES, ids=lambda p: p.stem)
def test_int8_stays_close_to_fp32(default_model: echostream.Model, int8_model: echostream.Model, path: Path) -> None:
    fp32 = np.exp(default_model.ctc_log_probs(str(path)))
    int8 = np.exp(int8_model.ctc_log_probs(str(path)))
    assert fp32.shape == int8.shape
    difference = np.abs(fp32 - int8)
    assert difference.mean() < 1e-3, difference.mean()
    assert 0 < difference.max() < 0.25  # quantised (not the fp32 path), but near it
    (text32,) = default_model.transcribe([str(path)])
    (text8,) = int8_model.transcribe([str(path)])
    # the same transcript up to one word: near-ties of the CTC argmax may tip the other way
    assert text8.text and word_errors(text32.text, text8.text).errors <= 1, (text32.text, text8.text)


def test_int8_streams_close_to_how_it_transcribes(int8_model: echostream.Model) -> None:
    """Dynamic quantisation scales each call's activations by their own range, so how the frames
    are grouped into calls moves the result a little: near, not equal (fp32 is equal)."""
    from echostream.audio import load_audio
    from echostream.streaming.recognizer import EndpointConfig
    from streaming_helpers import feed_in_pieces

    audio = load_audio(str(SAMPLES[0]), int8_model.sample_rate)
    recognizer = echostream.Recognizer(int8_model, chunk_size=8, left_context=32, right_context=0,
                                       endpoint=EndpointConfig(enabled=False), keep_log_probs=True)
    stream = feed_in_pieces(recognizer, recognizer.create_stream(), audio, int8_model.sample_rate,
                            random.Random(0), 160, 4000)
    offline = int8_model.ctc_log_probs(str(SAMPLES[0]), chunk_size=8, left_context=32, right_context=0)
    streamed = np.concatenate(stream.log_probs)
    assert streamed.shape == offline.shape
    assert np.abs(np.exp(streamed) - np.exp(offline)).mean() < 1e-3
    assert (streamed.argmax(-1) == offline.argmax(-1)).mean() > 0.9
    assert stream.result.text


@pytest.mark.parametrize(
    ("precision", "device", "message"),
    [("fp16", "cpu", "unknown precision 'fp16'"), ("int8", "cuda", "int8 runs on cpu only")],
)
def test_unusable_precision_is_one_line(precision: str, device: str, message: str) -> None:
    with pytest.raises(PrecisionError, match=message):
        check_precision(precision, torch.device(device))


def test_load_model_checks_precision_before_loading(tmp_path: Path) -> None:
    with pytest.raises(PrecisionError, match="unknown precision 'bf16'"):
        echostream.load_model(tmp_path / "missing", precision="bf16")


def test_cli_precision(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["transcribe", "--model", "small_en", "--precision", "int8", str(SAMPLES[1])]) == 0  # knows these words
    out, _ = capsys.readouterr()
    assert "returns team" in out
    assert main(["transcribe", "--precision", "fp16", str(SAMPLES[1])]) != 0
    _, err = capsys.readouterr()
    assert err.strip().splitlines() == ["echostream: error: unknown precision 'fp16' (use fp32 or int8)"]
