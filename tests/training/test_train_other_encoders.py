"""Training is encoder-agnostic: the tiny corpus trains an Emformer and a Zipformer through the
same command, and each checkpoint loads and transcribes as its own encoder."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

import echostream
from echostream.cli.main import main
from echostream.encoders.emformer import EmformerEncoder
from echostream.encoders.zipformer import ZipformerEncoder
from echostream.training import experiment as ex

UTT0 = Path(__file__).resolve().parents[2].parent / "shared" / "fixtures" / "chunkformer-tiny" / "audio" / "utt0.wav"

TINY_EMFORMER = {
    "type": "emformer", "input_dim": 20, "output_size": 32, "attention_heads": 4, "linear_units": 64,
    "num_blocks": 2, "memory_size": 2, "dropout_rate": 0.1, "attention_dropout_rate": 0.1,
}


TINY_ZIPFORMER = {
    "type": "zipformer", "input_dim": 20, "downsampling_factors": [1, 2, 4, 2], "encoder_dims": [16, 24, 32, 24],
    "num_layers": [1, 1, 1, 1], "attention_heads": [2, 2, 2, 2], "feedforward_dims": [32, 48, 64, 48],
    "cnn_module_kernels": [7, 5, 3, 5], "query_head_dim": 8, "value_head_dim": 4, "dropout_rate": 0.1,
}

# encoder config, the contexts training draws (encoder frames), the encoder class
CASES = {
    "emformer": (TINY_EMFORMER, {"chunk_sizes": [4, 16, None], "left_sizes": [8, 16], "right_sizes": [0, 4]},
                 EmformerEncoder),
    "zipformer": (TINY_ZIPFORMER, {"chunk_sizes": [4, 16, None], "left_sizes": [8, 16], "right_sizes": [0]},
                  ZipformerEncoder),
}


@pytest.mark.parametrize("name", list(CASES))
def test_another_encoder_trains_with_the_same_command(
    name: str, tmp_path: Path, make_config: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    encoder, context, kind = CASES[name]
    path = make_config(tmp_path, {"max_steps": 20, "schedule": {"lr": 0.005}})
    cfg = yaml.safe_load(path.read_text())
    cfg["model"]["encoder"] = encoder  # replaced, not merged with the ChunkFormer keys
    cfg["context"] = context
    cfg["validation"] = {**cfg.get("validation", {}), "right_context": 0}
    path.write_text(yaml.safe_dump(cfg))
    exp = tmp_path / "exp"
    assert main(["train", "--config", str(path), "--out", str(exp)]) == 0
    valid = [v.loss for v in ex.validations(exp)]
    assert len(valid) == 2 and valid[1] < valid[0]
    model = echostream.load_model(ex.model_path(exp, 20))
    assert isinstance(model.bundle.model.encoder, kind)
    assert model.bundle.frame_seconds == 0.04
    [result] = model.transcribe(UTT0, chunk_size=8, left_context=16)  # the encoder's default look-ahead
    assert result.ok and result.duration == pytest.approx(3.4384, abs=0.01)
    capsys.readouterr()
    assert main(["transcribe", "--model", str(ex.model_path(exp, 20)), "--chunk-size", "8", "--left-context", "16",
                 str(UTT0)]) == 0
    assert capsys.readouterr().out.strip() == result.text


def test_a_context_the_encoder_cannot_run_is_refused_before_the_first_step(
    tmp_path: Path, make_config: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    path = make_config(tmp_path, {"max_steps": 4})
    cfg = yaml.safe_load(path.read_text())
    cfg["model"]["encoder"] = TINY_ZIPFORMER
    cfg["context"] = {"chunk_sizes": [4, None], "left_sizes": [8], "right_sizes": [0, 4]}
    cfg["validation"] = {**cfg.get("validation", {}), "right_context": 0}
    path.write_text(yaml.safe_dump(cfg))
    exp = tmp_path / "exp"
    assert main(["train", "--config", str(path), "--out", str(exp)]) != 0
    assert "right 4: zipformer is chunk-causal: right_context must be 0" in capsys.readouterr().err
    assert not list(exp.glob("checkpoints/*.pt"))
