"""Tests for echostream.models.checkpoint (released ChunkFormer folders and our own format) and
echostream.config.from_dict: what loads, what loads identically, and a clear one-line
CheckpointError for everything that does not.
"""

from __future__ import annotations

import copy
import datetime
import logging
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import echostream
from echostream.audio import load_audio
from echostream.config import ConfigError, from_dict, to_dict
from echostream.encoders.base import ChunkContext
from echostream.encoders.chunkformer import ChunkFormerConfig
from echostream.frontend import FbankConfig, compute_fbank
from echostream.models.asr import ASRModelConfig
from echostream.models.checkpoint import (
    CheckpointError,
    ModelBundle,
    load_checkpoint,
    load_released_folder,
    save_checkpoint,
)
from model_folders import checkpoint_error, copy_model, edit_config

CONTEXT = ChunkContext(chunk=4, left=8, right=4)
WEIGHTS = "pytorch_model.bin"








@pytest.fixture(scope="module")
def released_state(fixture_dir: Path) -> dict[str, torch.Tensor]:
    """The fixture's state dict; tests copy it before changing it."""
    return torch.load(fixture_dir / "model" / WEIGHTS, map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def features(fixture_dir: Path) -> torch.Tensor:
    """(1, T, 80) features of a short fixture utterance."""
    samples = load_audio(fixture_dir / "audio" / "utt2.wav")
    return torch.from_numpy(compute_fbank(samples, FbankConfig()))[None]


def _log_probs(bundle: ModelBundle, feats: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        log_probs, _ = bundle.model(feats, torch.tensor([feats.shape[1]]), CONTEXT)
    return log_probs


@pytest.fixture(scope="module")
def reference_log_probs(fixture_model: echostream.Model, features: torch.Tensor) -> torch.Tensor:
    return _log_probs(fixture_model.bundle, features)


# --------------------------------------------------------------------------- released folders


def test_loads_the_fixture_folder(fixture_dir: Path) -> None:
    bundle = load_released_folder(fixture_dir / "model")
    cfg = bundle.model.cfg
    assert (cfg.encoder.num_blocks, cfg.encoder.output_size, cfg.encoder.attention_heads) == (3, 128, 4)
    assert (cfg.encoder.linear_units, cfg.encoder.cnn_module_kernel, cfg.encoder.input_dim) == (512, 15, 80)
    assert cfg.vocab_size == len(bundle.vocab) == 64 and cfg.blank_id == 0
    assert bundle.vocab.token(0) == "<blank>" and bundle.vocab.token(63) == "<sos/eos>"
    assert bundle.fbank == FbankConfig(num_mel_bins=80, frame_length_ms=25.0, frame_shift_ms=10.0)
    assert not bundle.model.training


def test_old_key_names_load_identically(
    fixture_dir: Path, tmp_path: Path, features: torch.Tensor, reference_log_probs: torch.Tensor
) -> None:
    folder = copy_model(fixture_dir, tmp_path)

    def to_old_names(conf: dict[str, Any]) -> None:
        enc = conf["encoder_conf"]
        enc["input_layer"] = "depthwise"
        enc["pos_enc_layer_type"] = "stream_rel_pos"
        enc["selfattention_layer_type"] = "stream_rel_selfattn"
        enc["use_dynamic_conv"] = enc.pop("dynamic_conv")

    edit_config(folder, to_old_names)
    text = (folder / "config.yaml").read_text(encoding="utf-8")
    assert "use_dynamic_conv" in text and "stream_rel_selfattn" in text
    old = load_released_folder(folder)
    assert old.model.cfg == load_released_folder(fixture_dir / "model").model.cfg
    assert torch.equal(_log_probs(old, features), reference_log_probs)


@pytest.mark.parametrize(
    "key, value",
    [
        ("causal", True),
        ("dynamic_conv", False),
        ("use_dynamic_conv", False),
        ("normalize_before", False),
        ("input_layer", "conv2d"),
        ("selfattention_layer_type", "rel_selfattn"),
    ],
)
def test_unsupported_encoder_values_name_the_key(
    fixture_dir: Path, tmp_path: Path, key: str, value: object
) -> None:
    folder = copy_model(fixture_dir, tmp_path)

    def edit(conf: dict[str, Any]) -> None:
        conf["encoder_conf"].pop("dynamic_conv" if key == "use_dynamic_conv" else key, None)
        conf["encoder_conf"][key] = value

    edit_config(folder, edit)
    message = checkpoint_error(lambda: load_released_folder(folder))
    canonical = "dynamic_conv" if key == "use_dynamic_conv" else key
    assert f"encoder_conf.{canonical}" in message
    assert "not supported" in message and "config.yaml" in message


def test_unknown_encoder_key_is_named(fixture_dir: Path, tmp_path: Path) -> None:
    folder = copy_model(fixture_dir, tmp_path)
    edit_config(folder, lambda conf: conf["encoder_conf"].update(fancy_attention=True))
    message = checkpoint_error(lambda: load_released_folder(folder))
    assert "encoder_conf.fancy_attention" in message and "unknown key" in message


def test_training_only_keys_are_accepted(fixture_dir: Path, tmp_path: Path) -> None:
    folder = copy_model(fixture_dir, tmp_path)
    edit_config(
        folder,
        lambda conf: conf["encoder_conf"].update(use_dynamic_chunk=True, static_chunk_size=-1),
    )
    loaded = load_released_folder(folder)
    assert loaded.model.cfg == load_released_folder(fixture_dir / "model").model.cfg  # nothing changed


def _save_state(folder: Path, state: dict[str, torch.Tensor]) -> None:
    torch.save(state, folder / WEIGHTS)


def test_missing_tensor_is_named(
    fixture_dir: Path, tmp_path: Path, released_state: dict[str, torch.Tensor]
) -> None:
    folder = copy_model(fixture_dir, tmp_path)
    state = dict(released_state)
    del state["encoder.encoders.1.self_attn.linear_q.weight"]
    _save_state(folder, state)
    message = checkpoint_error(lambda: load_released_folder(folder))
    assert "missing tensor" in message
    # named in echostream's naming (encoder.layers.1...); the layer index and tensor must show
    assert re.search(r"\.1\.self_attn\.linear_q\.weight", message), message


def test_misshapen_tensor_names_it_and_both_shapes(
    fixture_dir: Path, tmp_path: Path, released_state: dict[str, torch.Tensor]
) -> None:
    folder = copy_model(fixture_dir, tmp_path)
    state = dict(released_state)
    name = "encoder.encoders.0.feed_forward.w_1.weight"
    assert state[name].shape == (512, 128)
    state[name] = torch.zeros(256, 128)
    _save_state(folder, state)
    message = checkpoint_error(lambda: load_released_folder(folder))
    assert "0.feed_forward.w_1.weight" in message
    assert "(256, 128)" in message and "(512, 128)" in message


@pytest.mark.parametrize(
    "extra",
    ["encoder.encoders.0.self_attn.linear_extra.weight", "encoder.encoders.3.norm_ff.weight", "lm.weight"],
)
def test_unexpected_tensor_is_named(
    fixture_dir: Path, tmp_path: Path, released_state: dict[str, torch.Tensor], extra: str
) -> None:
    folder = copy_model(fixture_dir, tmp_path)
    _save_state(folder, {**released_state, extra: torch.zeros(4)})
    message = checkpoint_error(lambda: load_released_folder(folder))
    assert "unexpected tensor" in message and extra in message


def test_decoder_tensors_load_or_are_skipped_and_logged_without_a_decoder_config(
    fixture_dir: Path,
    tmp_path: Path,
    released_state: dict[str, torch.Tensor],
    caplog: pytest.LogCaptureFixture,
) -> None:
    decoder = [name for name in released_state if name.startswith("decoder.")]
    assert decoder, "the fixture should hold an attention decoder"
    # the fixture's config names its decoder: it loads (tests/heads check every tensor)
    bundle = load_released_folder(fixture_dir / "model")
    assert any(name.startswith("decoder.") for name in bundle.model.state_dict())
    # a config without decoder/decoder_conf describes a CTC-only model: decoder.* are skipped
    folder = copy_model(fixture_dir, tmp_path)
    edit_config(folder, lambda conf: [conf.pop(k) for k in ("decoder", "decoder_conf")])
    with caplog.at_level(logging.INFO, logger="echostream.models.checkpoint"):
        bundle = load_released_folder(folder)
    assert not any(name.startswith("decoder") for name in bundle.model.state_dict())
    messages = [r.getMessage() for r in caplog.records]
    assert any(f"skipped {len(decoder)} tensors" in m and "decoder" in m for m in messages), messages


def test_cmvn_from_state_dict_or_global_cmvn_file(
    fixture_dir: Path,
    tmp_path: Path,
    released_state: dict[str, torch.Tensor],
    features: torch.Tensor,
    reference_log_probs: torch.Tensor,
    record_property: Callable[[str, object], None],
) -> None:
    folder = copy_model(fixture_dir, tmp_path)
    state = {k: v for k, v in released_state.items() if not k.startswith("encoder.global_cmvn.")}
    assert len(state) == len(released_state) - 2
    _save_state(folder, state)
    from_file = load_released_folder(folder)
    cmvn = from_file.model.cmvn
    torch.testing.assert_close(cmvn.mean, released_state["encoder.global_cmvn.mean"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(cmvn.istd, released_state["encoder.global_cmvn.istd"], atol=1e-5, rtol=1e-5)
    ours = _log_probs(from_file, features)
    diff = float((ours - reference_log_probs).abs().max())
    record_property("max_abs_diff", diff)
    assert diff <= 1e-5

    (folder / "global_cmvn").unlink()
    assert "no CMVN" in checkpoint_error(lambda: load_released_folder(folder))


def test_cmvn_null_means_no_normalisation(
    fixture_dir: Path, tmp_path: Path, released_state: dict[str, torch.Tensor], features: torch.Tensor,
    fixture_model: echostream.Model,
) -> None:
    """A WeNet config with ``cmvn: null`` (no statistics file, no CMVN tensors) loads and feeds
    the features unnormalised: as the fixture model with its CMVN set to the identity by hand."""
    folder = copy_model(fixture_dir, tmp_path)
    _save_state(folder, {k: v for k, v in released_state.items() if not k.startswith("encoder.global_cmvn.")})
    (folder / "global_cmvn").unlink()
    edit_config(folder, lambda conf: [conf.update(cmvn=None), conf.pop("cmvn_conf")])
    plain = load_released_folder(folder)
    by_hand = copy.deepcopy(fixture_model.bundle)
    with torch.no_grad():
        by_hand.model.cmvn.mean.zero_()
        by_hand.model.cmvn.istd.fill_(1.0)
    torch.testing.assert_close(_log_probs(plain, features), _log_probs(by_hand, features), atol=1e-6, rtol=0)
    assert not torch.allclose(_log_probs(plain, features), _log_probs(fixture_model.bundle, features), atol=1e-3)
    # a config naming a statistics file that is not there is an error naming the file
    edit_config(folder, lambda conf: conf.update(cmvn="global_cmvn", cmvn_conf={"cmvn_file": "exp/stats.json"}))
    assert "names stats.json, which is not in the folder" in checkpoint_error(lambda: load_released_folder(folder))


@pytest.mark.parametrize("content", [b"hello, not a checkpoint\n", b"PK\x03\x04" + bytes(200), "truncated", "object"])
def test_a_model_pt_that_is_not_a_checkpoint_gets_our_own_line(tmp_path: Path, content: object) -> None:
    path = tmp_path / "model.pt"
    if content == "truncated":
        torch.save({"x": torch.zeros(1000)}, path)
        path.write_bytes(path.read_bytes()[:2000])
    elif content == "object":
        torch.save({"x": datetime.date(2026, 1, 1)}, path)  # loading it would need unpickling code
    else:
        assert isinstance(content, bytes)
        path.write_bytes(content)
    message = checkpoint_error(lambda: load_checkpoint(path))
    assert message.startswith(f"{path}: ")
    assert "weights_only" not in message and "torch.load" not in message
    assert not re.search(r"\(\d{4,}\)", message), "no unexplained numbers"


def test_state_dict_wrapped_in_model_key_loads(
    fixture_dir: Path,
    tmp_path: Path,
    released_state: dict[str, torch.Tensor],
    features: torch.Tensor,
    reference_log_probs: torch.Tensor,
) -> None:
    folder = copy_model(fixture_dir, tmp_path)
    _save_state(folder, {"model": released_state, "epoch": 3})  # type: ignore[dict-item]
    assert torch.equal(_log_probs(load_released_folder(folder), features), reference_log_probs)


@pytest.mark.parametrize("content", [b"", os.urandom(4096), b"PK\x03\x04 not really a zip"], ids=["empty", "random", "fake-zip"])
def test_unreadable_weights_file(fixture_dir: Path, tmp_path: Path, content: bytes) -> None:
    folder = copy_model(fixture_dir, tmp_path)
    (folder / WEIGHTS).write_bytes(content)
    message = checkpoint_error(lambda: load_released_folder(folder))
    assert WEIGHTS in message


def test_weights_that_are_not_a_dict(fixture_dir: Path, tmp_path: Path) -> None:
    folder = copy_model(fixture_dir, tmp_path)
    torch.save([torch.zeros(2)], folder / WEIGHTS)
    assert "expected a state dict" in checkpoint_error(lambda: load_released_folder(folder))


@pytest.mark.parametrize("missing", ["vocab.txt", WEIGHTS, "config.yaml"])
def test_missing_file_is_named(fixture_dir: Path, tmp_path: Path, missing: str) -> None:
    folder = copy_model(fixture_dir, tmp_path)
    (folder / missing).unlink()
    assert missing in checkpoint_error(lambda: load_released_folder(folder))


@pytest.mark.parametrize(
    "text, words",
    [
        ("model: asr_model\nencoder_conf: [unclosed\n", ["not valid YAML"]),
        ("- just\n- a list\n", ["mapping"]),
        ("", ["mapping"]),
    ],
    ids=["invalid-yaml", "list", "empty"],
)
def test_malformed_config(fixture_dir: Path, tmp_path: Path, text: str, words: list[str]) -> None:
    folder = copy_model(fixture_dir, tmp_path)
    (folder / "config.yaml").write_text(text, encoding="utf-8")
    message = checkpoint_error(lambda: load_released_folder(folder))
    assert "config.yaml" in message
    for word in words:
        assert word in message


@pytest.mark.parametrize(
    "edit, words",
    [
        (lambda conf: conf.pop("output_dim"), ["output_dim", "missing"]),
        (lambda conf: conf.pop("encoder_conf"), ["encoder_conf", "missing"]),
        (lambda conf: conf.update(encoder="conformer"), ["conformer", "not supported"]),
        (lambda conf: conf["encoder_conf"].update(output_size="big"), ["encoder_conf.output_size", "int"]),
        (lambda conf: conf["encoder_conf"].update(attention_heads=3), ["divisible"]),
        (lambda conf: conf.update(output_dim=1), ["vocab"]),
    ],
    ids=["no-output_dim", "no-encoder_conf", "other-encoder", "wrong-type", "bad-heads", "output_dim-1"],
)
def test_invalid_config_values(
    fixture_dir: Path, tmp_path: Path, edit: Callable[[dict[str, Any]], None], words: list[str]
) -> None:
    folder = copy_model(fixture_dir, tmp_path)
    edit_config(folder, edit)
    message = checkpoint_error(lambda: load_released_folder(folder))
    for word in words:
        assert word in message


@pytest.mark.parametrize(
    "edit, key",
    [
        (lambda conf: conf.update(ctc_conf=[0]), "ctc_conf"),
        (lambda conf: conf.update(fbank_conf="80 bins"), "fbank_conf"),
        (lambda conf: conf["encoder_conf"].update(activation_type="mish"), "activation_type"),
        (lambda conf: conf["encoder_conf"].update(cnn_module_norm="group_norm"), "cnn_module_norm"),
        (lambda conf: conf.update(output_dim="64"), "output_dim"),
        (lambda conf: conf["fbank_conf"].update(frame_shift="ten"), "frame_shift"),
    ],
    ids=["ctc_conf-list", "fbank_conf-str", "activation", "conv-norm", "output_dim-str", "frame_shift-str"],
)
def test_other_bad_config_values_name_the_key(
    fixture_dir: Path, tmp_path: Path, edit: Callable[[dict[str, Any]], None], key: str
) -> None:
    folder = copy_model(fixture_dir, tmp_path)
    edit_config(folder, edit)
    assert key in checkpoint_error(lambda: load_released_folder(folder))


def test_vocab_size_mismatch(fixture_dir: Path, tmp_path: Path) -> None:
    folder = copy_model(fixture_dir, tmp_path)
    lines = (folder / "vocab.txt").read_text(encoding="utf-8").splitlines()
    (folder / "vocab.txt").write_text("\n".join(lines[:-1]) + "\n", encoding="utf-8")
    message = checkpoint_error(lambda: load_released_folder(folder))
    assert "63" in message and "64" in message and "vocab.txt" in message


def test_malformed_vocab(fixture_dir: Path, tmp_path: Path) -> None:
    folder = copy_model(fixture_dir, tmp_path)
    (folder / "vocab.txt").write_text("<blank> 0\n<unk>\n", encoding="utf-8")
    assert "vocab.txt:2" in checkpoint_error(lambda: load_released_folder(folder))


def test_a_failed_load_leaves_loaded_models_alone(
    fixture_dir: Path,
    tmp_path: Path,
    fixture_model: echostream.Model,
    features: torch.Tensor,
    reference_log_probs: torch.Tensor,
) -> None:
    folder = copy_model(fixture_dir, tmp_path)
    (folder / WEIGHTS).write_bytes(b"")
    checkpoint_error(lambda: echostream.load_model(folder))
    assert torch.equal(_log_probs(fixture_model.bundle, features), reference_log_probs)


# --------------------------------------------------------------------------- our own format


def test_save_and_load_round_trip(
    fixture_model: echostream.Model,
    tmp_path: Path,
    features: torch.Tensor,
    reference_log_probs: torch.Tensor,
) -> None:
    path = tmp_path / "out" / "model.pt"
    save_checkpoint(path, fixture_model.bundle, step=12)
    assert [p.name for p in path.parent.iterdir()] == ["model.pt"]  # no temporary file left
    loaded = load_checkpoint(path)
    assert loaded.model.cfg == fixture_model.bundle.model.cfg
    assert loaded.vocab == fixture_model.bundle.vocab
    assert loaded.fbank == fixture_model.bundle.fbank
    assert not loaded.model.training
    assert torch.equal(_log_probs(loaded, features), reference_log_probs)


def test_load_model_reads_our_file_and_folder(
    fixture_model: echostream.Model, fixture_dir: Path, tmp_path: Path
) -> None:
    path = tmp_path / "model.pt"
    save_checkpoint(path, fixture_model.bundle)
    audio = fixture_dir / "audio" / "utt2.wav"
    kwargs = {"chunk_size": 4, "left_context": 8, "right_context": 4}
    expected = fixture_model.ctc_log_probs(audio, **kwargs)
    for source in (path, tmp_path):  # the file, and a folder holding model.pt
        model = echostream.load_model(source)
        np.testing.assert_array_equal(model.ctc_log_probs(audio, **kwargs), expected)


def test_tiny_round_trip_keeps_cmvn_and_config(
    make_tiny_bundle: Callable[..., ModelBundle], tmp_path: Path
) -> None:
    bundle = make_tiny_bundle(seed=3, use_cnn_module=False, macaron_style=False)
    save_checkpoint(tmp_path / "tiny.pt", bundle)
    loaded = load_checkpoint(tmp_path / "tiny.pt")
    assert loaded.model.cfg == bundle.model.cfg and loaded.vocab == bundle.vocab
    for name, tensor in bundle.model.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[name], tensor), name
    torch.manual_seed(0)
    x = torch.randn(2, 80, 20)
    x_lens = torch.tensor([80, 33])
    with torch.inference_mode():
        assert torch.equal(loaded.model(x, x_lens, CONTEXT)[0], bundle.model(x, x_lens, CONTEXT)[0])


def test_fp16_weights_halve_the_file_and_load_as_fp32(
    fixture_model: echostream.Model,
    tmp_path: Path,
    features: torch.Tensor,
    reference_log_probs: torch.Tensor,
) -> None:
    bundle = fixture_model.bundle
    save_checkpoint(tmp_path / "fp32.pt", bundle)
    save_checkpoint(tmp_path / "fp16.pt", bundle, weights="fp16")
    ratio = (tmp_path / "fp16.pt").stat().st_size / (tmp_path / "fp32.pt").stat().st_size
    assert 0.45 < ratio < 0.6
    stored = torch.load(tmp_path / "fp16.pt", weights_only=True)["model"]
    assert stored["cmvn.mean"].dtype == torch.float32  # buffers are kept as they are
    loaded = load_checkpoint(tmp_path / "fp16.pt")
    for name, tensor in bundle.model.state_dict().items():
        got = loaded.model.state_dict()[name]
        assert got.dtype == tensor.dtype, name
        expected = tensor.half().to(tensor.dtype) if stored[name].dtype == torch.float16 else tensor
        assert torch.equal(got, expected), name
    probs = _log_probs(loaded, features).exp()
    assert float((probs - reference_log_probs.exp()).abs().max()) < 0.02
    with pytest.raises(CheckpointError, match="weights must be one of fp32, fp16"):
        save_checkpoint(tmp_path / "x.pt", bundle, weights="int4")


def _as_version_1(path: Path) -> None:
    """Rewrite our checkpoint at ``path`` as version 1 wrote it: no encoder type, CMVN inside the
    encoder."""
    payload = torch.load(path, weights_only=True)
    encoder = {k: v for k, v in payload["config"]["encoder"].items() if k != "type"}
    payload["version"] = 1
    payload["config"] = {**payload["config"], "encoder": encoder}
    payload["model"] = {("encoder.global_cmvn." + k.removeprefix("cmvn.")) if k.startswith("cmvn.") else k: v
                        for k, v in payload["model"].items()}
    torch.save(payload, path)


def test_version_1_checkpoints_load_as_chunkformer(
    make_tiny_bundle: Callable[..., ModelBundle], tmp_path: Path
) -> None:
    bundle = make_tiny_bundle(seed=4)
    path = tmp_path / "v1.pt"
    save_checkpoint(path, bundle)
    _as_version_1(path)
    assert any(k.startswith("encoder.global_cmvn.") for k in torch.load(path, weights_only=True)["model"])
    loaded = load_checkpoint(path)
    assert loaded.model.cfg == bundle.model.cfg and loaded.model.cfg.encoder.type == "chunkformer"
    for name, tensor in bundle.model.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[name], tensor), name


@pytest.mark.parametrize(
    ("encoder_type", "words"),
    [(None, "'type' is missing (one of: chunkformer"), ("wav2vec", "encoder.type 'wav2vec' is not one of")],
)
def test_version_2_needs_a_known_encoder_type(
    make_tiny_bundle: Callable[..., ModelBundle], tmp_path: Path, encoder_type: str | None, words: str
) -> None:
    """A config of another encoder can never load silently as a ChunkFormer."""
    path = tmp_path / "model.pt"
    save_checkpoint(path, make_tiny_bundle())
    payload = torch.load(path, weights_only=True)
    encoder = {k: v for k, v in payload["config"]["encoder"].items() if k != "type"}
    if encoder_type is not None:
        encoder["type"] = encoder_type
    payload["config"]["encoder"] = encoder
    torch.save(payload, path)
    message = checkpoint_error(lambda: load_checkpoint(path))
    assert words in message and "model.pt" in message and "\n" not in message, message


def test_truncated_checkpoint(
    make_tiny_bundle: Callable[..., ModelBundle], tmp_path: Path
) -> None:
    path = tmp_path / "model.pt"
    save_checkpoint(path, make_tiny_bundle())
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    assert "model.pt" in checkpoint_error(lambda: load_checkpoint(path))
    assert "model.pt" in checkpoint_error(lambda: echostream.load_model(path))


def test_released_weights_are_not_our_checkpoint(fixture_dir: Path) -> None:
    message = checkpoint_error(lambda: load_checkpoint(fixture_dir / "model" / WEIGHTS))
    assert "not an echostream checkpoint" in message and "'version'" in message


@pytest.mark.parametrize(
    "change, words",
    [
        (lambda p: p.update(version=99), ["version 99"]),
        (lambda p: p["config"]["encoder"].update(flash=True), ["config.encoder.flash", "unknown key"]),
        (lambda p: p["config"].pop("vocab_size"), ["config.vocab_size", "missing key"]),
        (lambda p: p["fbank"].update(num_mel_bins="80"), ["fbank.num_mel_bins", "int"]),
        (lambda p: p.update(vocab=p["vocab"][:-1]), ["vocabulary has 7 tokens"]),
        (lambda p: p["model"].pop("ctc.ctc_lo.bias"), ["missing tensor", "ctc.ctc_lo.bias"]),
    ],
    ids=["version", "unknown-key", "missing-key", "wrong-type", "vocab", "missing-tensor"],
)
def test_invalid_own_checkpoint(
    make_tiny_bundle: Callable[..., ModelBundle],
    tmp_path: Path,
    change: Callable[[dict[str, Any]], None],
    words: list[str],
) -> None:
    path = tmp_path / "model.pt"
    save_checkpoint(path, make_tiny_bundle())
    payload = torch.load(path, weights_only=True)
    change(payload)
    torch.save(payload, path)
    message = checkpoint_error(lambda: load_checkpoint(path))
    for word in words:
        assert word in message


def test_load_model_of_nothing(tmp_path: Path) -> None:
    assert "not a model folder" in checkpoint_error(lambda: echostream.load_model(tmp_path))
    assert "no such model" in checkpoint_error(lambda: echostream.load_model(tmp_path / "absent.pt"))


# --------------------------------------------------------------------------- config.from_dict


def _asr_dict() -> dict[str, Any]:
    return to_dict(ASRModelConfig(encoder=ChunkFormerConfig(num_blocks=2), vocab_size=10))


def test_from_dict_round_trip() -> None:
    cfg = ASRModelConfig(encoder=ChunkFormerConfig(num_blocks=2, macaron_style=False), vocab_size=10)
    assert from_dict(ASRModelConfig, to_dict(cfg)) == cfg


def test_from_dict_int_for_float_is_accepted() -> None:
    data = _asr_dict()
    data["encoder"]["dropout_rate"] = 0
    cfg = from_dict(ASRModelConfig, data)
    assert isinstance(cfg.encoder.dropout_rate, float)


@pytest.mark.parametrize(
    "change, pattern",
    [
        (lambda d: d.update(beam=4), r"^config\.beam: unknown key"),
        (lambda d: d["encoder"].update(heads=4), r"^config\.encoder\.heads: unknown key"),
        (lambda d: d.pop("vocab_size"), r"^config\.vocab_size: missing key$"),
        (lambda d: d.update(vocab_size="10"), r"^config\.vocab_size: expected int"),
        (lambda d: d.update(vocab_size=10.0), r"^config\.vocab_size: expected int"),
        (lambda d: d["encoder"].update(num_blocks=True), r"^config\.encoder\.num_blocks: expected int"),
        (lambda d: d["encoder"].update(macaron_style=1), r"^config\.encoder\.macaron_style: expected bool"),
        (lambda d: d["encoder"].update(dropout_rate="0.1"), r"^config\.encoder\.dropout_rate: expected float"),
        (lambda d: d.update(encoder=[1, 2]), r"^config\.encoder: expected a mapping"),
        (lambda d: d.update(vocab_size=1), r"^config: vocab_size must be at least 2"),
    ],
    ids=[
        "unknown", "unknown-nested", "missing", "str-for-int", "float-for-int", "bool-for-int",
        "int-for-bool", "str-for-float", "list-for-dataclass", "invalid-value",
    ],
)
def test_from_dict_is_strict(change: Callable[[dict[str, Any]], None], pattern: str) -> None:
    data = _asr_dict()
    change(data)
    with pytest.raises(ConfigError, match=pattern):
        from_dict(ASRModelConfig, data)


def test_from_dict_needs_a_mapping() -> None:
    with pytest.raises(ConfigError, match="expected a mapping"):
        from_dict(ASRModelConfig, ["not", "a", "dict"])  # type: ignore[arg-type]


# ------------------------------------------------------------------------ Hugging Face ids


def test_repo_id_is_downloaded_with_huggingface_hub(
    fixture_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import huggingface_hub

    asked: list[str] = []

    def fake_snapshot_download(repo_id: str, **_: Any) -> str:
        asked.append(repo_id)
        return str(fixture_dir / "model")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    model = echostream.load_model("someone/chunkformer-tiny")
    assert asked == ["someone/chunkformer-tiny"]
    local = echostream.load_model(fixture_dir / "model")
    wav = fixture_dir / "audio" / "utt0.wav"
    assert model.transcribe(wav)[0].text == local.transcribe(wav)[0].text


def test_hub_failure_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub

    def offline(repo_id: str, **_: Any) -> str:
        raise OSError("Network is unreachable\nsecond line")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    with pytest.raises(CheckpointError) as info:
        echostream.load_model("someone/chunkformer-tiny")
    message = str(info.value)
    assert "\n" not in message
    assert "someone/chunkformer-tiny" in message and "Network is unreachable" in message
