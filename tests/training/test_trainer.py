"""The training loop end to end on a tiny model: loss falls, checkpoints round-trip, resume is
exact, early stopping, fine-tuning from a released folder, and the train/average commands."""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from echostream.audio import load_audio
from echostream.cli.main import main
from echostream.data.manifest import read_manifest
from echostream.encoders.base import ChunkContext
from echostream.frontend.fbank import compute_fbank
from echostream.models.checkpoint import load_checkpoint, load_released_folder, save_checkpoint
from echostream.text.normalize import normalize_text
from echostream.text.tokenizer import VocabTokenizer
from echostream.training import experiment as ex
from echostream.training.config import load_train_config
from echostream.training.sampler import DurationBucketSampler
from echostream.training.trainer import StepReport, TrainingError, TrainResult, train
from model_folders import FIXTURE_MODEL


def _losses(exp: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in ex.read_records(exp / ex.TRAIN_LOG)}


@pytest.fixture(scope="module")
def trained(
    tmp_path_factory: pytest.TempPathFactory, make_config: Callable[..., Path]
) -> tuple[Path, TrainResult]:
    """30 steps of a tiny model with dropout, speed perturbation, SpecAugment and context
    sampling; validation (and a checkpoint) every 10 steps."""
    folder = tmp_path_factory.mktemp("trained")
    cfg = load_train_config(make_config(folder))
    result = train(cfg, folder / "exp")
    return folder / "exp", result


def test_loss_falls_and_checkpoints_are_written(trained: tuple[Path, TrainResult]) -> None:
    exp, result = trained
    assert result.step == 30 and not result.stopped_early
    losses = _losses(exp)
    assert sorted(losses) == list(range(1, 31))
    valid = [v.loss for v in result.validations]
    assert [v.step for v in result.validations] == [10, 20, 30]
    assert valid[0] > valid[1] > valid[2] and valid[2] < 0.9 * valid[0], valid
    first, last = [losses[s] for s in range(1, 11)], [losses[s] for s in range(21, 31)]
    assert sum(last) < 0.8 * sum(first)
    assert ex.resumable_steps(exp) == [10, 20, 30]
    assert list((exp / ex.TENSORBOARD_DIR).glob("events.out.tfevents.*"))
    given = load_train_config(exp.parent / "train.yaml")
    assert load_train_config(exp / ex.CONFIG_FILE) == given, "the saved config is the run's config"


def test_checkpoint_round_trips(trained: tuple[Path, TrainResult], tmp_path: Path) -> None:
    exp, _ = trained
    bundle = load_checkpoint(ex.model_path(exp, 30))
    save_checkpoint(tmp_path / "again.pt", bundle)
    again = load_checkpoint(tmp_path / "again.pt")
    for (name, a), (_, b) in zip(
        bundle.model.state_dict().items(), again.model.state_dict().items()
    ):
        assert torch.equal(a, b), name
    assert again.vocab == bundle.vocab and again.fbank == bundle.fbank
    payload = torch.load(ex.model_path(exp, 30), weights_only=True)
    assert payload["training"]["step"] == 30
    assert payload["training"]["valid"]["loss"] == pytest.approx(ex.validations(exp)[-1].loss)


def test_resume_continues_exactly(
    trained: tuple[Path, TrainResult], tmp_path: Path, make_config: Callable[..., Path]
) -> None:
    """Interrupted after step 20: the resumed run (with a DataLoader worker this time) has the
    same losses at steps 21..30, the same validation and the same final weights."""
    exp, _ = trained
    resumed = tmp_path / "exp"
    shutil.copytree(exp, resumed)
    for path in (ex.model_path(resumed, 30), ex.state_path(resumed, 30)):
        path.unlink()
    messages: list[str] = []
    cfg = load_train_config(make_config(tmp_path, {"data": {"num_workers": 1}}))
    result = train(cfg, resumed, resume=True, on_message=messages.append)
    assert result.step == 30
    assert any("resuming from step 20" in m for m in messages)
    assert _losses(resumed) == _losses(exp)  # bit-identical, steps 1..30 (21..30 recomputed)
    records = ex.read_records(resumed / ex.TRAIN_LOG)
    walls = [r["wall_seconds"] for r in records]
    restart = next(i for i, r in enumerate(records) if r["step"] > 20)  # the resumed run's first record
    assert records[restart].get("run_start") and records[0].get("run_start")  # its clock starts again
    assert not any(r.get("run_start") for i, r in enumerate(records) if i not in (0, restart))
    assert ex.training_seconds(records) == pytest.approx(walls[restart - 1] + walls[-1])
    assert ex.validations(resumed) == ex.validations(exp)
    a = load_checkpoint(ex.model_path(exp, 30)).model.state_dict()
    b = load_checkpoint(ex.model_path(resumed, 30)).model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_signal_stops_after_the_step_with_a_checkpoint_that_resumes_exactly(
    trained: tuple[Path, TrainResult], tmp_path: Path, make_config: Callable[..., Path]
) -> None:
    """SIGTERM at step 15 (between the checkpoints of steps 10 and 20): the run finishes that step,
    validates, saves a resumable checkpoint at 15 and returns; --resume goes on to the same losses
    and final weights as the run never stopped."""
    exp, _ = trained
    cfg = load_train_config(make_config(tmp_path))
    messages: list[str] = []

    def kill_at_15(report: StepReport) -> None:
        if report.step == 15:
            os.kill(os.getpid(), signal.SIGTERM)

    previous = signal.getsignal(signal.SIGTERM)
    stopped = train(cfg, tmp_path / "exp", on_step=kill_at_15, on_message=messages.append)
    assert signal.getsignal(signal.SIGTERM) is previous  # the handler is removed again
    assert stopped.interrupted and stopped.step == 15 and not stopped.stopped_early
    assert ex.resumable_steps(tmp_path / "exp") == [10, 15]
    assert any("stopped by a signal at step 15" in m for m in messages)
    resumed = train(cfg, tmp_path / "exp", resume=True)
    assert resumed.step == 30 and not resumed.interrupted
    assert _losses(tmp_path / "exp") == _losses(exp)
    a = load_checkpoint(ex.model_path(exp, 30)).model.state_dict()
    b = load_checkpoint(ex.model_path(tmp_path / "exp", 30)).model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_average_command_gives_the_elementwise_mean(
    trained: tuple[Path, TrainResult], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    exp, _ = trained
    assert (
        main(["average", "--exp", str(exp), "--last", "2", "--out", str(tmp_path / "avg.pt")]) == 0
    )
    avg = load_checkpoint(tmp_path / "avg.pt").model.state_dict()
    s20 = load_checkpoint(ex.model_path(exp, 20)).model.state_dict()
    s30 = load_checkpoint(ex.model_path(exp, 30)).model.state_dict()
    for key, value in avg.items():
        if value.is_floating_point():
            torch.testing.assert_close(value, (s20[key] + s30[key]) / 2, rtol=0, atol=1e-6)
    assert main(["average", "--exp", str(exp), "--last", "2", "--weights", "fp16", "--out", str(tmp_path / "h.pt")]) == 0
    half = load_checkpoint(tmp_path / "h.pt").model.state_dict()
    for key, value in avg.items():
        torch.testing.assert_close(half[key], value, rtol=1e-3, atol=1e-4)
    best = min(ex.validations(exp), key=lambda v: (v.wer, v.loss))
    assert (
        main(["average", "--exp", str(exp), "--best", "1", "--out", str(tmp_path / "best.pt")]) == 0
    )
    chosen = load_checkpoint(tmp_path / "best.pt").model.state_dict()
    reference = load_checkpoint(ex.model_path(exp, best.step)).model.state_dict()
    assert all(torch.equal(chosen[k], reference[k]) for k in chosen)
    capsys.readouterr()
    assert main(["average", "--exp", str(exp), "--last", "9", "--out", str(tmp_path / "x.pt")]) == 1
    err = capsys.readouterr().err
    assert (
        err.startswith("echostream: error: ")
        and "only 3" in err
        and len(err.strip().splitlines()) == 1
    )


def test_early_stopping(tmp_path: Path, make_config: Callable[..., Path]) -> None:
    changes = {
        "validation": {"every_steps": 1, "metric": "loss"},
        "early_stopping": {"patience": 2, "min_delta": 1000.0},  # nothing counts as better
        "augment": {"speed_factors": [1.0], "spec_augment": None},
    }
    cfg = load_train_config(make_config(tmp_path, changes))
    result = train(cfg, tmp_path / "exp")
    assert result.stopped_early and result.step == 3 and result.best_step == 1
    assert [v.step for v in ex.validations(tmp_path / "exp")] == [1, 2, 3]
    again = train(cfg, tmp_path / "exp", resume=True)  # a rerun does not train on
    assert again.stopped_early and again.step == 3
    assert [v.step for v in ex.validations(tmp_path / "exp")] == [1, 2, 3]


@pytest.mark.parametrize(
    "changes", [{"precision": "bf16"}, {"accum_grad": 2}], ids=["bf16", "accum_grad"]
)
def test_precision_and_accumulation_run(
    tmp_path: Path, make_config: Callable[..., Path], changes: dict
) -> None:
    cfg = load_train_config(
        make_config(tmp_path, {**changes, "max_steps": 3, "validation": {"every_steps": 3}})
    )
    result = train(cfg, tmp_path / "exp")
    assert result.step == 3 and result.validations
    assert all(math.isfinite(v.loss) for v in result.validations)
    if "accum_grad" in changes:  # 2 batches per step; an odd batch at the epoch's end steps alone
        batches = len(
            DurationBucketSampler(
                [r.duration for r in read_manifest(cfg.data.train[0])], cfg.sampler
            )
        )
        epochs = [r["epoch"] for r in ex.read_records(tmp_path / "exp" / ex.TRAIN_LOG)]
        assert epochs.index(1) + 1 == -(-batches // 2), (batches, epochs)


@pytest.mark.skipif(
    not (FIXTURE_MODEL / "config.yaml").is_file(), reason=f"fixture model missing: {FIXTURE_MODEL}"
)
def test_fine_tune_first_validation_is_the_loaded_models_loss(corpus, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """``--init`` keeps the released weights, CMVN and vocabulary: the validation before the
    first step equals the released model's loss computed here directly."""
    config = tmp_path / "finetune.yaml"
    config.write_text(
        f"data: {{train: [{corpus.train}], valid: [{corpus.valid}]}}\n"
        "schedule: {lr: 0.0001, warmup_steps: 0, decay: constant}\n"
        "validation: {every_steps: 1, at_start: true, chunk_size: 8, left_context: 16, right_context: 4}\n"
        "max_steps: 1\n",
        encoding="utf-8",
    )
    assert (
        main(
            [
                "train",
                "--config",
                str(config),
                "--init",
                str(FIXTURE_MODEL),
                "--out",
                str(tmp_path / "exp"),
            ]
        )
        == 0
    )
    first = ex.validations(tmp_path / "exp")[0]
    assert first.step == 0

    bundle = load_released_folder(FIXTURE_MODEL)
    tokenizer = VocabTokenizer(bundle.vocab)
    feats, tokens = [], []
    for row in [json.loads(line) for line in corpus.valid.read_text().splitlines()]:
        samples = load_audio(corpus.folder / row["audio"])
        if "offset" in row:
            start = round(row["offset"] * 16000)
            samples = samples[start : start + round(row["duration"] * 16000)]
        feats.append(torch.from_numpy(compute_fbank(samples, bundle.fbank)))
        tokens.append(torch.tensor(tokenizer.encode(normalize_text(row["text"]))))
    x = torch.nn.utils.rnn.pad_sequence(feats, batch_first=True)
    ys = torch.nn.utils.rnn.pad_sequence(tokens, batch_first=True, padding_value=-1)
    with torch.no_grad():
        direct = bundle.model.loss(
            x,
            torch.tensor([f.shape[0] for f in feats]),
            ys,
            torch.tensor([len(t) for t in tokens]),
            ChunkContext(chunk=8, left=16, right=4),
        )
    assert first.loss == pytest.approx(float(direct.total), rel=1e-5)


def test_unreadable_rows_are_left_out_with_a_count(
    corpus, tmp_path: Path, make_config: Callable[..., Path]
) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "bad.wav").write_text("not audio at all\n")
    lines = corpus.train.read_text().splitlines()
    lines.append(
        json.dumps({"id": "bad", "audio": str(tmp_path / "bad.wav"), "text": "x", "duration": 1.0})
    )
    lines.append(
        json.dumps(
            {"id": "gone", "audio": str(tmp_path / "gone.wav"), "text": "x", "duration": 1.0}
        )
    )
    (tmp_path / "train.jsonl").write_text("\n".join(lines) + "\n")
    changes = {
        "data": {"train": [str(tmp_path / "train.jsonl")]},
        "max_steps": 2,
        "validation": {"every_steps": 2},
    }
    messages: list[str] = []
    train(
        load_train_config(make_config(tmp_path, changes)),
        tmp_path / "exp",
        on_message=messages.append,
    )
    summary = next(m for m in messages if m.startswith("train:"))
    assert (
        "10 utterances" in summary
        and "1 unreadable audio" in summary
        and "1 missing audio" in summary
    )


def test_train_refuses_to_overwrite_and_names_bad_keys(
    trained: tuple[Path, TrainResult],
    tmp_path: Path,
    make_config: Callable[..., Path],
    capsys: pytest.CaptureFixture[str],
) -> None:
    exp, _ = trained
    with pytest.raises(TrainingError, match="--resume"):
        train(load_train_config(make_config(tmp_path)), exp)
    bad = make_config(tmp_path, {"optimizer": {"lr": 0.1}}, name="bad.yaml")
    assert main(["train", "--config", str(bad), "--out", str(tmp_path / "x")]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "optimizer.lr: unknown key" in err, err
    both = make_config(tmp_path, name="both.yaml")
    assert (
        main(
            [
                "train",
                "--config",
                str(both),
                "--init",
                str(FIXTURE_MODEL),
                "--out",
                str(tmp_path / "y"),
            ]
        )
        == 1
    )
    assert "either model" in capsys.readouterr().err


@pytest.mark.parametrize("keep", [False, True])
def test_speechless_rows_train_only_when_asked(
    corpus, tmp_path: Path, make_config: Callable[..., Path], keep: bool
) -> None:  # type: ignore[no-untyped-def]
    """Rows with an empty transcript (silence, noise) are left out with a count, or, with
    data.empty_transcripts, trained on with no target tokens (a finite loss)."""
    import numpy as np
    import soundfile as sf

    lines = corpus.train.read_text().splitlines()
    for i in range(4):
        path = tmp_path / f"noise{i}.wav"
        sf.write(path, 0.1 * np.random.default_rng(i).standard_normal(24000), 16000)
        lines.append(json.dumps({"id": f"noise{i}", "audio": str(path), "text": "", "duration": 1.5}))
    (tmp_path / "train.jsonl").write_text("\n".join(lines) + "\n")
    changes = {
        "data": {"train": [str(tmp_path / "train.jsonl")], "empty_transcripts": keep},
        "sampler": {"max_batch_size": 14, "max_batch_seconds": 100.0, "bucket_boundaries": []},
        "max_steps": 2,
        "validation": {"every_steps": 2},
    }
    messages: list[str] = []
    result = train(load_train_config(make_config(tmp_path, changes)), tmp_path / "exp", on_message=messages.append)
    summary = next(m for m in messages if m.startswith("train:"))
    assert ("14 utterances" in summary) == keep and ("left out 4 empty text" in summary) == (not keep)
    losses = _losses(tmp_path / "exp")
    assert result.step == 2 and all(math.isfinite(v) for v in losses.values())


def test_the_planned_steps_are_the_steps_an_epoch_bound_run_makes(
    tmp_path: Path, make_config: Callable[..., Path]
) -> None:
    """With no step limit, StepReport.planned_steps (the progress bar's total, hence its ETA) is
    where the run ends: max_epochs' batches."""
    reports: list = []
    changes = {"max_steps": 0, "max_epochs": 2, "validation": {"every_steps": 100}}
    result = train(load_train_config(make_config(tmp_path, changes)), tmp_path / "exp", on_step=reports.append)
    assert result.epoch == 2 and reports[-1].step == result.step
    assert {r.planned_steps for r in reports} == {result.step}


def test_encoder_init_copies_the_encoder_and_cmvn_and_starts_new_heads(
    trained: tuple[Path, TrainResult], corpus, tmp_path: Path, make_config: Callable[..., Path]  # type: ignore[no-untyped-def]
) -> None:
    """``encoder_init`` (WeNet's ``enc_init``): a new model with another tokenizer takes the
    trained model's encoder and CMVN; its CTC head is new (other vocabulary); another encoder
    shape is refused by name."""
    from echostream.text.tokenizer import train_tokenizer
    from echostream.training.trainer import _setup

    exp, _ = trained
    source = load_checkpoint(ex.model_path(exp, 30))
    other = tmp_path / "tokenizer"
    train_tokenizer([r.text.upper() + " xyz" for r in corpus.rows], other, kind="char", vocab_size=None)
    cfg = load_train_config(make_config(tmp_path, {"tokenizer": str(other), "encoder_init": str(ex.model_path(exp, 30))}))
    setup = _setup(cfg, None)
    assert not setup.new_model, "the CMVN comes from the encoder's model, not from new statistics"
    for name, value in source.model.encoder.state_dict().items():
        assert torch.equal(setup.model.encoder.state_dict()[name], value), name
    assert torch.equal(setup.model.cmvn.mean, source.model.cmvn.mean)
    assert setup.model.cfg.vocab_size == setup.tokenizer.vocab_size != source.model.cfg.vocab_size

    wider = make_config(tmp_path / "wider", {"encoder_init": str(ex.model_path(exp, 30)), "model": {"encoder": {"output_size": 48}}})
    with pytest.raises(TrainingError, match="encoder differs"):
        _setup(load_train_config(wider), None)
    with pytest.raises(ValueError, match="encoder_init"):
        load_train_config(make_config(tmp_path / "both", {"model": None, "init": str(FIXTURE_MODEL),
                                                          "encoder_init": str(FIXTURE_MODEL)}))
