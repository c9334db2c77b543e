"""The tensor-only ChunkFormer graphs (whole utterance, pipelined step) equal ``forward``."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F

from echostream.encoders.base import ChunkContext
from echostream.encoders.chunkformer import ChunkFormerEncoder
from echostream.encoders.chunkformer_graph import (
    NOT_ENDED,
    ChunkFormerStep,
    Subsampling,
    WholeUtterance,
)

CONTEXTS = [
    ChunkContext(chunk=4, left=8, right=4),
    ChunkContext(chunk=3, left=5, right=2),
    ChunkContext(chunk=4, left=4, right=0),
    ChunkContext(chunk=2, left=3, right=7),  # right context past the next chunk
]
TOLERANCE = 1e-5


def _ids(context: ChunkContext) -> str:
    return "c{}_l{}_r{}".format(*context.as_tuple())


def run_steps(step: ChunkFormerStep, x: torch.Tensor, x_lens: torch.Tensor) -> torch.Tensor:
    """Every frame of streams ``x`` (B, T, F) through ``step``, the end told on the step whose
    window first reaches it, then flushed; -> (B, frames, D) aligned with ``forward``."""
    geo = step.geometry
    end = step.encoder.output_lengths(x_lens)
    steps = -(-(int(end.max()) + geo.delay) // geo.step_frames)
    need = (steps - 1) * geo.feature_hop + geo.feature_frames
    valid = torch.arange(x.shape[1]) < x_lens.unsqueeze(1)
    feats = F.pad(x * valid.unsqueeze(-1), (0, 0, 0, max(0, need - x.shape[1])))
    state = step.init_state(x.shape[0])
    outputs = []
    for k in range(steps):
        window_end = k * geo.feature_hop + geo.feature_frames
        known = torch.where(x_lens <= window_end, x_lens, torch.full_like(x_lens, NOT_ENDED))  # feature frames
        y, *state = step(feats[:, k * geo.feature_hop : window_end], known, *state)
        outputs.append(y)
    return torch.cat(outputs, dim=1)[:, geo.delay :]


@pytest.mark.parametrize("context", CONTEXTS, ids=_ids)
def test_whole_utterance_equals_forward(
    make_tiny_encoder: Callable[..., ChunkFormerEncoder], context: ChunkContext, record_property: Callable[..., None]
) -> None:
    encoder = make_tiny_encoder(num_blocks=3)
    x, x_lens = torch.randn(2, 300, 20), torch.tensor([300, 171])
    with torch.no_grad():
        y, y_lens = encoder(x, x_lens, context)
        frames = Subsampling(encoder)(x)
        whole, whole_lens = WholeUtterance(encoder, context)(frames, encoder.output_lengths(x_lens))
    assert torch.equal(whole_lens, y_lens)
    assert whole.shape[1] % context.chunk == 0 and whole.shape[1] >= y.shape[1]
    diff = (whole[:, : y.shape[1]] - y).abs().max().item()
    record_property("max_abs_diff", diff)
    assert diff <= TOLERANCE
    assert not whole[1, int(y_lens[1]) :].any()  # zero past the length


def test_subsampling_in_pieces_equals_whole(make_tiny_encoder: Callable[..., ChunkFormerEncoder]) -> None:
    """Contiguous feature pieces cut at multiples of 8 (7 frames overlapping) give the same frames."""
    sub = Subsampling(make_tiny_encoder())
    x = torch.randn(2, 415, 20)
    with torch.no_grad():
        whole = sub(x)
        pieces = torch.cat([sub(x[:, 8 * s : 8 * (s + 10) + 7]) for s in range(0, whole.shape[1], 10)], dim=1)
    assert whole.shape == (2, (415 - 15) // 8 + 1, 32)
    assert torch.allclose(pieces, whole, atol=1e-6)


@pytest.mark.parametrize("chunks_per_step", [1, 3])
@pytest.mark.parametrize("context", CONTEXTS, ids=_ids)
def test_step_pipeline_equals_forward(
    make_tiny_encoder: Callable[..., ChunkFormerEncoder], context: ChunkContext, chunks_per_step: int,
    record_property: Callable[..., None],
) -> None:
    encoder = make_tiny_encoder(num_blocks=3)
    x, x_lens = torch.randn(2, 300, 20), torch.tensor([300, 171])
    step = ChunkFormerStep(encoder, context, chunks_per_step)
    with torch.no_grad():
        y, y_lens = encoder(x, x_lens, context)
        streamed = run_steps(step, x, x_lens)
    diff = (streamed[:, : y.shape[1]] - y).abs().max().item()
    record_property("max_abs_diff", diff)
    assert diff <= TOLERANCE
    assert not streamed[1, int(y_lens[1]) :].any()


def test_step_leaves_its_state_alone(make_tiny_encoder: Callable[..., ChunkFormerEncoder]) -> None:
    step = ChunkFormerStep(make_tiny_encoder(), ChunkContext(chunk=4, left=8, right=4), 2)
    state = [t + torch.rand_like(t.float()).to(t.dtype) for t in step.init_state(1)]
    before = [t.clone() for t in state]
    feats = torch.randn(1, step.geometry.feature_frames, 20)
    with torch.no_grad():
        step(feats, torch.tensor([NOT_ENDED]), *state)
    assert all(torch.equal(a, b) for a, b in zip(state, before, strict=True))


def test_step_rejects_no_chunks(make_tiny_encoder: Callable[..., ChunkFormerEncoder]) -> None:
    with pytest.raises(ValueError, match="chunks_per_step must be at least 1"):
        ChunkFormerStep(make_tiny_encoder(), ChunkContext(chunk=4, left=8, right=4), 0)
