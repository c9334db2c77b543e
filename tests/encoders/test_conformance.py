"""The contract every registered streaming encoder keeps (encoders/base.py), on random weights.

Parametrised over ``models.build.ENCODERS`` and several chunk/left/right settings: a newly
registered encoder must add a tiny shape to ``TINY`` (variants of one encoder, such as the
ConvEmformer, get entries of their own) and then passes or fails the same tests.
"""

from __future__ import annotations

import copy
import dataclasses
import random
from pathlib import Path

import pytest
import torch

from echostream.encoders.base import (
    OFFLINE_CONTEXT,
    ChunkContext,
    EncoderConfig,
    EncoderState,
    default_right_context,
    stack_states,
)
from echostream.encoders.chunkformer import ChunkFormerConfig
from echostream.encoders.emformer import EmformerConfig
from echostream.encoders.zipformer import ZipformerConfig
from echostream.frontend.fbank import FbankConfig
from echostream.models.asr import ASRModel, ASRModelConfig
from echostream.models.build import ENCODERS, build_encoder, build_model
from echostream.models.checkpoint import ModelBundle, load_checkpoint, save_checkpoint
from echostream.text.vocab import Vocabulary

BINS = 20
TOLERANCE = 1e-5
TINY: dict[str, EncoderConfig] = {
    "chunkformer": ChunkFormerConfig(
        input_dim=BINS, output_size=32, attention_heads=4, linear_units=64, num_blocks=2, cnn_module_kernel=7,
        dropout_rate=0.0, positional_dropout_rate=0.0, attention_dropout_rate=0.0,
    ),
    "emformer": EmformerConfig(
        input_dim=BINS, output_size=32, attention_heads=4, linear_units=64, num_blocks=3, memory_size=2,
        max_relative_position=6, dropout_rate=0.0, attention_dropout_rate=0.0,
    ),
    "emformer_conv": EmformerConfig(  # ConvEmformer: a causal convolution module per layer
        input_dim=BINS, output_size=32, attention_heads=4, linear_units=64, num_blocks=3, memory_size=2,
        max_relative_position=6, conv_kernel=5, dropout_rate=0.0, attention_dropout_rate=0.0,
    ),
    "zipformer": ZipformerConfig(
        input_dim=BINS, downsampling_factors=(1, 2, 4, 2), encoder_dims=(16, 24, 32, 24), num_layers=(1, 2, 1, 1),
        attention_heads=(2, 2, 4, 2), feedforward_dims=(32, 48, 64, 48), cnn_module_kernels=(7, 5, 3, 5),
        query_head_dim=8, value_head_dim=4, max_relative_position=5, dropout_rate=0.0,
    ),
}
SETTINGS = [
    ChunkContext(chunk=4, left=8, right=0),
    ChunkContext(chunk=3, left=5, right=2),
    ChunkContext(chunk=2, left=0, right=4),
    ChunkContext(chunk=8, left=16, right=8),
]
CAUSAL_SETTINGS = [  # a chunk-causal encoder: chunk and left in multiples of its coarsest stack (2 here)
    ChunkContext(chunk=4, left=8, right=0),
    ChunkContext(chunk=2, left=6, right=0),
    ChunkContext(chunk=6, left=0, right=0),
    ChunkContext(chunk=8, left=16, right=0),
]
SETTINGS_OF = {"zipformer": CAUSAL_SETTINGS}


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Every registered encoder, and with a ``context`` argument each setting it supports."""
    if "encoder" not in metafunc.fixturenames:
        return
    names = sorted(TINY)
    if "context" in metafunc.fixturenames:
        cases = [(n, c) for n in names for c in SETTINGS_OF.get(n, SETTINGS)]
        metafunc.parametrize(("encoder", "context"), cases, indirect=["encoder"],
                             ids=[f"{n}-c{c.chunk}l{c.left}r{c.right}" for n, c in cases])
    else:
        metafunc.parametrize("encoder", names, indirect=True)


def test_every_registered_encoder_is_covered() -> None:
    assert {cfg.type for cfg in TINY.values()} == set(ENCODERS)


@pytest.fixture(scope="module")
def encoder(request: pytest.FixtureRequest) -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_encoder(TINY[request.param]).eval()
    with torch.no_grad():  # constant-initialised biases and scales (position biases) would hide mistakes
        for p in model.parameters():
            if p.numel() > 1 and bool((p == p.flatten()[0]).all()):
                p.add_(0.1 * torch.randn_like(p))
    return model


def _utterances(lengths: list[int], seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(len(lengths), max(lengths), BINS, generator=g)
    for b, n in enumerate(lengths):
        x[b, n:] = 0.0
    return x, torch.tensor(lengths)


def _stream(encoder: torch.nn.Module, x: torch.Tensor, x_lens: torch.Tensor, context: ChunkContext,
            seed: int) -> list[torch.Tensor]:
    """Feed every utterance as one stream of a batch, in random pieces of 1 to 200 feature frames
    (10 ms to 2 s), a different cut per stream; states are stacked and split as the Recognizer
    does. Returns each stream's emitted frames."""
    rng = random.Random(seed)
    batch = x.shape[0]
    states = [encoder.init_state(1, context) for _ in range(batch)]
    pos = [0] * batch
    out: list[list[torch.Tensor]] = [[] for _ in range(batch)]
    done = [False] * batch
    while not all(done):
        active = [b for b in range(batch) if not done[b]]
        rng.shuffle(active)
        active = active[: rng.randint(1, len(active))]  # a step decodes some of the streams
        pieces, finals = [], []
        for b in active:
            n = min(int(x_lens[b]) - pos[b], rng.randint(1, 200))
            pieces.append(x[b, pos[b] : pos[b] + n])
            pos[b] += n
            finals.append(pos[b] == int(x_lens[b]))
        padded = torch.nn.utils.rnn.pad_sequence(pieces, batch_first=True)
        lens = torch.tensor([p.shape[0] for p in pieces])
        y, y_lens, state = encoder.forward_chunk(padded, lens, stack_states([states[b] for b in active]),
                                                 torch.tensor(finals))
        for i, b in enumerate(active):
            out[b].append(y[i, : int(y_lens[i])])
            states[b] = state.select(i)
            done[b] = finals[i]
    return [torch.cat(o) for o in out]


def test_shapes_and_lengths(encoder: torch.nn.Module, context: ChunkContext) -> None:
    x, x_lens = _utterances([173, 96, 40, 9])
    with torch.inference_mode():
        y, y_lens = encoder(x, x_lens, context)
    assert torch.equal(y_lens, encoder.output_lengths(x_lens))
    assert y.shape == (4, int(y_lens.max()), encoder.output_size())
    assert torch.isfinite(y).all()
    frames = encoder.output_lengths(torch.tensor([encoder.receptive_field - 1, encoder.receptive_field]))
    assert frames.tolist() == [0, 1]  # one frame needs the receptive field
    assert encoder.subsampling * encoder.output_lengths(torch.tensor([1000]))[0] <= 1000


@pytest.mark.parametrize("seed", [0, 1])
def test_streaming_with_random_cuts_equals_the_masked_forward(
    encoder: torch.nn.Module, context: ChunkContext, seed: int
) -> None:
    x, x_lens = _utterances([311, 187, 64], seed=seed + 5)
    with torch.inference_mode():
        y, y_lens = encoder(x, x_lens, context)
        streamed = _stream(encoder, x, x_lens, context, seed)
    for b, z in enumerate(streamed):
        assert z.shape[0] == int(y_lens[b])
        torch.testing.assert_close(z, y[b, : int(y_lens[b])], rtol=0, atol=TOLERANCE)


def test_batch_independence(encoder: torch.nn.Module, context: ChunkContext) -> None:
    """An utterance encodes the same alone and in a padded batch with others (which may be
    longer or shorter), and padding values never leak in."""
    x, x_lens = _utterances([150, 61, 230])
    x_noisy = x.clone()
    x_noisy[1, 61:] = 100.0  # padding of the second utterance
    with torch.inference_mode():
        y, _ = encoder(x_noisy, x_lens, context)
        for b in range(3):
            alone, alone_lens = encoder(x[b : b + 1, : int(x_lens[b])], x_lens[b : b + 1], context)
            n = int(alone_lens[0])
            torch.testing.assert_close(y[b, :n], alone[0, :n], rtol=0, atol=TOLERANCE)


def test_the_old_state_is_never_modified(encoder: torch.nn.Module, context: ChunkContext) -> None:
    x, x_lens = _utterances([120, 77])
    state = encoder.init_state(2, context)
    with torch.inference_mode():
        _, _, state = encoder.forward_chunk(x[:, :50], torch.tensor([50, 33]), state, torch.tensor([False, False]))
        before = copy.deepcopy(state)
        encoder.forward_chunk(x[:, 50:], x_lens - torch.tensor([50, 33]), state, torch.tensor([True, False]))
    _assert_states_equal(state, before)


def test_stack_and_select_round_trip(encoder: torch.nn.Module, context: ChunkContext) -> None:
    x, _ = _utterances([90, 90, 90])
    state = encoder.init_state(3, context)
    with torch.inference_mode():
        _, _, state = encoder.forward_chunk(x, torch.tensor([90, 41, 7]), state, torch.tensor([False] * 3))
    assert isinstance(state, EncoderState) and state.batch_size == 3
    rows = [state.select(i) for i in range(3)]
    assert all(r.batch_size == 1 for r in rows)
    restacked = stack_states(rows)
    # equal up to padding: each stream continues the same from either
    tail, _ = _utterances([60, 60, 60], seed=9)
    final = torch.tensor([True] * 3)
    with torch.inference_mode():
        a = encoder.forward_chunk(tail, torch.tensor([60, 60, 60]), state, final)
        b = encoder.forward_chunk(tail, torch.tensor([60, 60, 60]), restacked, final)
        c = encoder.forward_chunk(tail[1:2], torch.tensor([60]), rows[1].to("cpu"), final[:1])
    assert torch.equal(a[1], b[1])
    torch.testing.assert_close(a[0], b[0], rtol=0, atol=TOLERANCE)
    n = int(c[1][0])
    assert n == int(a[1][1])
    torch.testing.assert_close(a[0][1, :n], c[0][0, :n], rtol=0, atol=TOLERANCE)
    other = encoder.init_state(1, dataclasses.replace(context, left=context.left + context.chunk))
    with pytest.raises(ValueError, match="context"):
        stack_states([rows[0], other])


def test_frames_come_out_within_the_stated_latency(encoder: torch.nn.Module, context: ChunkContext) -> None:
    """Once a chunk and ``latency_frames`` more frames of audio are in, the chunk is emitted."""
    sub, field = encoder.subsampling, encoder.receptive_field
    for chunks in (1, 3):
        frames = chunks * context.chunk + encoder.latency_frames(context)
        need = (frames - 1) * sub + field  # feature frames that make `frames` encoder frames
        x, _ = _utterances([need])
        with torch.inference_mode():
            _, y_lens, _ = encoder.forward_chunk(x, torch.tensor([need]), encoder.init_state(1, context),
                                                 torch.tensor([False]))
        assert int(y_lens[0]) >= chunks * context.chunk


def test_the_causal_flag_says_whether_look_ahead_is_refused(encoder: torch.nn.Module) -> None:
    """``causal`` drives the default right context of long-form decoding (0 for a causal encoder),
    so it must agree with what ``check_context`` accepts."""
    ahead = ChunkContext(chunk=4, left=8, right=4)
    if encoder.causal:
        with pytest.raises(ValueError, match="right_context must be 0"):
            encoder.check_context(ahead)
        assert default_right_context(encoder) == 0
    else:
        encoder.check_context(ahead)
        assert default_right_context(encoder) == OFFLINE_CONTEXT.right
    encoder.check_context(dataclasses.replace(ahead, right=default_right_context(encoder)))


def test_checkpoint_round_trip(encoder: torch.nn.Module, tmp_path: Path) -> None:
    cfg = ASRModelConfig(encoder=encoder.cfg, vocab_size=6)
    torch.manual_seed(3)
    model: ASRModel = build_model(cfg).eval()
    bundle = ModelBundle(model=model, vocab=Vocabulary(("<blank>", "a", "b", "c", "d", "e")),
                         fbank=FbankConfig(num_mel_bins=BINS))
    save_checkpoint(tmp_path / "model.pt", bundle)
    loaded = load_checkpoint(tmp_path / "model.pt")
    assert type(loaded.model.encoder) is type(model.encoder) and loaded.model.cfg == cfg
    x, x_lens = _utterances([100, 70])
    context = SETTINGS_OF.get(encoder.cfg.type, SETTINGS)[1]
    with torch.inference_mode():
        torch.testing.assert_close(loaded.model(x, x_lens, context)[0], model(x, x_lens, context)[0], rtol=0, atol=0)


def _assert_states_equal(a: EncoderState, b: EncoderState) -> None:
    for f in dataclasses.fields(a):
        va, vb = getattr(a, f.name), getattr(b, f.name)
        if isinstance(va, torch.Tensor):
            assert torch.equal(va, vb), f.name
        elif isinstance(va, tuple) and all(isinstance(t, torch.Tensor) for t in va):
            assert len(va) == len(vb) and all(torch.equal(x, y) for x, y in zip(va, vb)), f.name
        else:
            assert va == vb, f.name


CONFIGS = Path(__file__).resolve().parents[2] / "configs"


@pytest.mark.parametrize("preset", sorted(p.name for p in CONFIGS.glob("*.yaml") if "\nmodel:" in p.read_text()))
def test_every_model_preset_loads_and_builds(preset: str) -> None:
    """configs/*.yaml that define a model parse, name a registered encoder and build a model of
    the size their comments state: the small model's 5-6 M for the presets compared in
    recipes/synth_en and for the general model at the same shape with its 1000-piece vocabulary
    (finetune.yaml takes its model from --init)."""
    from echostream.training.config import load_train_config

    cfg = load_train_config(CONFIGS / preset)
    assert cfg.model is not None and cfg.model.encoder.type in ENCODERS
    vocab, (low, high) = (1000, (5.5e6, 6.5e6)) if preset == "general_en.yaml" else (512, (5.0e6, 6.0e6))
    model = build_model(ASRModelConfig(encoder=cfg.model.encoder, vocab_size=vocab, decoder=cfg.model.decoder))
    assert low < sum(p.numel() for p in model.parameters()) < high
