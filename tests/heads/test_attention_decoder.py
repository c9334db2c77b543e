"""The attention decoder: released weights load with every tensor accounted for, its scores match
the reference implementation, and our checkpoints round-trip it."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from echostream.audio import load_audio
from echostream.config import ConfigError, from_dict, to_dict
from echostream.encoders.base import ChunkContext
from echostream.frontend import FbankConfig, compute_fbank
from echostream.heads.attention_decoder import (
    IGNORE_ID,
    AttentionDecoderConfig,
    add_sos_eos,
    reverse_tokens,
)
from echostream.models.asr import ASRModel, ASRModelConfig
from echostream.models.checkpoint import (
    ModelBundle,
    load_checkpoint,
    load_released_folder,
    save_checkpoint,
)
from echostream.text.vocab import Vocabulary
from model_folders import checkpoint_error, copy_model, edit_config

WEIGHTS = "pytorch_model.bin"
PE = ("decoder.left_decoder.embed.1.pe", "decoder.right_decoder.embed.1.pe")


@pytest.fixture(scope="module")
def released_state(fixture_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(fixture_dir / "model" / WEIGHTS, map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def fixture_bundle(fixture_dir: Path) -> ModelBundle:
    return load_released_folder(fixture_dir / "model")








def _ours(released: str) -> str:
    """Released WeNet decoder tensor name -> echostream's (written out independently here)."""
    name = released.replace("decoder.left_decoder.", "decoder.l2r.")
    name = name.replace("decoder.right_decoder.", "decoder.r2l.")
    return name.replace(".decoders.", ".layers.").replace(".embed.0.", ".embed.")


# --------------------------------------------------------------------------- released weights


def test_fixture_decoder_loads_with_every_tensor_accounted_for(
    fixture_dir: Path, released_state: dict[str, torch.Tensor], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="echostream.models.checkpoint"):
        bundle = load_released_folder(fixture_dir / "model")
    cfg = bundle.model.cfg
    assert cfg.decoder == AttentionDecoderConfig(
        bidirectional=True, attention_heads=4, linear_units=512, num_blocks=1, r_num_blocks=1,
        dropout_rate=0.1, positional_dropout_rate=0.1, self_attention_dropout_rate=0.1,
        src_attention_dropout_rate=0.1,
    )
    assert (cfg.loss.ctc_weight, cfg.loss.reverse_weight, cfg.loss.lsm_weight) == (0.3, 0.3, 0.1)
    assert cfg.loss.length_normalized_loss is False

    released = {k: v for k, v in released_state.items() if k.startswith("decoder.") and k not in PE}
    ours = {k: v for k, v in bundle.model.state_dict().items() if k.startswith("decoder.")}
    assert len(released) == len(ours) == 62
    assert sorted(_ours(k) for k in released) == sorted(ours)
    for name, tensor in released.items():
        assert torch.equal(ours[_ours(name)], tensor), name
    messages = [r.getMessage() for r in caplog.records]
    assert any("skipped 2 tensors: decoder positional table" in m for m in messages), messages


@pytest.mark.parametrize("name", ["decoder.left_decoder.decoders.0.src_attn.linear_k.bias",
                                  "decoder.right_decoder.output_layer.weight"])
def test_missing_decoder_tensor_is_named(
    fixture_dir: Path, tmp_path: Path, released_state: dict[str, torch.Tensor], name: str
) -> None:
    folder = copy_model(fixture_dir, tmp_path)
    torch.save({k: v for k, v in released_state.items() if k != name}, folder / WEIGHTS)
    message = checkpoint_error(lambda: load_released_folder(folder))
    assert "missing tensor" in message and repr(name) in message


def test_misshapen_decoder_tensor_names_it_and_both_shapes(
    fixture_dir: Path, tmp_path: Path, released_state: dict[str, torch.Tensor]
) -> None:
    folder = copy_model(fixture_dir, tmp_path)
    name = "decoder.right_decoder.decoders.0.feed_forward.w_1.weight"
    torch.save({**released_state, name: torch.zeros(256, 128)}, folder / WEIGHTS)
    message = checkpoint_error(lambda: load_released_folder(folder))
    assert name in message and "(256, 128)" in message and "(512, 128)" in message


def test_decoder_tensors_beyond_the_config_are_unexpected(
    fixture_dir: Path, tmp_path: Path, released_state: dict[str, torch.Tensor]
) -> None:
    folder = copy_model(fixture_dir, tmp_path)
    edit_config(folder, lambda conf: conf["decoder_conf"].update(r_num_blocks=0))
    message = checkpoint_error(lambda: load_released_folder(folder))
    assert "unexpected tensor" in message and "decoder.right_decoder.decoders.0." in message


def test_wrong_positional_table_is_an_error(
    fixture_dir: Path, tmp_path: Path, released_state: dict[str, torch.Tensor]
) -> None:
    folder = copy_model(fixture_dir, tmp_path)
    torch.save({**released_state, PE[0]: released_state[PE[0]] * 2}, folder / WEIGHTS)
    message = checkpoint_error(lambda: load_released_folder(folder))
    assert PE[0] in message and "sinusoidal" in message


def test_transformer_decoder_loads(
    fixture_dir: Path, tmp_path: Path, released_state: dict[str, torch.Tensor],
    fixture_bundle: ModelBundle,
) -> None:
    """``decoder: transformer`` names its tensors ``decoder.decoders.N`` / ``decoder.embed.0``."""
    folder = copy_model(fixture_dir, tmp_path)
    state = {k: v for k, v in released_state.items() if not k.startswith("decoder.")}
    left = "decoder.left_decoder."
    state.update({"decoder." + k[len(left):]: v for k, v in released_state.items() if k.startswith(left)})
    torch.save(state, folder / WEIGHTS)

    def edit(conf: dict[str, Any]) -> None:
        conf["decoder"] = "transformer"
        conf["model_conf"]["reverse_weight"] = 0.0

    edit_config(folder, edit)
    bundle = load_released_folder(folder)
    decoder = bundle.model.decoder
    assert decoder is not None and decoder.r2l is None and bundle.model.cfg.decoder is not None
    assert not bundle.model.cfg.decoder.bidirectional and bundle.model.cfg.decoder.r_num_blocks == 0
    expected = fixture_bundle.model.decoder
    assert expected is not None
    for name, tensor in expected.l2r.state_dict().items():
        assert torch.equal(decoder.l2r.state_dict()[name], tensor), name

    # bidirectional names under a transformer config are not silently dropped
    torch.save(released_state, folder / WEIGHTS)
    message = checkpoint_error(lambda: load_released_folder(folder))
    assert "unexpected tensor" in message and "decoder.left_decoder." in message


def test_reverse_weight_needs_a_right_to_left_decoder(fixture_dir: Path, tmp_path: Path) -> None:
    folder = copy_model(fixture_dir, tmp_path)
    edit_config(folder, lambda conf: conf.update(decoder="transformer"))
    message = checkpoint_error(lambda: load_released_folder(folder))
    assert "reverse_weight" in message


@pytest.mark.parametrize(
    "edit, named",
    [
        (lambda c: c.update(decoder="paraformer"), "decoder 'paraformer'"),
        (lambda c: c["decoder_conf"].update(fancy=1), "decoder_conf.fancy"),
        (lambda c: c["decoder_conf"].update(normalize_before=False), "decoder_conf.normalize_before"),
        (lambda c: c["decoder_conf"].update(tie_word_embedding=True), "decoder_conf.tie_word_embedding"),
        (lambda c: c["decoder_conf"].update(num_blocks="two"), "decoder_conf.num_blocks"),
        (lambda c: c["model_conf"].update(fancy_weight=0.5), "model_conf.fancy_weight"),
        (lambda c: c["model_conf"].update(ctc_weight=1.5), "model_conf.ctc_weight"),
    ],
)
def test_bad_decoder_and_model_conf_are_named(
    fixture_dir: Path, tmp_path: Path, edit: Callable[[dict[str, Any]], None], named: str
) -> None:
    folder = copy_model(fixture_dir, tmp_path)
    edit_config(folder, edit)
    assert named in checkpoint_error(lambda: load_released_folder(folder))


def test_training_only_decoder_keys_are_accepted(fixture_dir: Path, tmp_path: Path) -> None:
    folder = copy_model(fixture_dir, tmp_path)
    edit_config(folder, lambda c: c["decoder_conf"].update(use_sdpa=True, gradient_checkpointing=True))
    assert load_released_folder(folder).model.decoder is not None


# --------------------------------------------------------------------------- numerics


def test_scores_match_the_reference_implementation(fixture_dir: Path, fixture_bundle: ModelBundle) -> None:
    """Whole-hypothesis log-probabilities of the fixture's decoder over the encoder output of
    utt0.wav (16/32/16), computed offline with chunkformer 1.2.2 (``forward_attention_decoder``
    and ``attention_rescoring``'s sums)."""
    ref_l2r = [-4.32663, -8.67812, -16.73139, -24.23756]
    ref_r2l = [-3.7337, -7.70892, -16.25751, -24.70708]
    feats = torch.from_numpy(compute_fbank(load_audio(fixture_dir / "audio" / "utt0.wav"), FbankConfig()))
    model, decoder = fixture_bundle.model, fixture_bundle.model.decoder
    assert decoder is not None
    with torch.inference_mode():
        y, _ = model.encode(feats[None], torch.tensor([feats.shape[0]]), ChunkContext(chunk=16, left=32, right=16))
        scores = decoder.score([[], [5], [5, 6, 7], [10, 20, 30, 40, 2]], y[0], with_r2l=True)
    assert scores.r2l is not None
    assert torch.allclose(scores.l2r, torch.tensor(ref_l2r), atol=1e-3)
    assert torch.allclose(scores.r2l, torch.tensor(ref_r2l), atol=1e-3)


def test_score_is_the_teacher_forced_sum(make_tiny_asr: Callable[..., ASRModel]) -> None:
    decoder = make_tiny_asr().decoder
    assert decoder is not None and decoder.r2l is not None
    memory = torch.randn(9, 32)
    hyps = [[3, 4, 5], [2], []]
    eos = 7
    with torch.no_grad():
        scores = decoder.score(hyps, memory, with_r2l=True)
        for i, hyp in enumerate(hyps):
            for direction, seq, got in ((decoder.l2r, hyp, scores.l2r), (decoder.r2l, hyp[::-1], scores.r2l)):
                tokens = torch.tensor([[eos, *seq]])
                logits = direction(tokens, torch.tensor([len(seq) + 1]), memory[None], torch.tensor([9]))
                log_probs = logits[0].log_softmax(-1)
                expected = sum(log_probs[j, w] for j, w in enumerate([*seq, eos]))
                assert got is not None
                assert torch.allclose(got[i], torch.as_tensor(expected), atol=1e-5)


def test_padding_does_not_change_a_sequence(make_tiny_asr: Callable[..., ASRModel]) -> None:
    """A sequence scored with padded batch mates (longer tokens, longer memory) scores as alone."""
    decoder = make_tiny_asr().decoder
    assert decoder is not None
    memory = torch.randn(2, 12, 32)
    ys = torch.tensor([[3, 4, IGNORE_ID, IGNORE_ID], [2, 5, 6, 3]])
    with torch.no_grad():
        batch, _, _, _ = decoder(memory, torch.tensor([7, 12]), ys, torch.tensor([2, 4]), with_r2l=False)
        alone, _, _, _ = decoder(memory[:1, :7], torch.tensor([7]), ys[:1, :2], torch.tensor([2]), with_r2l=False)
    assert torch.allclose(batch[0, :3], alone[0], atol=1e-5)


def test_sos_eos_and_reversal() -> None:
    ys = torch.tensor([[1, 2, 3], [4, IGNORE_ID, IGNORE_ID], [IGNORE_ID] * 3])
    lens = torch.tensor([3, 1, 0])
    ys_in, ys_out = add_sos_eos(ys, lens, 9, 9)
    assert ys_in.tolist() == [[9, 1, 2, 3], [9, 4, 9, 9], [9, 9, 9, 9]]
    assert ys_out.tolist() == [[1, 2, 3, 9], [4, 9, -1, -1], [9, -1, -1, -1]]
    assert reverse_tokens(ys, lens).tolist() == [[3, 2, 1], [4, -1, -1], [-1, -1, -1]]


# --------------------------------------------------------------------------- our checkpoints


def test_our_checkpoint_round_trips_the_decoder(
    tmp_path: Path, make_tiny_asr: Callable[..., ASRModel]
) -> None:
    model = make_tiny_asr(seed=3)
    vocab = Vocabulary(tuple(f"t{i}" for i in range(model.cfg.vocab_size)))
    save_checkpoint(tmp_path / "m.pt", ModelBundle(model=model, vocab=vocab, fbank=FbankConfig(num_mel_bins=20)))
    loaded = load_checkpoint(tmp_path / "m.pt")
    assert loaded.model.cfg == model.cfg and loaded.model.cfg.decoder is not None
    for name, tensor in model.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[name], tensor), name


def test_config_dict_stays_strict(make_tiny_asr: Callable[..., ASRModel]) -> None:
    data = to_dict(make_tiny_asr().cfg)
    assert from_dict(ASRModelConfig, data) == make_tiny_asr().cfg
    without = {k: v for k, v in data.items() if k not in ("decoder", "loss")}  # older checkpoints
    assert from_dict(ASRModelConfig, without).decoder is None
    with pytest.raises(ConfigError, match="decoder"):
        from_dict(ASRModelConfig, {**data, "decoder": {**data["decoder"], "fancy": 1}})
    with pytest.raises(ConfigError, match="loss.fancy"):
        from_dict(ASRModelConfig, {**data, "loss": {**data["loss"], "fancy": 1}})
    with pytest.raises(ConfigError, match="reverse_weight"):
        from_dict(ASRModelConfig, {**data, "decoder": {**data["decoder"], "bidirectional": False, "r_num_blocks": 0}})
