"""Zipformer-specific behaviour beyond the conformance suite: its formulas, the chunk-causal
reach, the context rules, the fixed-shape step and training."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from echostream.encoders.base import ChunkContext
from echostream.encoders.zipformer import ZipformerConfig, ZipformerEncoder
from echostream.nn.activation import swoosh_l, swoosh_r
from echostream.nn.normalization import BiasNorm

BINS = 20
TINY = ZipformerConfig(
    input_dim=BINS, downsampling_factors=(1, 2, 4, 2), encoder_dims=(16, 24, 32, 24), num_layers=(1, 2, 1, 1),
    attention_heads=(2, 2, 4, 2), feedforward_dims=(32, 48, 64, 48), cnn_module_kernels=(7, 5, 3, 5),
    query_head_dim=8, value_head_dim=4, max_relative_position=5, dropout_rate=0.0,
)


@pytest.fixture(scope="module")
def encoder() -> ZipformerEncoder:
    torch.manual_seed(0)
    model = ZipformerEncoder(TINY).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model


def test_swoosh_matches_its_definition() -> None:
    x = np.linspace(-20.0, 20.0, 101)
    expected_r = np.log1p(np.exp(x - 1.0)) - 0.08 * x - 0.313261687
    expected_l = np.log1p(np.exp(x - 4.0)) - 0.08 * x - 0.035
    t = torch.tensor(x, dtype=torch.float64)
    np.testing.assert_allclose(swoosh_r(t).numpy(), expected_r, rtol=0, atol=1e-12)
    np.testing.assert_allclose(swoosh_l(t).numpy(), expected_l, rtol=0, atol=1e-12)
    assert torch.isfinite(swoosh_r(torch.tensor([1e4, -1e4]))).all()  # no overflow


def test_bias_norm_matches_its_definition() -> None:
    norm = BiasNorm(5).double()
    with torch.no_grad():
        norm.bias.copy_(torch.tensor([0.5, -1.0, 0.0, 2.0, 0.1]))
        norm.log_scale.fill_(0.3)
    x = np.random.default_rng(0).standard_normal((3, 5))
    expected = x * math.exp(0.3) / np.sqrt(((x - norm.bias.detach().numpy()) ** 2).mean(-1, keepdims=True))
    np.testing.assert_allclose(norm(torch.tensor(x)).detach().numpy(), expected, rtol=1e-7)
    assert torch.isfinite(BiasNorm(4)(torch.zeros(2, 4))).all()  # padding rows stay finite


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"encoder_dims": (16, 24)}, "encoder_dims has 2 entries for 4 stacks"),
        ({"cnn_module_kernels": (7, 4, 3, 5)}, "must be odd"),
        ({"num_layers": (1, 0, 1, 1)}, "num_layers must be positive"),
        ({"input_dim": 5}, "at least 7"),
        ({"dropout_rate": 1.0}, "dropout_rate"),
    ],
)
def test_bad_shapes_are_refused(changes: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        dataclasses.replace(TINY, **changes)  # type: ignore[arg-type]


def test_contexts_it_cannot_honour_are_refused() -> None:
    encoder = ZipformerEncoder(ZipformerConfig())  # factors up to 8: multiples of 4 frames
    assert ZipformerConfig().granularity == 4
    encoder.check_context(ChunkContext(chunk=8, left=32, right=0))
    with pytest.raises(ValueError, match="chunk-causal: right_context must be 0, got 4"):
        encoder.check_context(ChunkContext(chunk=8, left=32, right=4))
    with pytest.raises(ValueError, match="multiples of 4 frames \\(160 ms\\), got 6 and 32"):
        encoder.init_state(1, ChunkContext(chunk=6, left=32, right=0))
    with pytest.raises(ValueError, match="got 8 and 10"):
        encoder.check_context(ChunkContext(chunk=8, left=10, right=0))
    encoder.check_context(ChunkContext.full(37))  # the full context training draws


def test_left_context_spans_the_same_time_at_every_stack(encoder: ZipformerEncoder) -> None:
    context = ChunkContext(chunk=4, left=8, right=0)  # 8 output frames = 16 frames at 50 Hz
    state = encoder.init_state(2, context)
    for stack, cache in zip(encoder.stacks, state.attn_caches):
        assert cache.shape[:3] == (len(stack.layers), 2, 16 // stack.factor)


@pytest.mark.parametrize("context", [ChunkContext(chunk=4, left=8, right=0), ChunkContext(chunk=2, left=0, right=0)])
def test_nothing_after_a_chunk_reaches_it(encoder: ZipformerEncoder, context: ChunkContext) -> None:
    """Output frames of chunk k depend on no feature after its last 50 Hz frame's window
    (features up to 4C(k+1) + 6), and those of chunk k+1 do."""
    g = torch.Generator().manual_seed(2)
    x = torch.randn(1, 200, BINS, generator=g)
    c = context.chunk
    for k in range(3):
        cut = 4 * c * (k + 1) + 7
        changed = x.clone()
        changed[:, cut:] = torch.randn(1, 200 - cut, BINS, generator=g)
        with torch.inference_mode():
            y, _ = encoder(x, torch.tensor([200]), context)
            z, _ = encoder(changed, torch.tensor([200]), context)
        done = (k + 1) * c
        assert torch.equal(y[:, :done], z[:, :done])
        assert not torch.allclose(y[:, done : done + c], z[:, done : done + c])


def test_fixed_shape_step_equals_the_forward(encoder: ZipformerEncoder) -> None:
    context = ChunkContext(chunk=4, left=8, right=0)
    c, chunks = context.chunk, 6
    frames = 4 * c * chunks + 7  # features of 6 whole chunks
    x = torch.randn(2, frames, BINS, generator=torch.Generator().manual_seed(4))
    with torch.inference_mode():
        y, _ = encoder(x, torch.tensor([frames, frames]), context)
        state = encoder.init_state(2, context)
        steps = []
        for k in range(chunks):
            out, state = encoder.step(x[:, 4 * c * k : 4 * c * (k + 1) + 7], state)
            assert out.shape == (2, c, encoder.output_size())
            steps.append(out)
    torch.testing.assert_close(torch.cat(steps, dim=1), y[:, : c * chunks], rtol=0, atol=1e-5)


def test_every_parameter_learns_under_full_and_limited_context(encoder: ZipformerEncoder) -> None:
    model = ZipformerEncoder(TINY).train()
    x = torch.randn(3, 150, BINS)
    lens = torch.tensor([150, 97, 40])
    for context in (ChunkContext.full(40), ChunkContext(chunk=2, left=4, right=0)):
        model.zero_grad()
        y, y_lens = model(x, lens, context)
        assert y_lens.tolist() == model.output_lengths(lens).tolist()
        (y ** 2).mean().backward()
        missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
        assert not missing
