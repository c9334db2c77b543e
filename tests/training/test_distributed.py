"""Data-parallel training: two CPU processes under torchrun (gloo, loopback)."""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from echostream.models.checkpoint import load_checkpoint
from echostream.training import experiment as ex
from echostream.training.distributed import DistributedEnv, environment, has_unused_parameters

WORKER = Path(__file__).with_name("ddp_worker.py")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _worker_module():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("ddp_worker", WORKER)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_environment_reads_torchrun_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    assert environment() == DistributedEnv(rank=0, world_size=1, local_rank=0)
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    env = environment()
    assert env == DistributedEnv(rank=1, world_size=2, local_rank=1) and not env.is_main
    monkeypatch.setenv("RANK", "2")
    with pytest.raises(ValueError, match="outside"):
        environment()


def test_two_processes_average_gradients_and_train(
    tmp_path: Path, make_config: Callable[..., Path]
) -> None:
    """After backward both ranks hold the same gradient, equal to one process's gradient of the
    union batch; then `echostream train` under torchrun runs 4 steps and only rank 0 writes; a
    run cut off after step 2 resumes to the same steps 3 and 4 (each rank its own dropout RNG)."""
    config = make_config(tmp_path, {"max_steps": 4, "validation": {"every_steps": 2}})
    _torchrun(str(tmp_path), str(config))

    grads = [torch.load(tmp_path / f"grad{r}.pt", weights_only=True) for r in range(2)]
    worker = _worker_module()
    model = worker.tiny_model()
    x, x_lens, ys, ys_lens = worker.fixed_batch()
    model.loss(x, x_lens, ys, ys_lens, worker.CONTEXT).total.backward()
    assert not has_unused_parameters(model)
    for name, p in model.named_parameters():
        torch.testing.assert_close(grads[0][name], grads[1][name], rtol=0, atol=0, msg=name)
        torch.testing.assert_close(grads[0][name], p.grad, rtol=1e-4, atol=1e-6, msg=name)

    exp = tmp_path / "exp"
    assert [(tmp_path / f"exit{r}").read_text() for r in range(2)] == ["0", "0"]
    assert ex.resumable_steps(exp) == [2, 4]
    assert [r["step"] for r in ex.read_records(exp / ex.TRAIN_LOG)] == [1, 2, 3, 4]  # written once
    assert [v.step for v in ex.validations(exp)] == [2, 4]
    state = ex.load_state(ex.state_path(exp, 4))
    assert state["world_size"] == 2 and len(state["rng"]) == 2

    resumed = tmp_path / "resumed" / "exp"
    shutil.copytree(exp, resumed)
    for path in (ex.model_path(resumed, 4), ex.state_path(resumed, 4)):
        path.unlink()
    _torchrun(str(tmp_path / "resumed"), str(config), str(resumed), "--resume")
    def logged(folder: Path) -> list[dict[str, object]]:  # all but the wall-clock figures and where a run started
        return [
            {k: v for k, v in r.items() if k not in ("audio_per_second", "wall_seconds", "run_start")}
            for r in ex.read_records(folder / ex.TRAIN_LOG)
        ]

    assert logged(resumed) == logged(exp)
    assert ex.validations(resumed) == ex.validations(exp)
    a = load_checkpoint(ex.model_path(exp, 4)).model.state_dict()
    b = load_checkpoint(ex.model_path(resumed, 4)).model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def _torchrun(*args: str) -> None:
    """``WORKER *args`` as two processes under torchrun on the loopback interface."""
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--nnodes=1",
        "--master_addr=127.0.0.1", f"--master_port={_free_port()}", str(WORKER), *args,
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
