"""Training is encoder-agnostic: the tiny corpus trains an Emformer through the same command,
and its checkpoint loads, transcribes and streams as an Emformer."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import yaml

import echostream
from echostream.cli.main import main
from echostream.encoders.emformer import EmformerEncoder
from echostream.training import experiment as ex

TINY_EMFORMER = {
    "type": "emformer", "input_dim": 20, "output_size": 32, "attention_heads": 4, "linear_units": 64,
    "num_blocks": 2, "memory_size": 2, "dropout_rate": 0.1, "attention_dropout_rate": 0.1,
}


def test_an_emformer_trains_with_the_same_command(tmp_path: Path, make_config: Callable[..., Path]) -> None:
    path = make_config(tmp_path, {"max_steps": 20, "schedule": {"lr": 0.005}})
    cfg = yaml.safe_load(path.read_text())
    cfg["model"]["encoder"] = TINY_EMFORMER  # replaced, not merged with the ChunkFormer keys
    cfg["context"] = {"chunk_sizes": [4, 16, None], "left_sizes": [8, 16], "right_sizes": [0, 4]}
    path.write_text(yaml.safe_dump(cfg))
    exp = tmp_path / "exp"
    assert main(["train", "--config", str(path), "--out", str(exp)]) == 0
    valid = [v.loss for v in ex.validations(exp)]
    assert len(valid) == 2 and valid[1] < valid[0]
    model = echostream.load_model(ex.model_path(exp, 20))
    assert isinstance(model.bundle.model.encoder, EmformerEncoder)
    assert model.bundle.frame_seconds == 0.04
