"""SpecAugment: random frequency and time masks on features (training only)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True, kw_only=True)
class SpecAugmentConfig:
    """``freq_masks`` masks of up to ``max_freq`` bins, ``time_masks`` of up to ``max_time`` frames
    (each time mask at most ``max_time_ratio`` of the utterance)."""

    freq_masks: int = 2
    max_freq: int = 27
    time_masks: int = 2
    max_time: int = 100
    max_time_ratio: float = 0.2

    def __post_init__(self) -> None:
        for name in ("freq_masks", "max_freq", "time_masks", "max_time"):
            if getattr(self, name) < 0:
                raise ValueError(f"specaugment.{name} must be >= 0, got {getattr(self, name)}")
        if not 0 <= self.max_time_ratio <= 1:
            raise ValueError(f"specaugment.max_time_ratio must be in [0, 1], got {self.max_time_ratio}")


def spec_augment(x: Tensor, cfg: SpecAugmentConfig, generator: torch.Generator | None = None) -> Tensor:
    """Masked copy of one utterance's fbank: x (T, F) -> (T, F); masked values become 0.

    Applied to the raw fbank before the model's CMVN, as WeNet and ChunkFormer train.
    """
    t, f = x.shape
    keep = torch.ones(t, f, dtype=torch.bool)
    for _ in range(cfg.freq_masks):
        width = int(torch.randint(0, cfg.max_freq + 1, (1,), generator=generator))
        width = min(width, f)
        start = int(torch.randint(0, f - width + 1, (1,), generator=generator))
        keep[:, start : start + width] = False
    limit = min(cfg.max_time, int(t * cfg.max_time_ratio))
    for _ in range(cfg.time_masks):
        width = int(torch.randint(0, limit + 1, (1,), generator=generator))
        start = int(torch.randint(0, t - width + 1, (1,), generator=generator))
        keep[start : start + width, :] = False
    return x * keep.to(x.dtype)
