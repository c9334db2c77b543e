"""The training data pipeline and the training config."""

from __future__ import annotations

import subprocess
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from echostream.audio import load_audio
from echostream.config import ConfigError
from echostream.frontend.fbank import FbankConfig, compute_fbank
from echostream.text.tokenizer import load_tokenizer
from echostream.training.config import (
    AugmentConfig,
    config_to_yaml,
    load_train_config,
    read_saved_config,
)
from echostream.training.dataset import (
    BatchDataset,
    BatchKey,
    load_utterance,
    prepare_examples,
    speed_perturb,
)

FBANK = FbankConfig(num_mel_bins=20)


@pytest.fixture
def dataset(corpus):  # type: ignore[no-untyped-def]
    tokenizer = load_tokenizer(corpus.tokenizer)
    examples, skipped = prepare_examples(
        corpus.rows, tokenizer, None, min_duration=0.2, max_duration=30.0
    )
    assert len(examples) == 10 and not skipped
    return examples


def test_segments_are_read_alone(corpus) -> None:  # type: ignore[no-untyped-def]
    segment = corpus.rows[5]  # long.wav [3, 6) s
    whole = load_audio(segment.audio)
    np.testing.assert_array_equal(load_utterance(segment, 16000), whole[48000:96000])
    assert load_utterance(segment, 8000).shape == (24000,)


def test_speed_perturbation_changes_duration() -> None:
    x = np.random.default_rng(0).standard_normal(16000).astype(np.float32)
    assert speed_perturb(x, 1.0, 16000) is x
    assert abs(speed_perturb(x, 0.9, 16000).size - 16000 / 0.9) <= 1
    assert abs(speed_perturb(x, 1.1, 16000).size - 16000 / 1.1) <= 1


def test_batches_depend_only_on_their_key(dataset) -> None:  # type: ignore[no-untyped-def]
    data = BatchDataset(dataset, FBANK, AugmentConfig(), seed=3)
    key = BatchKey(epoch=0, position=2, indices=(0, 5, 2))
    a, b = data[key], data[key]
    assert torch.equal(a.feats, b.feats) and a.seconds == b.seconds
    other = data[replace(key, epoch=1)]
    assert a.feats.shape != other.feats.shape or not torch.equal(a.feats, other.feats)
    assert a.tokens.shape[0] == 3 and (a.tokens[2, int(a.token_lens[2]) :] == -1).all()
    assert a.feats.shape[0] == 3 and int(a.feat_lens.max()) == a.feats.shape[1]


def test_augmentation_starts_after_the_clean_epochs(dataset) -> None:  # type: ignore[no-untyped-def]
    data = BatchDataset(dataset, FBANK, AugmentConfig(clean_epochs=2), seed=3)
    plain = BatchDataset(dataset, FBANK, None, seed=3)
    for epoch in (0, 1, 2):
        key = BatchKey(epoch=epoch, position=0, indices=(1, 2))
        same = torch.equal(data[key].feats, plain[key].feats)
        assert same == (epoch < 2), epoch
    with pytest.raises(ValueError, match="clean_epochs"):
        AugmentConfig(clean_epochs=-1)


def test_validation_batches_are_plain_fbank(dataset) -> None:  # type: ignore[no-untyped-def]
    data = BatchDataset(dataset, FBANK, None, seed=0)
    batch = data[BatchKey(epoch=0, position=0, indices=(1, 2))]
    for b, index in enumerate((1, 2)):
        expected = compute_fbank(load_audio(dataset[index].row.audio), FBANK)
        assert torch.equal(batch.feats[b, : int(batch.feat_lens[b])], torch.from_numpy(expected))
    assert batch.texts == ("good morning", "yes")


def test_audio_lost_mid_run_is_left_out_of_its_batch(dataset, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    lost = replace(dataset[0], row=replace(dataset[0].row, audio=str(tmp_path / "gone.wav")))
    data = BatchDataset([lost, *dataset[1:3]], FBANK, None, seed=0)
    batch = data[BatchKey(epoch=0, position=0, indices=(0, 1, 2))]
    assert batch.ids == ("utt1", "utt2") and batch.failed[0].startswith("utt0: ")
    empty = data[BatchKey(epoch=0, position=1, indices=(0,))]
    assert empty.size == 0 and empty.feats.shape == (0, 0, 20)


def test_config_paths_and_round_trip(corpus, tmp_path: Path, make_config) -> None:  # type: ignore[no-untyped-def]
    path = make_config(tmp_path, {"tokenizer": "../tok", "data": {"valid": ["v.jsonl"]}})
    cfg = load_train_config(path)
    assert cfg.tokenizer == str(tmp_path.parent / "tok")
    assert cfg.data.valid == (str(tmp_path / "v.jsonl"),) and cfg.data.train == (str(corpus.train),)
    assert cfg.context.chunk_sizes == (4, 8, None)
    (tmp_path / "saved.yaml").write_text(config_to_yaml(cfg))
    assert read_saved_config(tmp_path / "saved.yaml") == cfg
    with pytest.raises(ConfigError, match=r"sampler\.max_batch_secs: unknown key"):
        load_train_config(
            make_config(tmp_path, {"sampler": {"max_batch_secs": 1}}, name="bad.yaml")
        )
    with pytest.raises(ConfigError, match="needs a tokenizer"):
        load_train_config(make_config(tmp_path, {"tokenizer": None}, name="bad2.yaml"))
    with pytest.raises(ConfigError, match="num_mel_bins"):
        load_train_config(
            make_config(tmp_path, {"model": {"fbank": {"num_mel_bins": 80}}}, name="bad3.yaml")
        )


REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("preset", sorted((REPO / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_presets_load_strictly(preset: Path) -> None:
    init = None if "model:" in preset.read_text() else "some/model"
    cfg = load_train_config(preset, init=init)
    assert cfg.data.train and all(Path(p).is_absolute() for p in cfg.data.train)


def test_recipe_scripts_parse() -> None:
    for script in (REPO / "recipes").glob("*/run.sh"):
        assert subprocess.run(["bash", "-n", str(script)], check=False).returncode == 0, script
