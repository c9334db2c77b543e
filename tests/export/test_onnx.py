"""ONNX export and the onnxruntime backend: equal to the torch path in log-probabilities (<= 1e-4)
and text, through long-form decoding, the Recognizer and the CLI; bad folders and settings fail
with one line."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

import echostream
from echostream.cli.main import main
from echostream.encoders.base import ChunkContext, EncoderConfig
from echostream.export.onnx import ExportError, export_onnx, read_export_info
from echostream.models.checkpoint import ModelBundle, save_checkpoint

ort = pytest.importorskip("onnxruntime", reason="the 'onnx' extra (onnx, onnxruntime) is not installed")
onnx = pytest.importorskip("onnx", reason="the 'onnx' extra (onnx, onnxruntime) is not installed")

REPO_DIR = Path(__file__).resolve().parents[2]
SAMPLES = sorted((REPO_DIR / "samples").glob("*.wav"))
TOLERANCE = 1e-4
TINY_CONTEXTS = [ChunkContext(chunk=4, left=8, right=4), ChunkContext(chunk=4, left=8, right=0)]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[echostream.Model, Path, Path]:
    """A random tiny model as a checkpoint, and its export (two chunks per step, int8 too)."""
    from conftest import tiny_encoder_config

    bundle = _bundle(tiny_encoder_config(), seed=3)
    root = tmp_path_factory.mktemp("onnx_tiny")
    save_checkpoint(root / "model.pt", bundle)
    folder = export_onnx(bundle, root / "export", TINY_CONTEXTS, chunks_per_step=2, int8=True)
    return echostream.load_model(root / "model.pt"), root / "model.pt", folder


def _bundle(encoder: EncoderConfig, seed: int) -> ModelBundle:
    """A random model around ``encoder`` (20 fbank bins), with a non-trivial CMVN and a CTC head
    that emits often (a non-empty text to compare)."""
    from conftest import TINY_VOCAB
    from echostream.frontend import FbankConfig
    from echostream.models.asr import ASRModelConfig
    from echostream.models.build import build_model
    from echostream.text.vocab import Vocabulary

    torch.manual_seed(seed)
    model = build_model(ASRModelConfig(encoder=encoder, vocab_size=len(TINY_VOCAB))).eval()
    with torch.no_grad():
        model.cmvn.mean.uniform_(-1.0, 1.0)
        model.ctc.ctc_lo.bias[0] = -1.0
    return ModelBundle(model=model, vocab=Vocabulary(TINY_VOCAB), fbank=FbankConfig(num_mel_bins=20))


def _noise(seconds: float, seed: int = 0) -> np.ndarray:
    return (0.1 * np.random.default_rng(seed).standard_normal(round(seconds * 16000))).astype(np.float32)


def _log_probs(model: echostream.Model, audio: np.ndarray, context: ChunkContext, block: float) -> np.ndarray:
    chunk, left, right = context.as_tuple()
    return model.ctc_log_probs(audio, chunk_size=chunk, left_context=left, right_context=right,
                               sample_rate=16000, block_seconds=block)


def _stream(model: echostream.Model, audio: np.ndarray, rate: int, **settings: int) -> tuple[str, np.ndarray]:
    """Text and log-probabilities of ``audio`` streamed through a Recognizer in 100 ms pieces."""
    rec = echostream.Recognizer(model, keep_log_probs=True, **settings)
    stream = rec.create_stream()
    for i in range(0, len(audio), rate // 10):
        stream.accept_waveform(rate, audio[i : i + rate // 10])
        while rec.is_ready(stream):
            rec.decode_streams([stream])
    stream.input_finished()
    while rec.is_ready(stream):
        rec.decode_streams([stream])
    return stream.result.text, np.concatenate(stream.log_probs)


def _assert_same_log_probs(torch_model: echostream.Model, onnx_model: echostream.Model, audio: np.ndarray,
                           context: ChunkContext, block: float, record_property: Callable[..., None]) -> None:
    want = _log_probs(torch_model, audio, context, block)
    got = _log_probs(onnx_model, audio, context, block)
    assert got.shape == want.shape
    diff = float(np.abs(got - want).max()) if got.size else 0.0
    record_property("max_abs_diff", diff)
    assert diff <= TOLERANCE


def _assert_streams_alike(torch_model: echostream.Model, onnx_model: echostream.Model, audio: np.ndarray,
                          rate: int, **settings: int) -> tuple[str, np.ndarray]:
    """Both models streamed: the same text, log-probabilities within TOLERANCE; torch's result."""
    (text_t, lp_t), (text_o, lp_o) = (_stream(m, audio, rate, **settings) for m in (torch_model, onnx_model))
    assert text_o == text_t
    assert lp_o.shape == lp_t.shape and np.abs(lp_o - lp_t).max() <= TOLERANCE
    return text_t, lp_t


@pytest.mark.parametrize("whole_limit", [60_000, 100], ids=["whole", "steps"])
@pytest.mark.parametrize("block", [30.0, 0.37])
@pytest.mark.parametrize("context", TINY_CONTEXTS, ids=["right_4", "right_0"])
def test_onnx_log_probs_equal_torch(
    tiny: tuple[echostream.Model, Path, Path], context: ChunkContext, block: float, whole_limit: int,
    record_property: Callable[..., None],
) -> None:
    torch_model, _, folder = tiny
    onnx_model = echostream.load_model(folder, runtime="onnx")
    onnx_model.bundle.model.encoder.whole_limit_frames = whole_limit  # 100: the step graph from 1 s on
    _assert_same_log_probs(torch_model, onnx_model, _noise(11.0), context, block, record_property)


def test_streams_decoded_together_equal_torch(tiny: tuple[echostream.Model, Path, Path]) -> None:
    """Several files in one batch, whole-utterance calls grouped under a frame budget (and one
    stream past it on the step graph): each equals torch."""
    torch_model, _, folder = tiny
    onnx_model = echostream.load_model(folder, runtime="onnx")
    onnx_model.bundle.model.encoder.whole_limit_frames = 700  # 3.1 s + 2 s in one call; 7.5 s steps
    audio = [(_noise(seconds, seed=i), 16000) for i, seconds in enumerate((3.1, 2.0, 7.5, 0.6, 3.0))]
    settings = {"chunk_size": 4, "left_context": 8, "right_context": 4, "batch_seconds": 60.0, "block_seconds": 30.0}
    want = torch_model.transcribe(audio, **settings)
    got = onnx_model.transcribe(audio, **settings)
    assert [t.text for t in got] == [t.text for t in want]
    assert any(t.text for t in got)


def test_int8_graphs_run_and_stay_close(tiny: tuple[echostream.Model, Path, Path]) -> None:
    _, _, folder = tiny
    fp32 = _log_probs(echostream.load_model(folder, runtime="onnx"), _noise(4.0), TINY_CONTEXTS[0], 30.0)
    int8 = _log_probs(echostream.load_model(folder, runtime="onnx", precision="int8"), _noise(4.0), TINY_CONTEXTS[0], 30.0)
    assert int8.shape == fp32.shape
    assert 0.0 < np.abs(int8 - fp32).max() < 0.5  # quantised (not the same graph), not broken


def test_metadata_builds_zero_states_for_a_bare_runtime(tiny: tuple[echostream.Model, Path, Path]) -> None:
    """A runtime with only onnxruntime and the graph's metadata_props runs a step (sherpa-onnx style)."""
    _, _, folder = tiny
    info = read_export_info(folder)
    item = info.find(TINY_CONTEXTS[1])
    assert item is not None
    meta = {p.key: p.value for p in onnx.load(str(folder / item.step)).metadata_props}
    assert meta["graph"] == "step" and int(meta["chunk"]) == 4 and int(meta["right"]) == 0
    session = ort.InferenceSession(str(folder / item.step), providers=["CPUExecutionProvider"])
    feeds = {
        "feats": np.zeros((3, int(meta["feature_frames"]), int(meta["input_dim"])), np.float32),
        "end": np.full(3, int(meta["not_ended"]), np.int64),
        "position": np.zeros(3, np.int64),
    }
    for name in ("kv", "macaron", "attn", "gated"):
        shape = [int(v) for v in meta[f"state_{name}_shape"].split(",")]
        shape[1] = 3  # the batch
        feeds[name] = np.zeros(shape, np.float32)
    enc, position, *states = session.run(None, feeds)
    assert enc.shape == (3, int(meta["step_frames"]), int(meta["output_dim"]))
    assert position.tolist() == [int(meta["step_frames"])] * 3
    assert [s.shape for s in states] == [feeds[n].shape for n in ("kv", "macaron", "attn", "gated")]


def test_default_model_onnx_gives_the_same_text(exported_default: Path, default_model: echostream.Model,
                                                record_property: Callable[..., None]) -> None:
    onnx_model = echostream.load_model(exported_default, runtime="onnx")
    want = default_model.transcribe(SAMPLES)
    got = onnx_model.transcribe(SAMPLES)
    assert [t.text for t in got] == [t.text for t in want]
    assert all(t.text for t in got)
    worst = 0.0
    for path in SAMPLES:
        a = default_model.ctc_log_probs(path)
        b = onnx_model.ctc_log_probs(path)
        worst = max(worst, float(np.abs(a - b).max()))
    record_property("max_abs_diff", worst)
    assert worst <= TOLERANCE


def test_default_model_onnx_streams_like_torch(exported_default: Path, default_model: echostream.Model) -> None:
    onnx_model = echostream.load_model(exported_default, runtime="onnx")
    audio, rate = sf.read(SAMPLES[0], dtype="float32")
    text, _ = _assert_streams_alike(default_model, onnx_model, audio, rate)
    assert text


def test_cli_export_and_transcribe(tiny: tuple[echostream.Model, Path, Path], tmp_path: Path,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    _, checkpoint, _ = tiny
    out = tmp_path / "export"
    assert main(["export", "--format", "onnx", "--model", str(checkpoint), "--out", str(out),
                 "--context", "4/8/4", "--step-chunks", "3"]) == 0
    assert read_export_info(out).contexts[0].chunks_per_step == 3
    wav = tmp_path / "noise.wav"
    sf.write(wav, _noise(3.0, seed=4), 16000, subtype="PCM_16")
    texts = []
    for args in (["--model", str(checkpoint)], ["--model", str(out), "--runtime", "onnx"]):
        capsys.readouterr()
        assert main(["transcribe", *args, "--chunk-size", "4", "--left-context", "8", "--right-context", "4",
                     str(wav)]) == 0
        texts.append(capsys.readouterr().out)
    assert texts[0] == texts[1] and texts[0].strip()


# ------------------------------------------------------------------------------------ bad input


def _one_line(call: Callable[[], object], error: type[Exception] = ValueError) -> str:
    with pytest.raises(error) as info:
        call()
    assert "\n" not in str(info.value)
    return str(info.value)


def test_a_context_that_was_not_exported_is_named(tiny: tuple[echostream.Model, Path, Path]) -> None:
    _, _, folder = tiny
    model = echostream.load_model(folder, runtime="onnx")
    message = _one_line(lambda: model.transcribe(_noise(1.0), sample_rate=16000, chunk_size=8, left_context=8,
                                                 right_context=4))
    assert "8/8/4 was not exported" in message and "4/8/4, 4/8/0" in message


def test_bad_export_folders_fail_with_one_line(tiny: tuple[echostream.Model, Path, Path], tmp_path: Path) -> None:
    _, checkpoint, folder = tiny
    assert "not an ONNX export folder" in _one_line(lambda: echostream.load_model(checkpoint.parent, runtime="onnx"))
    assert "loads an export folder" in _one_line(lambda: echostream.load_model(checkpoint, runtime="onnx"))
    assert "unknown runtime" in _one_line(lambda: echostream.load_model(folder, runtime="tensorrt"))
    broken = tmp_path / "broken"
    shutil.copytree(folder, broken)
    step = read_export_info(broken).contexts[0].step
    (broken / step).write_bytes(b"not a graph")
    message = _one_line(lambda: echostream.load_model(broken, runtime="onnx"))
    assert step in message and "onnxruntime cannot load it" in message
    (broken / step).unlink()
    assert f"{step} is missing" in _one_line(lambda: echostream.load_model(broken, runtime="onnx"))
    (broken / "export.json").write_text("{\"version\": 1", encoding="utf-8")
    assert "damaged export description" in _one_line(lambda: echostream.load_model(broken, runtime="onnx"))


def test_int8_needs_int8_graphs(tiny: tuple[echostream.Model, Path, Path], tmp_path: Path) -> None:
    torch_model, _, _ = tiny
    folder = export_onnx(torch_model.bundle, tmp_path / "fp32_only", TINY_CONTEXTS[1:])
    assert "without int8 graphs" in _one_line(lambda: echostream.load_model(folder, runtime="onnx", precision="int8"))


def test_export_refuses_what_it_cannot_do(tiny: tuple[echostream.Model, Path, Path], tmp_path: Path) -> None:
    torch_model, _, folder = tiny
    bundle = torch_model.bundle
    assert "not an empty folder" in _one_line(lambda: export_onnx(bundle, folder, TINY_CONTEXTS), ExportError)
    assert "named twice" in _one_line(lambda: export_onnx(bundle, tmp_path / "a", [TINY_CONTEXTS[0]] * 2), ExportError)
    assert "at least 1" in _one_line(
        lambda: export_onnx(bundle, tmp_path / "b", TINY_CONTEXTS, chunks_per_step=0), ExportError)
    int8 = echostream.load_model(tiny[1], precision="int8")
    assert "export the fp32 model" in _one_line(lambda: export_onnx(int8.bundle, tmp_path / "c"), ExportError)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_cli_export_rejects_a_malformed_context(tiny: tuple[echostream.Model, Path, Path], tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    _, checkpoint, _ = tiny
    assert main(["export", "--model", str(checkpoint), "--out", str(tmp_path / "x"), "--context", "64/128"]) == 2
    assert "expected CHUNK/LEFT/RIGHT" in capsys.readouterr().err


def test_export_json_lists_what_a_runtime_needs(tiny: tuple[echostream.Model, Path, Path]) -> None:
    _, _, folder = tiny
    data = json.loads((folder / "export.json").read_text(encoding="utf-8"))
    first = data["contexts"][0]
    assert (first["chunk"], first["left"], first["right"], first["chunks_per_step"]) == (4, 8, 4, 2)
    assert first["whole"] and first["step_frames"] == 8 and first["feature_frames"] == 8 * 8 + 7
    assert data["contexts"][1]["whole"] is None  # right 0: the step alone, without delay
    assert data["contexts"][1]["delay"] == 0 and first["delay"] > 0
    assert set(first["states"]) == {"kv", "macaron", "attn", "gated"}


# ------------------------------------------------------------------------------------ Emformer

EMFORMER_CONTEXTS = [ChunkContext(chunk=4, left=8, right=2), ChunkContext(chunk=4, left=8, right=0)]


@pytest.fixture(scope="module", params=[(2, 0), (0, 0), (2, 5)], ids=["memory_2", "memory_0", "conv_5"])
def emformer(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[echostream.Model, Path]:
    """A random tiny Emformer model (with and without a memory bank, and a ConvEmformer) and its
    export (int8 too)."""
    from echostream.encoders.emformer import EmformerConfig

    memory, conv = request.param
    bundle = _bundle(EmformerConfig(input_dim=20, output_size=32, attention_heads=4, linear_units=64, num_blocks=2,
                                    memory_size=memory, conv_kernel=conv, dropout_rate=0.0,
                                    attention_dropout_rate=0.0), seed=7)
    folder = export_onnx(bundle, tmp_path_factory.mktemp("onnx_emformer") / "export", EMFORMER_CONTEXTS, int8=True)
    return echostream.Model(bundle), folder


@pytest.mark.parametrize("block", [30.0, 0.37])
@pytest.mark.parametrize("context", EMFORMER_CONTEXTS, ids=["right_2", "right_0"])
def test_emformer_onnx_log_probs_equal_torch(
    emformer: tuple[echostream.Model, Path], context: ChunkContext, block: float, record_property: Callable[..., None],
) -> None:
    torch_model, folder = emformer
    onnx_model = echostream.load_model(folder, runtime="onnx")
    for seconds in (7.03, 0.13):  # a last segment cut short; a stream shorter than one segment
        _assert_same_log_probs(torch_model, onnx_model, _noise(seconds), context, block, record_property)


def test_emformer_onnx_streams_like_torch(emformer: tuple[echostream.Model, Path]) -> None:
    torch_model, folder = emformer
    onnx_model = echostream.load_model(folder, runtime="onnx")
    audio = _noise(5.0, seed=2)
    _, lp_t = _assert_streams_alike(torch_model, onnx_model, audio, 16000, chunk_size=4, left_context=8,
                                    right_context=2)
    int8 = _log_probs(echostream.load_model(folder, runtime="onnx", precision="int8"), audio, EMFORMER_CONTEXTS[0], 30.0)
    assert int8.shape == lp_t.shape


def test_emformer_export_refuses_several_segments_per_step(emformer: tuple[echostream.Model, Path],
                                                          tmp_path: Path) -> None:
    torch_model, _ = emformer
    message = _one_line(lambda: export_onnx(torch_model.bundle, tmp_path / "x", EMFORMER_CONTEXTS, chunks_per_step=2),
                        ExportError)
    assert "chunks per step must be 1" in message


# ------------------------------------------------------------------------------------ Zipformer

ZIPFORMER_CONTEXTS = [ChunkContext(chunk=8, left=32, right=0), ChunkContext(chunk=4, left=16, right=0)]


@pytest.fixture(scope="module")
def zipformer(tmp_path_factory: pytest.TempPathFactory) -> tuple[echostream.Model, Path]:
    """A random tiny Zipformer model and its export (int8 too)."""
    from echostream.encoders.zipformer import ZipformerConfig

    bundle = _bundle(ZipformerConfig(input_dim=20, downsampling_factors=(1, 2, 4, 2), encoder_dims=(16, 24, 32, 24),
                                     num_layers=(1, 1, 1, 1), attention_heads=(2, 2, 2, 2),
                                     feedforward_dims=(32, 48, 64, 48), cnn_module_kernels=(7, 5, 3, 5),
                                     query_head_dim=8, value_head_dim=4, dropout_rate=0.0), seed=9)
    folder = export_onnx(bundle, tmp_path_factory.mktemp("onnx_zipformer") / "export", ZIPFORMER_CONTEXTS, int8=True)
    return echostream.Model(bundle), folder


def test_zipformer_default_export_is_chunk_causal(zipformer: tuple[echostream.Model, Path], tmp_path: Path) -> None:
    """The default contexts of a chunk-causal encoder drop the long-form right context, and the
    default transcription (right context 0 for it) runs on the export."""
    torch_model, _ = zipformer
    folder = export_onnx(torch_model.bundle, tmp_path / "defaults")
    assert [c.context.as_tuple() for c in read_export_info(folder).contexts] == [(64, 128, 0), (8, 32, 0)]
    audio = (_noise(3.0, seed=8), 16000)
    assert echostream.load_model(folder, runtime="onnx").transcribe(audio)[0].text == torch_model.transcribe(audio)[0].text


@pytest.mark.parametrize("block", [30.0, 0.37])
@pytest.mark.parametrize("context", ZIPFORMER_CONTEXTS, ids=["c8", "c4"])
def test_zipformer_onnx_log_probs_equal_torch(
    zipformer: tuple[echostream.Model, Path], context: ChunkContext, block: float, record_property: Callable[..., None],
) -> None:
    torch_model, folder = zipformer
    onnx_model = echostream.load_model(folder, runtime="onnx")
    for seconds in (7.03, 7.01, 0.13):  # last chunks cut short at odd and even 50 Hz frames; under one chunk
        _assert_same_log_probs(torch_model, onnx_model, _noise(seconds), context, block, record_property)
    assert onnx_model.bundle.model.encoder.causal  # the default right context is then 0


def test_zipformer_onnx_streams_like_torch(zipformer: tuple[echostream.Model, Path]) -> None:
    torch_model, folder = zipformer
    onnx_model = echostream.load_model(folder, runtime="onnx")
    audio = _noise(5.0, seed=5)
    _assert_streams_alike(torch_model, onnx_model, audio, 16000, chunk_size=8, left_context=32, right_context=0)
