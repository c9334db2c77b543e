"""Tests for echostream.encoders.chunkformer: the length contract, batch independence, and
streaming (``forward_chunk`` with carried state) == the masked full forward, on tiny random
encoders; long-form decoding of the fixture model independent of the block size.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import Tensor

import echostream
from echostream.audio import load_audio
from echostream.encoders.base import ChunkContext, stack_states
from echostream.encoders.chunkformer import ChunkFormerEncoder, ChunkFormerState
from echostream.frontend import compute_fbank

ATOL = 1e-5
CONTEXTS = [(4, 8, 4), (8, 16, 0), (2, 0, 3), (3, 5, 7)]  # (chunk, left, right)
VARIANTS = {
    "conformer": {},
    "no_conv": {"use_cnn_module": False},
    "no_macaron": {"macaron_style": False},
}
STATE_TENSORS = [f.name for f in dataclasses.fields(ChunkFormerState) if f.name != "context"]

EncoderFactory = Callable[..., ChunkFormerEncoder]


def _context(setting: tuple[int, int, int]) -> ChunkContext:
    chunk, left, right = setting
    return ChunkContext(chunk=chunk, left=left, right=right)


def _ctx_id(setting: tuple[int, int, int]) -> str:
    return "c{}_l{}_r{}".format(*setting)


def _expected_frames(num_features: int) -> int:
    return 0 if num_features < 15 else (num_features - 15) // 8 + 1


def _full(encoder: ChunkFormerEncoder, feats: Tensor, context: ChunkContext) -> Tensor:
    """One utterance (T, F) through the masked full forward -> (T', D)."""
    with torch.inference_mode():
        y, y_lens = encoder(feats[None], torch.tensor([feats.shape[0]]), context)
    return y[0, : int(y_lens[0])]


def _max_diff(a: Tensor, b: Tensor) -> float:
    return float((a - b).abs().max()) if a.numel() else 0.0


def _random_pieces(rng: random.Random, total: int) -> list[int]:
    """Piece sizes summing to ``total``: mostly tiny (1-3 frames, some empty), a few up to 300."""
    sizes: list[int] = []
    while sum(sizes) < total:
        roll = rng.random()
        if roll < 0.1:
            size = 0
        elif roll < 0.7:
            size = rng.randint(1, 3)
        elif roll < 0.9:
            size = rng.randint(4, 40)
        else:
            size = rng.randint(41, 300)
        sizes.append(min(size, total - sum(sizes)))
    return sizes


def _stream(
    encoder: ChunkFormerEncoder,
    feats: Tensor,
    context: ChunkContext,
    pieces: list[int],
    final_empty: bool = False,
) -> Tensor:
    """Feed (T, F) in pieces with carried state -> all emitted frames (T', D).

    The last piece is marked final, or, with ``final_empty``, an extra empty piece is.
    """
    state = encoder.init_state(1, context)
    outputs, pos = [], 0
    with torch.inference_mode():
        for i, size in enumerate(pieces):
            piece = feats[pos : pos + size]  # (size, F)
            pos += size
            final = i == len(pieces) - 1 and not final_empty
            y, y_lens, state = encoder.forward_chunk(
                piece[None], torch.tensor([size]), state, torch.tensor([final])
            )
            outputs.append(y[0, : int(y_lens[0])])
        if final_empty:
            empty = feats.new_zeros((1, 0, feats.shape[1]))
            y, y_lens, state = encoder.forward_chunk(empty, torch.tensor([0]), state, torch.tensor([True]))
            outputs.append(y[0, : int(y_lens[0])])
    assert pos == feats.shape[0]
    return torch.cat(outputs)


# ---------------------------------------------------------------------------------- contract


@pytest.mark.parametrize(
    "lengths",
    [[0], [14], [15], [16, 22, 23], [100, 0, 14, 15], [257, 31, 64]],
    ids=lambda lengths: "-".join(map(str, lengths)),
)
@pytest.mark.parametrize("setting", [(4, 8, 4), (8, 16, 0)], ids=_ctx_id)
def test_forward_shape_and_lengths(
    make_tiny_encoder: EncoderFactory, lengths: list[int], setting: tuple[int, int, int]
) -> None:
    encoder = make_tiny_encoder()
    torch.manual_seed(1)
    x = torch.randn(len(lengths), max(lengths), 20)  # (B, T, F)
    with torch.inference_mode():
        y, y_lens = encoder(x, torch.tensor(lengths), _context(setting))
    expected = [_expected_frames(n) for n in lengths]
    assert y_lens.tolist() == expected
    assert y.shape == (len(lengths), max(expected), 32)
    assert torch.isfinite(y).all()


def test_init_state_shapes(make_tiny_encoder: EncoderFactory) -> None:
    encoder = make_tiny_encoder()
    state = encoder.init_state(3, ChunkContext(chunk=4, left=8, right=2))
    n, heads, head_dim, reach = 2, 4, 8, 3
    assert state.feat_pending.shape == (3, 14, 20)
    assert state.pending.shape == state.pending_macaron.shape == state.pending_attn.shape == (n, 3, 0, 32)
    assert state.pending_gated.shape == (n, 3, 0, 32)
    assert state.pending_kv.shape == (n, 3, 0, heads, 2 * head_dim)
    assert state.kv_lens.shape == state.attn_lens.shape == (n, 3)
    assert state.att_cache.shape == (n, 3, 8, heads, 2 * head_dim)
    assert state.conv_cache.shape == (n, 3, reach, 32)
    assert state.offset.shape == state.pending_lens.shape == (n, 3)
    assert state.frames_emitted.tolist() == [0, 0, 0]


@pytest.mark.parametrize("setting", CONTEXTS, ids=_ctx_id)
def test_batch_independence(make_tiny_encoder: EncoderFactory, setting: tuple[int, int, int]) -> None:
    """An utterance's frames are the same alone and padded into a batch of other lengths."""
    encoder = make_tiny_encoder()
    context = _context(setting)
    torch.manual_seed(2)
    lengths = [137, 40, 15, 290, 9, 64]
    utterances = [torch.randn(n, 20) for n in lengths]
    x = torch.nn.utils.rnn.pad_sequence(utterances, batch_first=True, padding_value=7.0)
    with torch.inference_mode():
        y, y_lens = encoder(x, torch.tensor(lengths), context)
    for b, feats in enumerate(utterances):
        alone = _full(encoder, feats, context)
        assert int(y_lens[b]) == alone.shape[0]
        torch.testing.assert_close(y[b, : alone.shape[0]], alone, atol=ATOL, rtol=0)


# ---------------------------------------------------------------------------------- streaming


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("setting", CONTEXTS, ids=_ctx_id)
def test_streaming_equals_masked_forward(
    make_tiny_encoder: EncoderFactory,
    setting: tuple[int, int, int],
    variant: str,
    request: pytest.FixtureRequest,
    record_property: Callable[[str, object], None],
) -> None:
    encoder = make_tiny_encoder(**VARIANTS[variant])
    context = _context(setting)
    rng = random.Random(f"{setting}{variant}")
    torch.manual_seed(3)
    worst = 0.0
    for total in (rng.randint(150, 700), rng.randint(15, 60)):
        feats = torch.randn(total, 20)
        full = _full(encoder, feats, context)
        schedules = {
            "random": _random_pieces(rng, total),
            "random, empty final piece": _random_pieces(rng, total),
            "one frame at a time": [1] * min(total, 120) + ([total - 120] if total > 120 else []),
            "whole": [total],
        }
        for name, pieces in schedules.items():
            streamed = _stream(encoder, feats, context, pieces, final_empty="empty final" in name)
            assert streamed.shape == full.shape, f"{name}: {len(pieces)} pieces"
            diff = _max_diff(streamed, full)
            worst = max(worst, diff)
            assert diff <= ATOL, f"{name} ({len(pieces)} pieces, T={total}): max |diff| {diff:.3g}"
    record_property("max_abs_diff", worst)


@pytest.mark.parametrize("setting", [(4, 8, 4), (3, 5, 7), (2, 0, 3)], ids=_ctx_id)
def test_streaming_computes_every_frame_once(
    make_tiny_encoder: EncoderFactory, monkeypatch: pytest.MonkeyPatch, setting: tuple[int, int, int]
) -> None:
    """Fed in small pieces, each layer projects every frame to keys/values once and attends
    every chunk once: look-ahead work is kept, not recomputed."""
    encoder = make_tiny_encoder()
    context = _context(setting)
    kv_rows = {id(layer): 0 for layer in encoder.layers}
    attended = {id(layer): 0 for layer in encoder.layers}
    for layer in encoder.layers:
        key_values, attend = layer.key_values, layer.attend

        def counted_kv(x: Tensor, _layer: object = layer, _f: Callable[..., object] = key_values) -> object:
            kv_rows[id(_layer)] += x.shape[0]
            return _f(x)

        def counted_attend(x: Tensor, *args: Tensor, _layer: object = layer, _f: Callable[..., object] = attend) -> object:
            attended[id(_layer)] += x.shape[0]
            return _f(x, *args)

        monkeypatch.setattr(layer, "key_values", counted_kv)
        monkeypatch.setattr(layer, "attend", counted_attend)
    torch.manual_seed(8)
    feats = torch.randn(407, 20)
    pieces = _random_pieces(random.Random(4), feats.shape[0])
    frames = _stream(encoder, feats, context, pieces).shape[0]
    assert frames == _expected_frames(feats.shape[0])
    assert list(kv_rows.values()) == [frames] * len(encoder.layers)
    assert list(attended.values()) == [-(-frames // context.chunk)] * len(encoder.layers)


@pytest.mark.parametrize("setting", [(4, 8, 4), (8, 16, 0), (3, 5, 7)], ids=_ctx_id)
def test_batched_streams_equal_each_alone(
    make_tiny_encoder: EncoderFactory, setting: tuple[int, int, int]
) -> None:
    """Streams of different lengths, fed different piece sizes, joining late and finishing at
    different calls, batched in each forward_chunk call, give the frames of each alone."""
    encoder = make_tiny_encoder()
    context = _context(setting)
    rng = random.Random(4)
    torch.manual_seed(4)
    lengths = [400, 35, 230, 16, 120]
    start_call = [0, 0, 2, 5, 9]  # a stream joins the batch at this call
    utterances = [torch.randn(n, 20) for n in lengths]
    pieces = [_random_pieces(rng, n) for n in lengths]
    states: dict[int, ChunkFormerState] = {}
    position = [0] * len(lengths)
    next_piece = [0] * len(lengths)
    outputs: dict[int, list[Tensor]] = {i: [] for i in range(len(lengths))}
    done: set[int] = set()
    call = 0
    with torch.inference_mode():
        while len(done) < len(lengths):
            for i in range(len(lengths)):
                if start_call[i] == call:
                    states[i] = encoder.init_state(1, context)
            active = [i for i in sorted(states) if i not in done]
            if not active:
                call += 1
                continue
            batch = []
            for i in active:
                size = pieces[i][next_piece[i]]
                batch.append(utterances[i][position[i] : position[i] + size])
                position[i] += size
                next_piece[i] += 1
            final = torch.tensor([next_piece[i] == len(pieces[i]) for i in active])
            x = torch.nn.utils.rnn.pad_sequence(batch, batch_first=True)  # (B, T, F)
            if x.shape[1] == 0:
                x = x.new_zeros((len(active), 0, 20))
            x_lens = torch.tensor([p.shape[0] for p in batch])
            y, y_lens, new_state = encoder.forward_chunk(
                x, x_lens, stack_states([states[i] for i in active]), final
            )
            for b, i in enumerate(active):
                outputs[i].append(y[b, : int(y_lens[b])])
                states[i] = new_state.select(b)
                if bool(final[b]):
                    done.add(i)
            call += 1
    for i, feats in enumerate(utterances):
        streamed, alone = torch.cat(outputs[i]), _full(encoder, feats, context)
        assert streamed.shape == alone.shape, f"stream {i}"
        assert _max_diff(streamed, alone) <= ATOL, f"stream {i}: max |diff| {_max_diff(streamed, alone):.3g}"


def _snapshot(state: ChunkFormerState) -> dict[str, Tensor]:
    return {name: getattr(state, name).clone() for name in STATE_TENSORS}


def _assert_state_equal(state: ChunkFormerState, snapshot: dict[str, Tensor]) -> None:
    for name, before in snapshot.items():
        after = getattr(state, name)
        assert after.shape == before.shape and torch.equal(after, before), name


def test_forward_chunk_leaves_the_old_state_alone(make_tiny_encoder: EncoderFactory) -> None:
    encoder = make_tiny_encoder()
    context = ChunkContext(chunk=4, left=8, right=4)
    torch.manual_seed(5)
    feats = torch.randn(2, 300, 20)
    state = encoder.init_state(2, context)
    with torch.inference_mode():
        for lo, hi in ((0, 37), (37, 41), (41, 150)):
            before = _snapshot(state)
            x_lens = torch.tensor([hi - lo, max(0, hi - lo - 3)])
            final = torch.tensor([False, False])
            first = encoder.forward_chunk(feats[:, lo:hi], x_lens, state, final)
            _assert_state_equal(state, before)
            # the same call from the same state gives the same result: nothing hidden changed
            again = encoder.forward_chunk(feats[:, lo:hi], x_lens, state, final)
            torch.testing.assert_close(again[0], first[0], atol=0, rtol=0)
            _assert_state_equal(again[2], _snapshot(first[2]))
            state = first[2]
        before = _snapshot(state)
        encoder.forward_chunk(feats[:, 150:], torch.tensor([150, 150]), state, torch.tensor([True, True]))
        _assert_state_equal(state, before)


def test_state_select_and_stack_round_trip(make_tiny_encoder: EncoderFactory) -> None:
    encoder = make_tiny_encoder()
    context = ChunkContext(chunk=4, left=8, right=4)
    torch.manual_seed(6)
    x = torch.randn(3, 90, 20)
    with torch.inference_mode():
        _, _, state = encoder.forward_chunk(
            x, torch.tensor([90, 50, 17]), encoder.init_state(3, context), torch.tensor([False] * 3)
        )
    assert state.pending_lens.sum() > 0 and state.feat_pending_lens.sum() > 0
    parts = [state.select(b) for b in range(3)]
    for b, part in enumerate(parts):
        assert part.context == context
        assert part.offset.shape == (2, 1)
        assert torch.equal(part.att_cache[:, 0], state.att_cache[:, b])
    _assert_state_equal(stack_states(parts), _snapshot(state))
    # re-ordered streams continue as before
    reordered = stack_states([parts[2], parts[0]])
    with torch.inference_mode():
        more = torch.randn(3, 40, 20)
        y, y_lens, _ = encoder.forward_chunk(more, torch.tensor([40] * 3), state, torch.tensor([True] * 3))
        y2, y2_lens, _ = encoder.forward_chunk(
            more[[2, 0]], torch.tensor([40, 40]), reordered, torch.tensor([True, True])
        )
    for b2, b in enumerate((2, 0)):
        assert int(y2_lens[b2]) == int(y_lens[b])
        torch.testing.assert_close(y2[b2, : y2_lens[b2]], y[b, : y_lens[b]], atol=ATOL, rtol=0)


def test_stack_states_refuses_mixed_or_no_states(make_tiny_encoder: EncoderFactory) -> None:
    encoder = make_tiny_encoder()
    a = encoder.init_state(1, ChunkContext(chunk=4, left=8, right=4))
    b = encoder.init_state(1, ChunkContext(chunk=4, left=8, right=0))
    with pytest.raises(ValueError, match="whose context differ"):
        stack_states([a, b])
    with pytest.raises(ValueError, match="at least one"):
        stack_states([])


# ---------------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    "kwargs, word",
    [
        ({"chunk": 0, "left": 8, "right": 4}, "chunk_size"),
        ({"chunk": -4, "left": 8, "right": 4}, "chunk_size"),
        ({"chunk": 4, "left": -1, "right": 4}, "left_context"),
        ({"chunk": 4, "left": 8, "right": -1}, "right_context"),
    ],
)
def test_chunk_context_validation(kwargs: dict[str, int], word: str) -> None:
    with pytest.raises(ValueError, match=word):
        ChunkContext(**kwargs)


def test_chunk_context_is_keyword_only_and_frozen() -> None:
    with pytest.raises(TypeError):
        ChunkContext(4, 8, 4)  # type: ignore[misc]
    context = ChunkContext(chunk=4, left=0, right=0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        context.chunk = 8  # type: ignore[misc]


@pytest.mark.parametrize(
    "overrides, word",
    [
        ({"output_size": 30}, "divisible"),
        ({"cnn_module_kernel": 8}, "odd"),
        ({"num_blocks": 0}, "num_blocks"),
        ({"attention_heads": -1}, "attention_heads"),
    ],
)
def test_encoder_config_validation(
    make_tiny_encoder: EncoderFactory, overrides: dict[str, int], word: str
) -> None:
    with pytest.raises(ValueError, match=word):
        make_tiny_encoder(**overrides)


# ---------------------------------------------------------------------------------- long form


@pytest.mark.parametrize("setting", [(4, 8, 4), (16, 32, 16)], ids=_ctx_id)
def test_longform_does_not_depend_on_block_size(
    fixture_model: echostream.Model,
    fixture_dir: Path,
    setting: tuple[int, int, int],
    record_property: Callable[[str, object], None],
) -> None:
    """0.08 s is one encoder frame's hop: every block gives at most one chunk (often none)."""
    chunk, left, right = setting
    path = fixture_dir / "audio" / "long.wav"
    bundle = fixture_model.bundle
    feats = torch.from_numpy(compute_fbank(load_audio(path), bundle.fbank))  # (T, 80)
    with torch.inference_mode():
        log_probs, lens = bundle.model(feats[None], torch.tensor([feats.shape[0]]), _context(setting))
    masked = log_probs[0, : int(lens[0])].numpy()
    results = {
        seconds: fixture_model.ctc_log_probs(
            path, chunk_size=chunk, left_context=left, right_context=right, block_seconds=seconds
        )
        for seconds in (0.08, 0.37, 1.0, 30.0)
    }
    worst = 0.0
    for seconds, ours in results.items():
        assert ours.shape == masked.shape, f"blocks of {seconds} s"
        for other in (masked, results[30.0]):
            diff = float(np.abs(ours - other).max())
            worst = max(worst, diff)
            assert diff <= ATOL, f"blocks of {seconds} s: max |diff| {diff:.3g}"
    record_property("max_abs_diff", worst)


def test_longform_with_conv_reach_beyond_one_chunk(
    fixture_model: echostream.Model, fixture_dir: Path
) -> None:
    """The fixture model (kernel 15, so K = 7) with chunk 4 < right 8: blocks must not matter."""
    path = fixture_dir / "audio" / "utt3.wav"
    kwargs = {"chunk_size": 4, "left_context": 8, "right_context": 8}
    whole = fixture_model.ctc_log_probs(path, block_seconds=30.0, **kwargs)
    blocks = fixture_model.ctc_log_probs(path, block_seconds=0.3, **kwargs)
    assert whole.shape == blocks.shape
    np.testing.assert_allclose(blocks, whole, atol=ATOL, rtol=0)
