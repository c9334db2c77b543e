"""Position-wise feed-forward block."""

from __future__ import annotations

from torch import Tensor, nn


def make_activation(name: str) -> nn.Module:
    """The activation named in a config (``swish``, ``relu``, ``gelu``)."""
    activations: dict[str, type[nn.Module]] = {"swish": nn.SiLU, "relu": nn.ReLU, "gelu": nn.GELU}
    if name not in activations:
        raise ValueError(f"unknown activation {name!r}; expected one of {sorted(activations)}")
    return activations[name]()


class FeedForward(nn.Module):
    """``w_2(dropout(act(w_1(x))))`` applied to every frame.

    Shape legend: ``*`` any leading dims, D model dim, H hidden units.
    x: (*, D) -> (*, D)
    """

    def __init__(self, d_model: int, hidden: int, dropout: float, activation: str) -> None:
        super().__init__()
        self.w_1 = nn.Linear(d_model, hidden)
        self.activation = make_activation(activation)
        self.dropout = nn.Dropout(dropout)
        self.w_2 = nn.Linear(hidden, d_model)

    def forward(self, x: Tensor) -> Tensor:
        return self.w_2(self.dropout(self.activation(self.w_1(x))))  # (*, D)
