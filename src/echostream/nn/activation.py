"""Activations that are not in torch: Zipformer's SwooshR and SwooshL (Yao et al., ICLR 2024).

Both are ``softplus`` shifted and tilted so that they are close to zero-mean on a unit Gaussian
and never saturate to a constant slope of zero (a slope of -0.08 remains below the knee).
``softplus(z) = log(1 + exp(z))``, computed without overflow.

x: (*) -> (*)

At the knee the softplus term is ``log 2``: SwooshR(1) = 0.693147 - 0.08 - 0.313262 = 0.299886,
SwooshL(4) = 0.693147 - 0.32 - 0.035 = 0.338147; SwooshR's constant makes SwooshR(0) = 0.

>>> import torch
>>> [round(v, 5) for v in swoosh_r(torch.tensor([0.0, 1.0])).tolist()]
[0.0, 0.29989]
>>> round(swoosh_l(torch.tensor(4.0)).item(), 5)
0.33815
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def swoosh_r(x: Tensor) -> Tensor:
    """``log(1 + exp(x - 1)) - 0.08 x - 0.313261687`` (zero at x = 0)."""
    return F.softplus(x - 1.0) - 0.08 * x - 0.313261687


def swoosh_l(x: Tensor) -> Tensor:
    """``log(1 + exp(x - 4)) - 0.08 x - 0.035``."""
    return F.softplus(x - 4.0) - 0.08 * x - 0.035

