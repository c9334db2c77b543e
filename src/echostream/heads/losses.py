"""Training losses of the hybrid CTC / attention model and how they are combined.

``total = ctc_weight * ctc + (1 - ctc_weight) * attention`` with
``attention = (1 - reverse_weight) * attention_l2r + reverse_weight * attention_r2l``.
Both CTC and the attention losses are summed over the batch and divided by the batch size; with
``length_normalized_loss`` the attention losses are divided by the number of target tokens
(``<eos>`` included) instead.

Shape legend: B batch, T' encoder frames, V vocabulary, S target tokens, U = S + 1.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from echostream.heads.attention_decoder import IGNORE_ID


@dataclass(frozen=True, kw_only=True)
class LossConfig:
    """Loss weights (names follow the released ``model_conf``)."""

    ctc_weight: float = 0.3
    reverse_weight: float = 0.0
    lsm_weight: float = 0.1
    length_normalized_loss: bool = False

    def __post_init__(self) -> None:
        for name in ("ctc_weight", "reverse_weight"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"model_conf.{name} must be in [0, 1], got {getattr(self, name)}")
        if not 0.0 <= self.lsm_weight < 1.0:
            raise ValueError(f"model_conf.lsm_weight must be in [0, 1), got {self.lsm_weight}")


@dataclass(frozen=True)
class LossOutput:
    """The training loss and its parts (None for a part whose weight is 0)."""

    total: Tensor  # ()
    ctc: Tensor | None  # ()
    attention: Tensor | None  # () (1 - reverse_weight) * attention_l2r + reverse_weight * attention_r2l
    attention_r2l: Tensor | None  # ()
    attention_l2r: Tensor | None = None  # ()


def ctc_loss(log_probs: Tensor, lens: Tensor, ys: Tensor, ys_lens: Tensor, blank_id: int) -> Tensor:
    """CTC negative log-likelihood summed over the batch and divided by the batch size.

    Args:
        log_probs: (B, T', V), lens: (B,); ys: (B, S) padded with ``IGNORE_ID``, ys_lens: (B,).
    An utterance too short for its targets contributes 0 (``zero_infinity``).
    """
    targets = ys.masked_fill(ys == IGNORE_ID, blank_id)  # padding is ignored by length anyway
    loss = F.ctc_loss(
        log_probs.transpose(0, 1).float(),  # (T', B, V)
        targets,
        lens,
        ys_lens,
        blank=blank_id,
        reduction="sum",
        zero_infinity=True,
    )
    return loss / log_probs.shape[0]


def label_smoothing_loss(
    logits: Tensor, targets: Tensor, smoothing: float, length_normalized: bool
) -> Tensor:
    """KL divergence from a label-smoothed target distribution to the model's.

    The target distribution puts ``1 - smoothing`` on the target token and spreads ``smoothing``
    evenly over the ``V - 1`` others. Positions whose target is ``IGNORE_ID`` do not count. The
    sum is divided by the batch size, or by the number of counted positions when
    ``length_normalized``.

    Args:
        logits: (B, U, V), targets: (B, U).

    >>> logits = torch.log(torch.tensor([[[0.7, 0.2, 0.1]]]))
    >>> round(label_smoothing_loss(logits, torch.tensor([[0]]), 0.0, False).item(), 4)  # -log 0.7
    0.3567
    """
    b, _, v = logits.shape
    log_probs = torch.log_softmax(logits.float(), dim=-1)  # (B, U, V)
    valid = targets != IGNORE_ID  # (B, U)
    true_dist = torch.full_like(log_probs, smoothing / (v - 1))
    true_dist = true_dist.scatter(-1, targets.clamp(min=0).unsqueeze(-1), 1.0 - smoothing)  # (B, U, V)
    kl = torch.xlogy(true_dist, true_dist) - true_dist * log_probs  # (B, U, V)
    total = (kl.sum(-1) * valid).sum()
    if length_normalized:
        return total / valid.sum().clamp(min=1)
    return total / b


def combine_losses(
    cfg: LossConfig,
    ctc: Tensor | None,
    attention_l2r: Tensor | None,
    attention_r2l: Tensor | None,
) -> LossOutput:
    """Weight the parts as the module docstring says; a part with weight > 0 must be given."""
    attention = None
    if cfg.ctc_weight < 1.0:
        if attention_l2r is None:
            raise ValueError("ctc_weight < 1 needs the left-to-right attention loss")
        attention = attention_l2r
        if cfg.reverse_weight > 0.0:
            if attention_r2l is None:
                raise ValueError("reverse_weight > 0 needs the right-to-left attention loss")
            attention = (1.0 - cfg.reverse_weight) * attention_l2r + cfg.reverse_weight * attention_r2l
    if cfg.ctc_weight > 0.0 and ctc is None:
        raise ValueError("ctc_weight > 0 needs the CTC loss")
    if attention is None:
        assert ctc is not None
        total = ctc
    elif cfg.ctc_weight == 0.0 or ctc is None:
        total = attention
    else:
        total = cfg.ctc_weight * ctc + (1.0 - cfg.ctc_weight) * attention
    return LossOutput(
        total=total,
        ctc=ctc,
        attention=attention,
        attention_r2l=attention_r2l,
        attention_l2r=attention_l2r,
    )
