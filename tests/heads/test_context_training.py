"""Limited-context training: the training forward is the inference computation, full context is a
ChunkContext, and the ContextSampler draws from its sets."""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from echostream.audio import load_audio
from echostream.encoders.base import ChunkContext
from echostream.encoders.chunkformer import ChunkFormerEncoder
from echostream.frontend import FbankConfig, compute_fbank
from echostream.heads.losses import LossConfig
from echostream.models.asr import ASRModel
from echostream.models.checkpoint import load_released_folder
from echostream.training.context import ContextSampler


def _streamed(encoder: ChunkFormerEncoder, x: torch.Tensor, context: ChunkContext, piece: int) -> torch.Tensor:
    """(T, F) fed to forward_chunk ``piece`` feature frames at a time -> (T', D)."""
    state = encoder.init_state(1, context)
    out = []
    for start in range(0, x.shape[0], piece):
        part = x[start : start + piece].unsqueeze(0)
        final = torch.tensor([start + piece >= x.shape[0]])
        y, y_lens, state = encoder.forward_chunk(part, torch.tensor([part.shape[1]]), state, final)
        out.append(y[0, : int(y_lens[0])])
    return torch.cat(out)


def _batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(5)
    x = torch.randn(3, 150, 20, generator=g)
    return x, torch.tensor([150, 101, 47]), torch.tensor([[2, 3, 4], [5, 6, -1], [3, -1, -1]]), torch.tensor([3, 2, 1])


@pytest.mark.parametrize("context", [ChunkContext(chunk=4, left=8, right=2), ChunkContext(chunk=3, left=5, right=0)])
def test_training_forward_is_the_inference_forward(
    make_tiny_asr: Callable[..., ASRModel], context: ChunkContext,
    record_property: Callable[[str, object], None],
) -> None:
    """Under autograd (dropout 0), the frames and the CTC loss of ``loss`` equal those of
    inference: every utterance streamed alone in odd-sized pieces under inference mode."""
    model = make_tiny_asr(loss=LossConfig(ctc_weight=1.0))
    x, x_lens, ys, ys_lens = _batch()
    y, y_lens = model.encode(x, x_lens, context)  # the call ASRModel.loss makes
    assert y.requires_grad
    out = model.loss(x, x_lens, ys, ys_lens, context)
    out.total.backward()
    assert all(p.grad is not None for p in model.encoder.layers.parameters())

    with torch.inference_mode():
        normed = model.cmvn(x)
        streamed = [_streamed(model.encoder, normed[b, : int(x_lens[b])], context, piece=37) for b in range(3)]
        log_probs = [model.ctc(s) for s in streamed]
    diff = max((y[b, : int(y_lens[b])] - s).abs().max().item() for b, s in enumerate(streamed))
    record_property("max_abs_diff", diff)
    assert [s.shape[0] for s in streamed] == y_lens.tolist() == model.encoder.output_lengths(x_lens).tolist()
    assert diff < 1e-5
    padded = torch.nn.utils.rnn.pad_sequence(log_probs, batch_first=True)
    ctc = F.ctc_loss(padded.transpose(0, 1), ys.clamp(min=0), y_lens, ys_lens, reduction="sum") / 3
    assert out.ctc is not None and abs(out.ctc.item() - ctc.item()) < 1e-4


def test_full_context_is_unrestricted_attention(
    make_tiny_asr: Callable[..., ASRModel], record_property: Callable[[str, object], None]
) -> None:
    """One chunk per utterance equals a small chunk whose windows reach over everything, and an
    utterance's frames do not depend on its batch mates."""
    encoder = make_tiny_asr().encoder
    x, x_lens, _, _ = _batch()
    longest = int(encoder.output_lengths(x_lens).max())
    with torch.no_grad():
        full, lens = encoder(x, x_lens, ChunkContext.full(longest))
        windows, _ = encoder(x, x_lens, ChunkContext(chunk=3, left=longest, right=longest))
        limited, _ = encoder(x, x_lens, ChunkContext(chunk=3, left=2, right=1))
        alone, _ = encoder(x[2:, :47], x_lens[2:], ChunkContext.full(int(lens[2])))
    diff = max(
        (full[b, : int(n)] - windows[b, : int(n)]).abs().max().item() for b, n in enumerate(lens.tolist())
    )
    record_property("max_abs_diff", diff)
    assert diff < 1e-5
    assert torch.allclose(full[2, : int(lens[2])], alone[0], atol=1e-5)
    assert not torch.allclose(full[0, : int(lens[0])], limited[0, : int(lens[0])], atol=1e-3)


def test_full_context_matches_the_reference_full_attention(fixture_dir: Path) -> None:
    """Frames of chunkformer 1.2.2's full-context forward (``chunk_size=0``) on a masked batch of
    utt0/utt3/utt2, computed offline (all frames agreed to 2e-6)."""
    ref_utt2 = [[-0.35621, 0.07536, -1.22302, 0.77522, -0.26491],
                [-0.78059, 0.82294, -1.48936, 0.82305, -0.24456],
                [-0.37404, 1.27130, -1.87212, 0.76093, -0.37913]]  # frames 0, 3, 6
    ref_utt3 = [[-0.66271, 0.40795, -1.31827, 0.69648, 0.10370],
                [-0.64874, 0.78222, -1.59498, 0.58665, -0.28908],
                [-0.61891, 1.10849, -1.24071, 0.95697, -0.24760]]  # frames 0, 25, 51
    model = load_released_folder(fixture_dir / "model").model
    feats = [
        torch.from_numpy(compute_fbank(load_audio(fixture_dir / "audio" / name), FbankConfig()))
        for name in ("utt0.wav", "utt3.wav", "utt2.wav")
    ]
    x = torch.nn.utils.rnn.pad_sequence(feats, batch_first=True)
    x_lens = torch.tensor([f.shape[0] for f in feats])
    with torch.inference_mode():
        y, y_lens = model.encode(x, x_lens, ChunkContext.full(int(model.encoder.output_lengths(x_lens).max())))
    assert y_lens.tolist() == [41, 52, 7]
    assert torch.allclose(y[2, [0, 3, 6], :5], torch.tensor(ref_utt2), atol=1e-4)
    assert torch.allclose(y[1, [0, 25, 51], :5], torch.tensor(ref_utt3), atol=1e-4)


def test_sampler_draws_from_its_sets() -> None:
    sampler = ContextSampler(chunk_sizes=(None, 4, 8), left_sizes=(0, 16), right_sizes=(0, 2, 6))
    rng = random.Random(0)
    drawn = [sampler.draw(rng, max_frames=30) for _ in range(300)]
    assert ChunkContext(chunk=32, left=0, right=0) in drawn  # full context: 30 frames, rounded up to 16s
    limited = [c for c in drawn if c.chunk != 32]
    assert {c.chunk for c in limited} == {4, 8}
    assert {c.left for c in limited} == {0, 16} and {c.right for c in limited} == {0, 2, 6}
    again = [sampler.draw(random.Random(0), max_frames=30) for _ in range(1)]
    assert again == drawn[:1]  # the caller's generator is the only randomness


def test_sampler_right_below_chunk() -> None:
    sampler = ContextSampler(chunk_sizes=(2, 8), left_sizes=(4,), right_sizes=(0, 4), right_below_chunk=True)
    rng = random.Random(1)
    for context in (sampler.draw(rng, max_frames=10) for _ in range(100)):
        assert context.right < context.chunk


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"chunk_sizes": ()}, "chunk_sizes is empty"),
        ({"chunk_sizes": (0,)}, "positive or None"),
        ({"left_sizes": (-1,)}, ">= 0"),
        ({"chunk_sizes": (2,), "right_sizes": (4,), "right_below_chunk": True}, "below chunk size 2"),
    ],
)
def test_sampler_rejects_bad_sets(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ContextSampler(**kwargs)  # type: ignore[arg-type]


def test_full_context_of_empty_batch_is_valid() -> None:
    assert ChunkContext.full(0) == ChunkContext(chunk=16, left=0, right=0)
    assert ChunkContext.full(17).chunk == 32  # a multiple of 16: every encoder can run it
