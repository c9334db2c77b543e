"""The experiment folder a training run writes, and what reads it (resume, averaging).

::

    EXP/config.yaml                          the TrainConfig as run (absolute paths)
    EXP/checkpoints/step-00001000.pt         the model at a validation (``load_model`` reads it)
    EXP/checkpoints/step-00001000.state.pt   optimizer, schedule, sampler position, RNG states
    EXP/valid.jsonl                          one line per validation: step, epoch, loss, wer, cer
    EXP/train.jsonl                          one line every ``log_every`` steps
    EXP/tensorboard/                         TensorBoard event files

Both files of a checkpoint are written atomically, the training state first: a step whose model
file exists and whose state file exists can be resumed from.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from echostream.models.checkpoint import ModelBundle, load_checkpoint
from echostream.training.averaging import average_state_dicts, select_checkpoints

CONFIG_FILE = "config.yaml"
CHECKPOINT_DIR = "checkpoints"
VALID_LOG = "valid.jsonl"
TRAIN_LOG = "train.jsonl"
TENSORBOARD_DIR = "tensorboard"
STATE_VERSION = 1
_MODEL_NAME = re.compile(r"^step-(\d{8})\.pt$")


class ExperimentError(ValueError):
    """An experiment folder that cannot be used as asked; the message is one line."""


@dataclass(frozen=True)
class Validation:
    """One validation of a run: mean loss per utterance, word and character error rates."""

    step: int
    epoch: int
    loss: float
    wer: float
    cer: float
    utterances: int

    def metric(self, name: str) -> float:
        if name not in ("wer", "loss"):
            raise ValueError(f"metric {name!r} is not wer or loss")
        return float(getattr(self, name))


def model_path(exp: str | os.PathLike[str], step: int) -> Path:
    return Path(exp) / CHECKPOINT_DIR / f"step-{step:08d}.pt"


def state_path(exp: str | os.PathLike[str], step: int) -> Path:
    return Path(exp) / CHECKPOINT_DIR / f"step-{step:08d}.state.pt"


def model_steps(exp: str | os.PathLike[str]) -> list[int]:
    """Steps that have a model file, ascending."""
    folder = Path(exp) / CHECKPOINT_DIR
    if not folder.is_dir():
        return []
    return sorted(int(m.group(1)) for p in folder.iterdir() if (m := _MODEL_NAME.match(p.name)))


def resumable_steps(exp: str | os.PathLike[str]) -> list[int]:
    """Steps that have both a model file and a training state, ascending."""
    return [s for s in model_steps(exp) if state_path(exp, s).is_file()]


def load_state(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A training state written by the trainer."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - torch raises many types for a corrupt file
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ExperimentError(f"{path}: not a readable training state ({first})") from None
    if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
        raise ExperimentError(f"{path}: not an echostream training state (version {STATE_VERSION})")
    return state


def append_record(path: str | os.PathLike[str], record: dict[str, Any]) -> None:
    """Append one JSON line."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")


def read_records(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The JSON lines of a log; a malformed line (a write cut short) is passed over."""
    path = Path(path)
    if not path.is_file():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and isinstance(record.get("step"), int):
            records.append(record)
    return records


def cumulative_seconds(records: Sequence[dict[str, Any]]) -> list[float]:
    """Wall seconds of training behind each record of a train log, over all its resumes: each
    record's ``wall_seconds`` counts from its run's (or resume's) start, so a run ends where the next
    record has ``run_start`` (or, in logs written before that field, a lower count). Work after the
    last kept checkpoint of a cut-off run, dropped on resume, is not counted; neither are records
    written before ``wall_seconds`` was logged.

    >>> cumulative_seconds([{"wall_seconds": 10}, {"wall_seconds": 20}, {"wall_seconds": 5}, {}])
    [10.0, 20.0, 25.0, 25.0]
    >>> cumulative_seconds([{"wall_seconds": 1}, {"wall_seconds": 3, "run_start": True}])
    [1.0, 4.0]
    """
    elapsed, done, last = [], 0.0, 0.0
    for record in records:
        wall = float(record.get("wall_seconds", 0.0))
        if record.get("run_start") or wall < last:
            done += last
        last = wall
        elapsed.append(done + wall)
    return elapsed


def training_seconds(records: Sequence[dict[str, Any]]) -> float:
    """Wall seconds of training behind a whole train log (:func:`cumulative_seconds` of its last
    record).

    >>> training_seconds([{"wall_seconds": 10}, {"wall_seconds": 20}, {"wall_seconds": 5}, {}])
    25.0
    """
    elapsed = cumulative_seconds(records)
    return elapsed[-1] if elapsed else 0.0


def truncate_records(path: str | os.PathLike[str], last_step: int) -> None:
    """Drop the records of steps after ``last_step`` (those of a run being resumed from before)."""
    path = Path(path)
    if not path.is_file():
        return
    kept = [r for r in read_records(path) if r["step"] <= last_step]
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in kept), encoding="utf-8")
    tmp.replace(path)


def record_validation(exp: str | os.PathLike[str], validation: Validation) -> None:
    append_record(Path(exp) / VALID_LOG, asdict(validation))


def validations(exp: str | os.PathLike[str]) -> list[Validation]:
    """The validations of a run in step order (the last record of a step wins)."""
    by_step: dict[int, Validation] = {}
    for r in read_records(Path(exp) / VALID_LOG):
        try:
            by_step[r["step"]] = Validation(
                step=r["step"],
                epoch=int(r["epoch"]),
                loss=float(r["loss"]),
                wer=float(r["wer"]),
                cer=float(r["cer"]),
                utterances=int(r["utterances"]),
            )
        except (KeyError, TypeError, ValueError):
            continue
    return [by_step[s] for s in sorted(by_step)]


def prune(exp: str | os.PathLike[str], keep_last: int, keep_best: int, metric: str) -> None:
    """Delete model files that are neither among the ``keep_last`` newest nor the ``keep_best``
    best by ``metric``, and training states older than the ``keep_last`` newest."""
    steps = model_steps(exp)
    scores = {v.step: v.metric(metric) for v in validations(exp)}
    newest = set(steps[-keep_last:])
    scored = [s for s in steps if s in scores]
    best = set(sorted(scored, key=lambda s: (scores[s], -s))[:keep_best])
    for step in steps:
        if step not in newest:
            state_path(exp, step).unlink(missing_ok=True)
            if step not in best:
                model_path(exp, step).unlink(missing_ok=True)


def choose_checkpoints(
    exp: str | os.PathLike[str], mode: str, count: int, metric: str = "wer"
) -> list[Path]:
    """Model files to average: the ``count`` last, or the ``count`` best by ``metric``
    (lower is better), among the checkpoints still on disk; in step order.

    Raises:
        ExperimentError: no checkpoint, or fewer than ``count``.
    """
    on_disk = set(model_steps(exp))
    if not on_disk:
        raise ExperimentError(f"{exp}: no checkpoints in {Path(exp) / CHECKPOINT_DIR}")
    if mode == "last":
        scores = [(str(s), 0.0) for s in sorted(on_disk)]
    else:
        # ties (e.g. equal WER) go to the lower loss, then to the later step
        ranked = sorted(
            (v for v in validations(exp) if v.step in on_disk), key=lambda v: (v.loss, -v.step)
        )
        scores = [(str(v.step), v.metric(metric)) for v in ranked]
    if len(scores) < count:
        raise ExperimentError(
            f"{exp}: asked for the {mode} {count} checkpoints but only {len(scores)} are available"
        )
    names = select_checkpoints(scores, count, mode=mode, lower_is_better=True)
    return [model_path(exp, int(name)) for name in sorted(names, key=int)]


def average_checkpoints(paths: Sequence[str | os.PathLike[str]]) -> ModelBundle:
    """A model whose weights are the element-wise mean of the checkpoints' (same shape each);
    its vocabulary and front end are the last checkpoint's."""
    if not paths:
        raise ExperimentError("no checkpoints to average")
    bundles = [load_checkpoint(Path(p)) for p in paths]
    last = bundles[-1]
    for path, bundle in zip(paths, bundles):
        if bundle.model.cfg != last.model.cfg or bundle.vocab != last.vocab:
            raise ExperimentError(f"{path}: model or vocabulary differs from {paths[-1]}")
    averaged = average_state_dicts([b.model.state_dict() for b in bundles])
    last.model.load_state_dict(averaged)
    return last
