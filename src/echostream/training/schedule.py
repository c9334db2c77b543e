"""Learning-rate schedules: linear warm-up, then a decay."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True, kw_only=True)
class ScheduleConfig:
    """Warm up linearly to ``lr`` over ``warmup_steps``, then decay.

    ``decay``: ``"noam"`` (inverse square root of the step, as WeNet's WarmupLR), ``"cosine"`` (to
    ``min_lr`` at ``total_steps``) or ``"constant"``.
    """

    lr: float = 1e-3
    warmup_steps: int = 25000
    decay: str = "noam"
    total_steps: int = 0
    min_lr: float = 0.0

    def __post_init__(self) -> None:
        if not 0 < self.lr < math.inf:  # NaN too
            raise ValueError(f"schedule.lr must be a positive number, got {self.lr}")
        if not 0 <= self.min_lr < math.inf:
            raise ValueError(f"schedule.min_lr must be a number >= 0, got {self.min_lr}")
        if self.warmup_steps < 0:
            raise ValueError(f"schedule.warmup_steps must be >= 0, got {self.warmup_steps}")
        if self.decay not in ("noam", "cosine", "constant"):
            raise ValueError(f"schedule.decay {self.decay!r} is not noam, cosine or constant")
        if self.decay == "cosine" and self.total_steps <= self.warmup_steps:
            raise ValueError("schedule.total_steps must exceed warmup_steps for cosine decay")


def lr_at(cfg: ScheduleConfig, step: int) -> float:
    """The learning rate after ``step`` optimizer steps (step 0 is the first update).

    >>> cfg = ScheduleConfig(lr=1.0, warmup_steps=4, decay="noam")
    >>> [round(lr_at(cfg, s), 3) for s in (0, 1, 3, 15)]
    [0.25, 0.5, 1.0, 0.5]
    """
    n = step + 1
    if cfg.warmup_steps and n <= cfg.warmup_steps:
        return cfg.lr * n / cfg.warmup_steps
    if cfg.decay == "constant":
        return cfg.lr
    if cfg.decay == "noam":
        return cfg.lr * math.sqrt(max(cfg.warmup_steps, 1) / n)
    progress = min(1.0, (n - cfg.warmup_steps) / (cfg.total_steps - cfg.warmup_steps))
    return cfg.min_lr + (cfg.lr - cfg.min_lr) * 0.5 * (1 + math.cos(math.pi * progress))


def make_scheduler(optimizer: torch.optim.Optimizer, cfg: ScheduleConfig) -> torch.optim.lr_scheduler.LambdaLR:
    """A scheduler whose state (the step) round-trips through ``state_dict`` for exact resume.

    The optimizer's base learning rate is set to ``cfg.lr``.
    """
    for group in optimizer.param_groups:
        group["lr"] = cfg.lr
        group["initial_lr"] = cfg.lr
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_at(cfg, step) / cfg.lr)
