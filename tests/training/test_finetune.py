"""Tests for echostream.training.finetune and ``echostream finetune``: the recipe, one run end to
end from a released folder, its resume, and bad input."""

from __future__ import annotations

import dataclasses
import os
import shutil
from pathlib import Path

import pytest
import torch

from echostream.cli.main import main
from echostream.data.channel import codec_available
from echostream.model import load_model
from echostream.training import experiment as ex
from echostream.training.config import load_train_config
from echostream.training.finetune import RECIPE_CONTEXT, parse_weighted, recipe_config
from model_folders import FIXTURE_MODEL

CONFIGS = Path(__file__).parents[2] / "configs"


def test_the_recipe_config_file_holds_the_recipe() -> None:
    from_file = load_train_config(CONFIGS / "finetune.yaml", init=str(FIXTURE_MODEL))
    recipe = recipe_config(
        str(FIXTURE_MODEL), from_file.data.train, from_file.data.train_weights, from_file.data.valid
    )
    assert from_file == recipe
    assert recipe.schedule.lr == 5e-5 and recipe.schedule.warmup_steps == 2000
    assert recipe.data.train_weights == (0.8, 0.2) and recipe.augment.speed_factors == (0.9, 1.0, 1.1)
    assert recipe.augment.noise is not None and recipe.augment.noise.snr_db == (5.0, 15.0)
    assert recipe.augment.reverb is not None and recipe.augment.reverb.rt60 == (0.05, 0.15)
    spec = recipe.augment.spec_augment
    assert spec is not None and (spec.freq_masks, spec.max_freq, spec.time_masks, spec.max_time) == (2, 27, 2, 100)
    assert recipe.validation.context.chunk == RECIPE_CONTEXT[0] == 64 and recipe.max_epochs == 20


@pytest.mark.parametrize(
    ("spec", "expected"),
    [("a.jsonl:0.8", ("a.jsonl", 0.8)), ("a.jsonl", ("a.jsonl", 1.0)), ("C:/x/a.jsonl", ("C:/x/a.jsonl", 1.0))],
)
def test_weighted_manifest_arguments(spec: str, expected: tuple[str, float]) -> None:
    assert parse_weighted(spec) == expected


def _finetune(corpus, out: Path, *extra: str) -> int:  # type: ignore[no-untyped-def]
    return main([
        "finetune", "--init", str(FIXTURE_MODEL), "--data", f"{corpus.train}:0.8", "--data", f"{corpus.valid}:0.2",
        "--valid", str(corpus.valid), "--out", str(out), "--context", "8/16/4", "--max-steps", "4",
        "--valid-every", "2", "--warmup-steps", "2", "--lr", "1e-4", "--average", "2", *extra,
    ])  # fmt: skip


def test_finetune_runs_end_to_end_and_resumes(corpus, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:  # type: ignore[no-untyped-def]
    channel = ("--channel", "0.5") if codec_available("gsm") and shutil.which("ffmpeg") else ()
    out = tmp_path / "callbot"
    assert _finetune(corpus, out, *channel) == 0
    err = capsys.readouterr().err
    assert "validation WER before" in err and "train.jsonl (weight 0.8)" in err
    for name in ("before.txt", "before.jsonl", "after.txt", "after.jsonl", "report.md", "model/README.md"):
        assert (out / name).is_file(), name
    assert [v.step for v in ex.validations(out / "exp")] == [2, 4]
    saved = load_train_config(out / "exp" / "config.yaml")
    assert saved.data.train_weights == (0.8, 0.2)
    assert saved.augment.noise is not None and saved.augment.reverb is not None
    assert (saved.augment.channel is not None) == bool(channel)
    # the averaged model is the mean of the two best checkpoints, and loads like any model
    best = ex.choose_checkpoints(out / "exp", "best", 2, "wer")
    states = [torch.load(p, map_location="cpu", weights_only=False)["model"] for p in best]
    model = load_model(out / "model")
    for name, value in model.bundle.model.state_dict().items():
        if value.is_floating_point():
            torch.testing.assert_close(value, (states[0][name] + states[1][name]) / 2, rtol=1e-5, atol=1e-6)
    report = (out / "report.md").read_text()
    assert "| before |" in report and "| after (2 checkpoints averaged) |" in report
    # the same command again continues the finished run: no new steps, the first evaluation kept
    # and read back into the rewritten report and card
    before = (out / "before.txt").stat().st_mtime_ns
    before_row = next(line for line in report.splitlines() if line.startswith("| before |"))
    assert _finetune(corpus, out, *channel) == 0
    assert [v.step for v in ex.validations(out / "exp")] == [2, 4]
    assert (out / "before.txt").stat().st_mtime_ns == before
    assert before_row in (out / "report.md").read_text()
    assert "% before" in (out / "model" / "README.md").read_text()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (["--data", "x.jsonl:often"], "the weight after ':' is not a number"),
        (["--context", "64/128"], "expected CHUNK/LEFT/RIGHT"),
        (["--lr", "-1"], "schedule.lr must be a positive number"),
        (["--lr", "nan"], "schedule.lr must be a positive number"),
        (["--data", "x.jsonl:"], "nothing after ':'"),
        (["--data", "missing.jsonl:0.5"], "missing.jsonl: manifest not found"),
        (["--channel", "2"], "channel.probability must be in [0, 1]"),
    ],
)
def test_finetune_refuses_bad_options(corpus, tmp_path: Path, change: list[str], message: str,  # type: ignore[no-untyped-def]
                                      capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    args = ["finetune", "--init", str(FIXTURE_MODEL), "--data", str(corpus.train), "--valid", str(corpus.valid),
            "--out", str(tmp_path / "out"), *change]  # fmt: skip
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("echostream: error:") and message in err and len(err.splitlines()) == 1
    assert not os.path.exists(tmp_path / "out")


def test_recipe_values_can_be_replaced() -> None:
    cfg = recipe_config("m", ["a.jsonl"], [1.0], ["v.jsonl"], context=(16, 32, 0))
    assert cfg.context.chunk_sizes == (16,) and cfg.validation.right_context == 0
    assert dataclasses.replace(cfg, max_steps=10).max_steps == 10
