"""Checkpoint averaging: the element-wise mean of several checkpoints' weights."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def average_state_dicts(states: Sequence[dict[str, Tensor]]) -> dict[str, Tensor]:
    """Element-wise mean of floating-point tensors; other tensors (counters) come from the last.

    >>> a, b = {"w": torch.tensor([1.0, 3.0])}, {"w": torch.tensor([3.0, 5.0])}
    >>> average_state_dicts([a, b])["w"]
    tensor([2., 4.])
    """
    if not states:
        raise ValueError("nothing to average")
    keys = list(states[0])
    for i, s in enumerate(states[1:], 1):
        if list(s) != keys:
            missing = sorted(set(keys) ^ set(s))
            raise ValueError(f"checkpoint {i} has different tensors (e.g. {missing[0]!r})")
    out: dict[str, Tensor] = {}
    for key in keys:
        tensors = [s[key] for s in states]
        if any(t.shape != tensors[0].shape for t in tensors):
            raise ValueError(f"tensor {key!r} differs in shape between checkpoints")
        if tensors[0].is_floating_point():
            total = torch.zeros_like(tensors[0], dtype=torch.float64)
            for t in tensors:
                total += t.to(torch.float64)
            out[key] = (total / len(tensors)).to(tensors[0].dtype)
        else:
            out[key] = tensors[-1].clone()
    return out


def select_checkpoints(
    scores: Sequence[tuple[str, float]], count: int, mode: str = "best", lower_is_better: bool = True
) -> list[str]:
    """Names of the ``count`` checkpoints to average: the last ones, or the best by a metric.

    ``scores`` lists (name, validation metric) in training order.

    >>> select_checkpoints([("a", 0.3), ("b", 0.1), ("c", 0.2)], 2)
    ['b', 'c']
    >>> select_checkpoints([("a", 0.3), ("b", 0.1), ("c", 0.2)], 2, mode="last")
    ['b', 'c']
    """
    if count <= 0:
        raise ValueError(f"count must be positive, got {count}")
    if mode == "last":
        return [name for name, _ in scores[-count:]]
    if mode != "best":
        raise ValueError(f"mode must be 'best' or 'last', got {mode!r}")
    ranked = sorted(scores, key=lambda item: item[1] if lower_is_better else -item[1])[:count]
    chosen = {name for name, _ in ranked}
    return [name for name, _ in scores if name in chosen]
