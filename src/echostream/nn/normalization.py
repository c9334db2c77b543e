"""Normalisation layers that are not in torch: global CMVN, Zipformer's BiasNorm."""

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


class BiasNorm(nn.Module):
    """Zipformer's LayerNorm replacement (Yao et al., ICLR 2024): no mean subtraction, a learned
    per-channel bias ``b`` inside the RMS and one learned scalar scale.

    ``y = x * exp(log_scale) / sqrt(mean_over_channels((x - b)^2) + eps)``; ``eps`` (1e-8) only
    keeps rows of zeros (padding) finite.

    x: (*, D) -> (*, D)

    >>> norm = BiasNorm(2)
    >>> norm(torch.tensor([[3.0, -3.0], [0.5, 0.5]]))
    tensor([[ 1., -1.],
            [ 1.,  1.]], grad_fn=<MulBackward0>)
    """

    def __init__(self, num_channels: int, eps: float = 1e-8) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(num_channels))
        self.log_scale = nn.Parameter(torch.zeros(()))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        rms = ((x - self.bias) ** 2).mean(dim=-1, keepdim=True).add(self.eps).sqrt()  # (*, 1)
        return x * (self.log_scale.exp() / rms)
