"""Transcribe many inputs on a Ray cluster (the ``ray`` extra).

Each worker is a Ray actor that loads the model once and transcribes lots of inputs (a few files
each); the driver keeps every worker busy with one lot, and hands each transcript to a callback
the moment its lot is back, so outputs are written as they come, as in a local run. A lot that
fails (a worker that died twice, an error inside it) is reported input by input and the others go
on. Inputs are paths every worker can read (a shared file system), the model a name, folder or
file every worker can load.

    >>> run_on_ray(files, RayJob(model="default", workers=2), on_result=print)  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from echostream.extras import require
from echostream.model import TranscribeOptions
from echostream.transcript import Transcript


@dataclass(frozen=True)
class RayJob:
    """Where and how: ``address`` None starts a local cluster of ``workers * threads`` CPUs (and
    stops it afterwards); otherwise it is an existing cluster's (``"auto"``, ``"ray://host:10001"``)."""

    model: str
    workers: int
    threads: int = 1  # torch threads (and Ray CPUs) per worker
    files_per_lot: int = 4
    address: str | None = None
    device: str = "cpu"
    options: TranscribeOptions = field(default_factory=TranscribeOptions)

    def __post_init__(self) -> None:
        for name in ("workers", "threads", "files_per_lot"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")


class _Worker:
    """The body of a Ray actor: one loaded model."""

    def __init__(self, model: str, device: str, threads: int) -> None:
        import torch

        from echostream.model import load_model

        torch.set_num_threads(threads)
        self.model = load_model(model, device=device)

    def transcribe(self, lot: list[tuple[int, str]], options: TranscribeOptions) -> list[tuple[int, Transcript]]:
        paths = [path for _, path in lot]
        return [(lot[i][0], t) for i, t in self.model.transcribe_iter(paths, options)]


def _named(transcript: Transcript, sent: str, source: str) -> Transcript:
    """``transcript`` under the name the caller gave its input."""
    error = transcript.error.replace(sent, source) if transcript.error else None
    return dataclasses.replace(transcript, source=source, error=error)


def _cause(err: BaseException) -> str:
    """The last non-empty line of an error: a RayTaskError's traceback ends with its cause."""
    text = str(err).strip()
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1].strip() if lines else type(err).__name__


def run_on_ray(
    files: Sequence[str],
    job: RayJob,
    on_result: Callable[[int, Transcript], None],
) -> None:
    """Transcribe ``files`` on ``job.workers`` Ray workers; ``on_result(index, transcript)`` for
    each (inputs of a failed lot get a Transcript with ``error`` set)."""
    require("ray", "transcribing on Ray")
    import ray

    # workers may start elsewhere: absolute paths for local files, the caller's names in results
    sent = [str(Path(f).resolve()) if Path(f).exists() else f for f in files]
    model = str(Path(job.model).resolve()) if Path(job.model).exists() else job.model
    started = not ray.is_initialized()
    if started:
        cpus = None if job.address else job.workers * job.threads
        ray.init(address=job.address, num_cpus=cpus, include_dashboard=False, log_to_driver=False,
                 configure_logging=False)
    try:
        actor = ray.remote(num_cpus=job.threads, max_restarts=1, max_task_retries=1)(_Worker)
        workers = [actor.remote(model, job.device, job.threads) for _ in range(job.workers)]  # type: ignore[attr-defined]
        indexed = list(enumerate(sent))
        lots = [indexed[i : i + job.files_per_lot] for i in range(0, len(indexed), job.files_per_lot)]
        pending: dict[Any, tuple[Any, list[tuple[int, str]]]] = {}
        todo = iter(lots)

        def give(worker: Any) -> None:
            lot = next(todo, None)
            if lot is not None:
                pending[worker.transcribe.remote(lot, job.options)] = (worker, lot)

        for worker in workers:
            give(worker)
        while pending:
            [ready], _ = ray.wait(list(pending), num_returns=1)
            worker, lot = pending.pop(ready)
            try:
                results = ray.get(ready)
            except Exception as err:  # noqa: BLE001 - a worker's failure is reported, the rest goes on
                problem = _cause(err)
                results = [(i, Transcript(source=path, error=f"{files[i]}: worker failed ({problem})"))
                           for i, path in lot]
            for index, transcript in results:
                on_result(index, _named(transcript, sent[index], files[index]))
            give(worker)
    finally:
        if started:
            ray.shutdown()
