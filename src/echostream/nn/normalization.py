"""Normalisation layers that are not in torch: global CMVN."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class GlobalCMVN(nn.Module):
    """Global mean/variance normalisation of features: ``(x - mean) * istd``.

    x: (B, T, F) -> (B, T, F)
    """

    mean: Tensor
    istd: Tensor

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(num_features))
        self.register_buffer("istd", torch.ones(num_features))

    def forward(self, x: Tensor) -> Tensor:
        return (x - self.mean) * self.istd
