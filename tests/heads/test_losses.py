"""Training losses: label smoothing by hand, the CTC/attention/reverse weighting, and a tiny model
whose loss is finite and goes down."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F

from echostream.encoders.base import ChunkContext
from echostream.heads.losses import LossConfig, combine_losses, label_smoothing_loss
from echostream.models.asr import ASRModel

CONTEXT = ChunkContext(chunk=4, left=8, right=2)


def test_label_smoothing_matches_a_hand_computation() -> None:
    """V = 3, smoothing 0.1: the target gets 0.9, the two others 0.05 each."""
    p = [[0.7, 0.2, 0.1], [0.1, 0.6, 0.3], [0.3, 0.3, 0.4]]
    logits = torch.log(torch.tensor([p]))  # (1, 3, 3)
    targets = torch.tensor([[0, 2, -1]])  # the last position is padding
    q0 = [0.9, 0.05, 0.05]
    q1 = [0.05, 0.05, 0.9]
    kl0 = sum(q * math.log(q / pi) for q, pi in zip(q0, p[0]))
    kl1 = sum(q * math.log(q / pi) for q, pi in zip(q1, p[1]))
    by_batch = label_smoothing_loss(logits, targets, 0.1, length_normalized=False)
    by_length = label_smoothing_loss(logits, targets, 0.1, length_normalized=True)
    assert by_batch.item() == pytest.approx(kl0 + kl1, abs=1e-6)  # one sequence in the batch
    assert by_length.item() == pytest.approx((kl0 + kl1) / 2, abs=1e-6)  # two counted tokens
    # without smoothing it is the cross-entropy
    plain = label_smoothing_loss(logits, targets, 0.0, length_normalized=False)
    assert plain.item() == pytest.approx(-math.log(0.7) - math.log(0.3), abs=1e-6)


def test_label_smoothing_normalises_by_batch_size() -> None:
    logits = torch.randn(3, 5, 7)
    targets = torch.randint(0, 7, (3, 5))
    targets[1, 3:] = -1
    one_by_one = sum(label_smoothing_loss(logits[i : i + 1], targets[i : i + 1], 0.2, False) for i in range(3))
    assert torch.allclose(label_smoothing_loss(logits, targets, 0.2, False) * 3, torch.as_tensor(one_by_one))


def test_weights_combine_as_documented() -> None:
    ctc, l2r, r2l = torch.tensor(10.0), torch.tensor(4.0), torch.tensor(8.0)
    out = combine_losses(LossConfig(ctc_weight=0.3, reverse_weight=0.25), ctc, l2r, r2l)
    assert out.attention is not None and out.attention.item() == pytest.approx(0.75 * 4 + 0.25 * 8)
    assert out.total.item() == pytest.approx(0.3 * 10 + 0.7 * 5.0)
    assert (out.ctc, out.attention_l2r, out.attention_r2l) == (ctc, l2r, r2l)

    no_reverse = combine_losses(LossConfig(ctc_weight=0.5, reverse_weight=0.0), ctc, l2r, None)
    assert no_reverse.total.item() == pytest.approx(0.5 * 10 + 0.5 * 4)
    ctc_only = combine_losses(LossConfig(ctc_weight=1.0), ctc, None, None)
    assert ctc_only.total is ctc and ctc_only.attention is None
    attention_only = combine_losses(LossConfig(ctc_weight=0.0, reverse_weight=1.0), None, l2r, r2l)
    assert attention_only.total.item() == pytest.approx(8.0)
    with pytest.raises(ValueError, match="right-to-left"):
        combine_losses(LossConfig(ctc_weight=0.3, reverse_weight=0.3), ctc, l2r, None)


def _batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Features (3, 120, 20) of lengths 120/90/60 and targets padded with -1."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(3, 120, 20, generator=g)
    x_lens = torch.tensor([120, 90, 60])
    ys = torch.tensor([[2, 3, 4, 5], [6, 2, 2, -1], [4, -1, -1, -1]])
    return x, x_lens, ys, torch.tensor([4, 3, 1])


def test_loss_parts_are_what_the_model_computes(make_tiny_asr: Callable[..., ASRModel]) -> None:
    model = make_tiny_asr(loss=LossConfig(ctc_weight=0.4, reverse_weight=0.3, lsm_weight=0.1))
    x, x_lens, ys, ys_lens = _batch()
    with torch.no_grad():
        out = model.loss(x, x_lens, ys, ys_lens, CONTEXT)
        log_probs, lens = model(x, x_lens, CONTEXT)
        ctc = F.ctc_loss(log_probs.transpose(0, 1), ys.clamp(min=0), lens, ys_lens, reduction="sum") / 3
    assert out.ctc is not None and out.attention is not None
    assert out.attention_l2r is not None and out.attention_r2l is not None
    assert torch.allclose(out.ctc, ctc, atol=1e-4)
    assert torch.allclose(out.attention, 0.7 * out.attention_l2r + 0.3 * out.attention_r2l)
    assert torch.allclose(out.total, 0.4 * out.ctc + 0.6 * out.attention)


def test_loss_is_finite_and_goes_down(make_tiny_asr: Callable[..., ASRModel]) -> None:
    model = make_tiny_asr(seed=1).train()
    x, x_lens, ys, ys_lens = _batch()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(8):
        out = model.loss(x, x_lens, ys, ys_lens, CONTEXT)
        assert torch.isfinite(out.total)
        optimizer.zero_grad()
        out.total.backward()
        optimizer.step()
        losses.append(out.total.item())
    assert losses[-1] < 0.7 * losses[0], losses
    grads = [p.grad for p in model.decoder.parameters()] if model.decoder is not None else []
    assert grads and all(g is not None for g in grads)


def test_loss_needs_a_decoder_for_attention(make_tiny_bundle: Callable[..., object]) -> None:
    bundle = make_tiny_bundle()
    model: ASRModel = bundle.model  # type: ignore[attr-defined]
    x, x_lens, ys, ys_lens = _batch()
    with pytest.raises(ValueError, match="no attention decoder"):
        model.loss(x, x_lens, ys, ys_lens, CONTEXT)


@pytest.mark.parametrize(
    "kwargs, named",
    [({"ctc_weight": 1.5}, "ctc_weight"), ({"reverse_weight": -0.1}, "reverse_weight"),
     ({"lsm_weight": 1.0}, "lsm_weight")],
)
def test_loss_config_checks_its_values(kwargs: dict[str, float], named: str) -> None:
    with pytest.raises(ValueError, match=named):
        LossConfig(**kwargs)  # type: ignore[arg-type]
