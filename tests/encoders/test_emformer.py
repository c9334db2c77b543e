"""What makes an Emformer an Emformer, beyond the shared contract (test_conformance.py): a
segment's look-ahead is its right context at any depth, the memory bank carries earlier segments
past the left context, and the model runs everywhere a ChunkFormer does (transcribe, long-form,
Recognizer)."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

import echostream
from echostream.config import ConfigError, from_dict
from echostream.encoders.base import ChunkContext, EncoderConfig
from echostream.encoders.emformer import EmformerConfig, EmformerEncoder
from echostream.frontend.fbank import FbankConfig
from echostream.models.asr import ASRModelConfig
from echostream.models.build import build_model
from echostream.models.checkpoint import ModelBundle
from echostream.streaming.recognizer import EndpointConfig, Recognizer
from echostream.text.vocab import Vocabulary
from streaming_helpers import feed_in_pieces

BINS = 20


def _encoder(**changes: object) -> EmformerEncoder:
    torch.manual_seed(0)
    shape = {"input_dim": BINS, "output_size": 32, "attention_heads": 4, "linear_units": 64, "num_blocks": 4,
             "memory_size": 2, "dropout_rate": 0.0, "attention_dropout_rate": 0.0, **changes}
    cfg = EmformerConfig(**shape)  # type: ignore[arg-type]
    return EmformerEncoder(cfg).eval()


def _encode(encoder: EmformerEncoder, x: torch.Tensor, context: ChunkContext) -> torch.Tensor:
    with torch.inference_mode():
        return encoder(x, torch.tensor([x.shape[1]]), context)[0][0]


def _changed_frames(encoder: EmformerEncoder, context: ChunkContext, frames: slice) -> set[int]:
    """Encoder frames whose output moves when encoder-input frames ``frames`` are changed."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1, 4 * 60, BINS, generator=g)
    y = _encode(encoder, x, context)
    x2 = x.clone()
    x2[0, frames.start * 4 : frames.stop * 4] += torch.randn((frames.stop - frames.start) * 4, BINS, generator=g)
    diff = (_encode(encoder, x2, context) - y).abs().amax(-1)
    return {int(i) for i in torch.nonzero(diff > 1e-6)}


@pytest.mark.parametrize("conv_kernel", [0, 7], ids=["emformer", "conv_emformer"])
def test_look_ahead_is_the_right_context_at_any_depth(conv_kernel: int) -> None:
    """Segment 2 (frames 8..11, C=4, R=3) sees frames 12..14 and nothing later, through 4 layers
    (with a convolution of kernel 7 in each too: it is causal, so it adds no look-ahead)."""
    encoder, context = _encoder(conv_kernel=conv_kernel), ChunkContext(chunk=4, left=8, right=3)
    assert encoder.latency_frames(context) == 3
    assert not _changed_frames(encoder, context, slice(15, 16)) & set(range(12))
    assert _changed_frames(encoder, context, slice(14, 15)) & set(range(8, 12))
    assert not _changed_frames(encoder, context, slice(12, 16)) & set(range(8))


def test_the_memory_bank_reaches_past_the_left_context() -> None:
    """With no left context, segment 3 depends on segment 2 only through the memory bank."""
    context = ChunkContext(chunk=4, left=0, right=0)
    with_memory = _changed_frames(_encoder(memory_size=2), context, slice(8, 12))
    without = _changed_frames(_encoder(memory_size=0), context, slice(8, 12))
    assert without == set(range(8, 12))
    assert set(range(12, 16)) <= with_memory


def test_the_convolution_reaches_back_past_the_left_context() -> None:
    """With no left context and no memory, only the causal convolution (kernel 7: 6 frames back
    per layer, 4 layers) carries earlier frames into a segment."""
    context = ChunkContext(chunk=4, left=0, right=0)
    assert _changed_frames(_encoder(memory_size=0), context, slice(8, 12)) == set(range(8, 12))
    reached = _changed_frames(_encoder(memory_size=0, conv_kernel=7), context, slice(8, 12))
    assert set(range(8, 16)) <= reached and not reached & set(range(8))


def test_config_errors_name_the_key() -> None:
    with pytest.raises(ValueError, match="memory_size must be >= 0"):
        EmformerConfig(memory_size=-1)
    for kernel in (-1, 1, 4):
        with pytest.raises(ValueError, match=f"conv_kernel must be 0 .no convolution. or odd and >= 3, got {kernel}"):
            EmformerConfig(conv_kernel=kernel)
    with pytest.raises(ValueError, match="output_size 30 is not divisible by attention_heads 4"):
        EmformerConfig(output_size=30)
    data = {"type": "emformer", "cnn_module_kernel": 15}  # a ChunkFormer key
    with pytest.raises(ConfigError, match="cnn_module_kernel"):
        from_dict(EncoderConfig.tagged_class(data), data, "encoder")


@pytest.fixture(scope="module")
def emformer_model() -> echostream.Model:
    torch.manual_seed(2)
    encoder = EmformerConfig(input_dim=BINS, output_size=32, attention_heads=4, linear_units=64, num_blocks=2,
                             memory_size=2, dropout_rate=0.0, attention_dropout_rate=0.0)
    tokens = ("<blank>", "\u2581a", "b", "\u2581c", "d", "e", "\u2581f", "g")
    model = build_model(ASRModelConfig(encoder=encoder, vocab_size=len(tokens))).eval()
    with torch.no_grad():  # a CTC head that emits often, so that texts differ between settings
        model.ctc.ctc_lo.bias[0] = -2.0
    return echostream.Model(ModelBundle(model=model, vocab=Vocabulary(tokens), fbank=FbankConfig(num_mel_bins=BINS)))


@pytest.fixture(scope="module")
def speech(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """12 s of noise-like audio (random weights: any signal gives tokens)."""
    rng = np.random.default_rng(0)
    path = tmp_path_factory.mktemp("audio") / "noise.wav"
    samples = (0.1 * rng.standard_normal(12 * 16000)).astype(np.float32)
    sf.write(path, samples, 16000, subtype="FLOAT")
    return path


@pytest.mark.parametrize("setting", [(4, 8, 4), (16, 32, 0)], ids=lambda s: "c{}_l{}_r{}".format(*s))
def test_transcribe_long_form_and_recognizer_agree(
    emformer_model: echostream.Model, speech: Path, setting: tuple[int, int, int]
) -> None:
    c, left, right = setting
    kwargs = {"chunk_size": c, "left_context": left, "right_context": right}
    one_pass = emformer_model.ctc_log_probs(speech, **kwargs)
    assert one_pass.shape[0] == 12 * 100 // 4 - 1  # 40 ms frames (fbank gives 1198 frames)
    blocks = emformer_model.transcribe(speech, block_seconds=1.3, **kwargs)[0]
    whole = emformer_model.transcribe(speech, block_seconds=30.0, **kwargs)[0]
    assert blocks.text == whole.text and whole.text
    rec = Recognizer(emformer_model, endpoint=EndpointConfig(enabled=False), keep_log_probs=True, **kwargs)
    samples, _ = sf.read(speech, dtype="float32")
    stream = feed_in_pieces(rec, rec.create_stream(), samples, 16000, random.Random(0), 160, 32000)
    assert np.abs(np.concatenate(stream.log_probs) - one_pass).max() <= 1e-4
    assert stream.result.text == whole.text
    assert rec.latency_seconds == pytest.approx((c + right) * 0.04)
    frames = [(t.time - 0.0275) / 0.04 for t in whole.tokens]  # 40 ms frames, centred on 4 features
    assert frames and all(abs(f - round(f)) < 1e-6 and 0 <= f < one_pass.shape[0] for f in frames)


@pytest.mark.parametrize("conv_kernel", [0, 5], ids=["emformer", "conv_emformer"])
@pytest.mark.parametrize("setting", [(4, 8, 3), (3, 0, 0), (2, 5, 6)], ids=lambda s: "c{}_l{}_r{}".format(*s))
def test_the_tensor_only_step_gives_the_forward_frames(setting: tuple[int, int, int], conv_kernel: int) -> None:
    """``step``, fed fixed windows by the caller (no Python-side planning), equals ``forward``
    on every complete segment."""
    c, left, r = setting
    encoder, context = _encoder(conv_kernel=conv_kernel), ChunkContext(chunk=c, left=left, right=r)
    g = torch.Generator().manual_seed(4)
    x = torch.randn(2, 4 * 53, BINS, generator=g)
    with torch.inference_mode():
        y, _ = encoder(x, torch.tensor([x.shape[1]] * 2), context)
        state = encoder.init_state(2, context)
        caches = (state.left_kv, state.memory, *([state.conv_cache] if conv_kernel else []))
        index = state.segments
        outs = []
        for k in range((53 - r) // c):
            window = x[:, 4 * k * c : 4 * (k * c + c + r)]
            out, caches, index = encoder.step(window, caches, index, context)
            outs.append(out)
    got = torch.cat(outs, dim=1)
    torch.testing.assert_close(got, y[:, : got.shape[1]], rtol=0, atol=1e-5)
    assert index.tolist() == [len(outs)] * 2


def test_mixed_precision_training_and_streaming_run() -> None:
    """Under bf16 autocast (``precision: bf16`` in training) the caches keep their dtype and the
    result stays near fp32's."""
    encoder, context = _encoder().train(), ChunkContext(chunk=4, left=8, right=2)
    x = torch.randn(2, 4 * 30, BINS, generator=torch.Generator().manual_seed(6))
    lens = torch.tensor([120, 77])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y, _ = encoder(x, lens, context)
        y.float().sum().backward()
    assert all(p.grad is not None for p in encoder.parameters())
    encoder.eval()
    with torch.inference_mode():
        exact, _ = encoder(x, lens, context)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            _, _, state = encoder.forward_chunk(x[:, :50], torch.tensor([50, 50]), encoder.init_state(2, context),
                                                torch.tensor([False, False]))
            rest, _, _ = encoder.forward_chunk(x[:, 50:], lens - 50, state, torch.tensor([True, True]))
    assert state.left_kv.dtype == torch.float32
    assert (rest.float()[0, -5:] - exact[0, 25:30]).abs().max() < 0.1
