"""Data-parallel training across processes: torchrun's environment, the process group, and the
loss module that DistributedDataParallel wraps.

``torchrun --nproc_per_node=N -m echostream.cli.main train ...`` starts N processes and sets
``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``; :func:`environment`
reads them (a plain ``echostream train`` is rank 0 of 1). The backend is gloo on CPU and nccl on
GPU. Each rank trains on its share of the batches (``DurationBucketSampler(rank, world_size)``);
gradients are averaged across ranks after each backward pass.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from echostream.encoders.base import ChunkContext
from echostream.models.asr import ASRModel
from echostream.runtime import resolve_device


@dataclass(frozen=True)
class DistributedEnv:
    """This process's place among the training processes."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Rank 0 alone writes checkpoints and logs."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def environment() -> DistributedEnv:
    """The torchrun environment of this process (rank 0 of 1 without torchrun).

    Raises:
        ValueError: the variables are malformed.
    """
    try:
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local_rank = int(os.environ.get("LOCAL_RANK", str(rank)))
    except ValueError:
        raise ValueError("RANK, WORLD_SIZE and LOCAL_RANK must be integers") from None
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"RANK {rank} is outside WORLD_SIZE {world_size}")
    return DistributedEnv(rank=rank, world_size=world_size, local_rank=local_rank)


def training_device(choice: str, env: DistributedEnv) -> torch.device:
    """``auto``: this rank's GPU when there is one, else the CPU; or ``cpu`` / ``cuda``."""
    if choice == "cpu" or (choice == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    resolve_device("cuda")  # a one-line DeviceError when there is none
    return torch.device("cuda", env.local_rank % torch.cuda.device_count())


def init_process_group(env: DistributedEnv, device: torch.device) -> bool:
    """Join the other ranks (gloo on CPU, nccl on GPU); False when there is nothing to join or
    the group exists already."""
    if not env.distributed or dist.is_initialized():
        return False
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(
        backend="nccl" if device.type == "cuda" else "gloo",
        rank=env.rank,
        world_size=env.world_size,
    )
    return True


def close_process_group() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def broadcast_object(value: Any, env: DistributedEnv) -> Any:
    """Rank 0's ``value`` on every rank."""
    if not env.distributed:
        return value
    holder = [value]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]


def gather_objects(value: Any, env: DistributedEnv) -> list[Any]:
    """Every rank's ``value``, in rank order, on every rank."""
    if not env.distributed:
        return [value]
    out: list[Any] = [None] * env.world_size
    dist.all_gather_object(out, value)
    return out


def sum_over_ranks(value: float, env: DistributedEnv) -> float:
    if not env.distributed:
        return value
    t = torch.tensor([value], dtype=torch.float64)
    dist.all_reduce(t)
    return float(t.item())


def barrier(env: DistributedEnv) -> None:
    if env.distributed:
        dist.barrier()


class LossModule(nn.Module):
    """``ASRModel.loss`` as a module's forward, so that DistributedDataParallel sees the call.

    Returns the loss and its parts as a dict of scalars (parts whose weight is 0 are absent). An
    empty batch (B = 0: every utterance of it was unreadable) gives a zero loss that still touches
    every parameter, so that all ranks take part in the gradient all-reduce.
    """

    def __init__(self, model: ASRModel) -> None:
        super().__init__()
        self.model = model

    def forward(
        self,
        feats: Tensor,
        feat_lens: Tensor,
        tokens: Tensor,
        token_lens: Tensor,
        context: ChunkContext,
    ) -> dict[str, Tensor]:
        """feats (B, T, F), feat_lens (B,), tokens (B, S) padded with -1, token_lens (B,)."""
        if feats.shape[0] == 0:
            zero = sum(
                (p.sum() * 0.0 for p in self.model.parameters()),
                torch.zeros((), device=feats.device),
            )
            return {"total": zero}
        out = self.model.loss(feats, feat_lens, tokens, token_lens, context)
        parts = {
            "total": out.total,
            "ctc": out.ctc,
            "attention": out.attention,
            "attention_l2r": out.attention_l2r,
            "attention_r2l": out.attention_r2l,
        }
        return {name: value for name, value in parts.items() if value is not None}


def has_unused_parameters(model: ASRModel) -> bool:
    """Whether some parameters get no gradient from the loss (a decoder direction weighted 0)."""
    decoder, loss = model.cfg.decoder, model.cfg.loss
    if decoder is None:
        return False
    return loss.ctc_weight == 1.0 or (decoder.bidirectional and loss.reverse_weight == 0.0)


def wrap(model: ASRModel, env: DistributedEnv, device: torch.device) -> nn.Module:
    """The module the training step calls: the loss module, data-parallel across ranks.

    DistributedDataParallel broadcasts rank 0's parameters and buffers (CMVN included) to every
    rank here, so all ranks start from the same weights.
    """
    module = LossModule(model)
    if not env.distributed:
        return module
    return nn.parallel.DistributedDataParallel(
        module,
        device_ids=[device.index] if device.type == "cuda" else None,
        find_unused_parameters=has_unused_parameters(model),
    )
