"""What every streaming encoder offers, its config and state types, and the chunk/context setting.

An encoder plugs in by providing (see :class:`StreamingEncoder`):

- a frozen config dataclass derived from :class:`EncoderConfig` with its own ``TYPE`` tag (the
  ``type`` key of YAML presets and checkpoints), registered in ``models/build.py``;
- a state dataclass derived from :class:`EncoderState` (tensors batched over streams: stack,
  select, move);
- ``forward`` (whole utterances, the masked computation training runs), ``init_state`` and
  ``forward_chunk`` (streams continued from a state, pieces of any size), equal to each other;
- its frame rate (``subsampling`` feature frames per output frame, ``receptive_field`` feature
  frames seen by one output frame), ``output_lengths``, ``latency_frames`` and ``check_context``.

Features come in already normalised: CMVN and the output heads belong to the model.

Shape legend: B batch/streams, T feature frames, F feature bins, T' encoder frames, D model dim.
"""

from __future__ import annotations

import builtins
import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, Self, TypeVar

import torch
from torch import Tensor

MAX_CONTEXT_FRAMES = 1024
"""The largest chunk, left or right context a user may ask for (encoder frames). Beyond it a
chunk's attention and padding cost grow without bound (a 100000-frame chunk took 90 s and 9.5 GB
on a 5.6 s file) while no model is trained for such windows."""


@dataclass(frozen=True, kw_only=True)
class ChunkContext:
    """How much an encoder frame may see, in encoder frames (80 ms for ChunkFormer's 8x
    subsampling, 40 ms for Emformer's 4x).

    A chunk of ``chunk`` frames sees ``left`` frames before it and ``right`` frames after it;
    each encoder says what these mean for it (``StreamingEncoder.check_context``).
    """

    chunk: int
    left: int
    right: int

    def __post_init__(self) -> None:
        for name, value in (("chunk_size", self.chunk), ("left_context", self.left), ("right_context", self.right)):
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"{name} must be an integer number of frames, got {value!r}")  # noqa: TRY004
        if self.chunk <= 0:
            raise ValueError(f"chunk_size must be positive, got {self.chunk}")
        if self.left < 0:
            raise ValueError(f"left_context must be >= 0, got {self.left}")
        if self.right < 0:
            raise ValueError(f"right_context must be >= 0, got {self.right}")

    def as_tuple(self) -> tuple[int, int, int]:
        """``(chunk, left, right)``."""
        return self.chunk, self.left, self.right

    @classmethod
    def full(cls, max_frames: int) -> ChunkContext:
        """A context under which every frame attends to its whole utterance.

        One chunk spans the longest utterance (``max_frames`` encoder frames, rounded up to a
        multiple of ``FULL_CHUNK_MULTIPLE`` so that every encoder's chunk constraint holds), so each
        utterance is a single chunk; ``left = right = 0`` since there is nothing outside it. The
        masked computation then masks only the frames past each utterance's end.
        """
        chunk = -(-max(1, max_frames) // FULL_CHUNK_MULTIPLE) * FULL_CHUNK_MULTIPLE
        return cls(chunk=chunk, left=0, right=0)


FULL_CHUNK_MULTIPLE = 16
"""Full-context chunks are a multiple of this (Zipformer's chunks must be whole multiples of its
coarsest stack: 4 frames with the default downsampling factors, 8 with a 16x stack)."""


# The defaults, in encoder frames, of every entry point (API, CLI, server, training validation):
# long-form transcription as the ChunkFormer package does it, and low-latency streaming.
OFFLINE_CONTEXT = ChunkContext(chunk=64, left=128, right=128)
STREAMING_CONTEXT = ChunkContext(chunk=8, left=32, right=0)


def default_right_context(encoder: Any) -> int:
    """The long-form default look-ahead of ``encoder``: ``OFFLINE_CONTEXT.right``, or none for a
    chunk-causal encoder (Zipformer)."""
    return 0 if encoder.causal else OFFLINE_CONTEXT.right


def user_context(chunk_size: int, left_context: int, right_context: int) -> ChunkContext:
    """A chunk/context setting asked for by a user, checked against ``MAX_CONTEXT_FRAMES``.

    (Internal settings, such as the one-chunk full context of training, may be larger.)

    >>> user_context(64, 128, 100000)
    Traceback (most recent call last):
    ...
    ValueError: right_context 100000 is above the maximum of 1024 frames
    """
    context = ChunkContext(chunk=chunk_size, left=left_context, right=right_context)
    for name, value in (("chunk_size", context.chunk), ("left_context", context.left), ("right_context", context.right)):
        if value > MAX_CONTEXT_FRAMES:
            raise ValueError(f"{name} {value} is above the maximum of {MAX_CONTEXT_FRAMES} frames")
    return context


@dataclass(frozen=True, kw_only=True)
class EncoderConfig:
    """Base of the encoder configs. ``type`` names the encoder (each subclass's ``TYPE``)."""

    TYPE: ClassVar[str] = ""
    type: str = ""

    KEY_PREFIX: ClassVar[str] = "encoder"  # how error messages name this config's keys

    def __post_init__(self) -> None:
        if self.type != self.TYPE:
            raise ValueError(f"encoder type {self.type!r} is not {self.TYPE!r}")

    def check_shape(self, positive: tuple[str, ...], activations: tuple[str, ...] = ("swish", "relu", "gelu")) -> None:
        """The checks every attention encoder's shape needs: ``positive`` fields above 0, the
        heads dividing ``output_size``, a known ``activation_type``; ValueError naming the key."""
        key = self.KEY_PREFIX
        for name in positive:
            if getattr(self, name) <= 0:
                raise ValueError(f"{key}.{name} must be positive, got {getattr(self, name)}")
        size, heads = getattr(self, "output_size"), getattr(self, "attention_heads")  # noqa: B009
        if size % heads:
            raise ValueError(f"{key}.output_size {size} is not divisible by attention_heads {heads}")
        activation = getattr(self, "activation_type")  # noqa: B009
        if activation not in activations:
            raise ValueError(f"{key}.activation_type {activation!r} is not one of {', '.join(activations)}")

    @classmethod
    def tagged_class(cls, data: Any) -> builtins.type[EncoderConfig]:
        """The subclass a config mapping names with its ``type`` (config.from_dict asks this)."""
        if not isinstance(data, dict) or "type" not in data:
            raise ValueError("encoder: 'type' is missing (one of: " + ", ".join(sorted(_config_types())) + ")")
        tag = data["type"]
        types = _config_types()
        if tag not in types:
            raise ValueError(f"encoder.type {tag!r} is not one of {', '.join(sorted(types))}")
        return types[tag]


def _config_types() -> dict[str, type[EncoderConfig]]:
    """Encoder type tag -> config class, from the one registry (imported here, when first asked,
    since the registry imports every encoder module and they import this one)."""
    from echostream.models.build import ENCODERS

    return {tag: config for tag, (config, _) in ENCODERS.items()}


StateT = TypeVar("StateT", bound="EncoderState")


@dataclass(frozen=True)
class EncoderState:
    """Base of the encoder states: frozen dataclasses of tensors batched over streams.

    A field (a tensor, or a tuple of tensors: one per stack of a multi-rate encoder) is batched
    along the dimension its ``batch_dim`` metadata names (default 0); other fields (a
    ``ChunkContext``) are shared and must be equal to be stacked. Fields
    of different lengths along another dimension (pending frames) are padded by ``stack`` and
    trimmed by the encoder using the lengths it keeps.
    """

    def select(self, index: int) -> Self:
        """The state of stream ``index`` alone (batch of one)."""
        values = {}
        for f in dataclasses.fields(self):
            dim = f.metadata.get("batch_dim", 0)
            values[f.name] = _map(getattr(self, f.name), lambda t, dim=dim: t.narrow(dim, index, 1))
        return dataclasses.replace(self, **values)

    def to(self, device: torch.device | str) -> Self:
        values = {f.name: _map(getattr(self, f.name), lambda t: t.to(device)) for f in dataclasses.fields(self)}
        return dataclasses.replace(self, **values)

    @property
    def batch_size(self) -> int:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            value = value[0] if isinstance(value, tuple) and value else value
            if isinstance(value, Tensor):
                return int(value.shape[f.metadata.get("batch_dim", 0)])
        raise ValueError("a state without tensors has no batch size")

    @classmethod
    def stack(cls, states: Sequence[Self]) -> Self:
        """Batch the states of several streams (same settings) into one."""
        if not states:
            raise ValueError("stacking needs at least one state")
        first = states[0]
        values: dict[str, Any] = {}
        for f in dataclasses.fields(first):
            items = [getattr(s, f.name) for s in states]
            dim = f.metadata.get("batch_dim", 0)
            if isinstance(items[0], Tensor):
                values[f.name] = _cat_padded(items, dim)
            elif isinstance(items[0], tuple) and all(isinstance(t, Tensor) for t in items[0]):
                values[f.name] = tuple(_cat_padded(list(group), dim) for group in zip(*items))
            else:
                if any(item != items[0] for item in items):
                    raise ValueError(f"cannot batch streams whose {f.name} differ")
                values[f.name] = items[0]
        return dataclasses.replace(first, **values)


def _map(value: Any, fn: Any) -> Any:
    """``fn`` applied to a state field: a tensor, each tensor of a tuple, or nothing else."""
    if isinstance(value, Tensor):
        return fn(value)
    if isinstance(value, tuple) and all(isinstance(t, Tensor) for t in value):
        return tuple(fn(t) for t in value)
    return value


def _cat_padded(items: list[Tensor], dim: int) -> Tensor:
    """Tensors concatenated along ``dim``, each first zero-padded at the end of every other
    dimension to the largest size."""
    shape = [max(t.shape[d] for t in items) for d in range(items[0].dim())]
    padded = []
    for t in items:
        pad: list[int] = []
        for d in reversed(range(t.dim())):
            pad += [0, 0 if d == dim else shape[d] - t.shape[d]]
        padded.append(torch.nn.functional.pad(t, pad) if any(pad) else t)
    return torch.cat(padded, dim=dim)


@dataclass(frozen=True)
class StepLayout:
    """The fixed shapes of an encoder's exportable streaming step (``export/onnx.py``).

    The step takes ``feature_frames`` normalised feature frames, hopping ``feature_hop`` per
    call, an ``end`` (B,) (the stream's feature frames once known: an encoder may need more than
    its encoder-frame count, the Zipformer its 50 Hz frames), a ``position`` (B,) (the encoder
    frame of the window's start) and its states; it gives ``step_frames`` encoder
    frames starting ``delay`` frames before ``position``, ``position + step_frames`` and the new
    states. ``states``: name -> zero shape with a batch of 1 (the batch is dimension 1).
    """

    feature_frames: int
    feature_hop: int
    step_frames: int
    delay: int
    states: dict[str, tuple[int, ...]]


BATCH_DIM_1 = {"batch_dim": 1}
"""Field metadata of a state tensor batched along its second dimension (layers first)."""


def stack_states(states: Sequence[StateT]) -> StateT:
    """Batch the states of several streams of one encoder (see :meth:`EncoderState.stack`)."""
    if not states:
        raise ValueError("stack_states needs at least one state")
    return type(states[0]).stack(states)


class StreamingEncoder(Protocol[StateT]):
    """The interface shared by all echostream encoders (see the module docstring).

    Shape legend: B batch, T feature frames, F feature bins, T' encoder frames, D model dim.
    """

    subsampling: int  # feature frames per encoder frame
    receptive_field: int  # feature frames one encoder frame sees (its first at subsampling * j)
    causal: bool  # no look-ahead: a right context must be 0 (the default one is then 0)

    def output_size(self) -> int: ...

    def output_lengths(self, x_lens: Tensor) -> Tensor:
        """(B,) feature frames -> (B,) encoder frames ``forward`` gives for them."""
        ...

    def check_context(self, context: ChunkContext) -> None:
        """Raise ValueError (one line) if this encoder cannot run with ``context``."""
        ...

    def latency_frames(self, context: ChunkContext) -> int:
        """Encoder frames of audio past a chunk's end needed before the chunk is final."""
        ...

    def forward(self, x: Tensor, x_lens: Tensor, context: ChunkContext) -> tuple[Tensor, Tensor]:
        """Whole utterances (the masked computation): x (B, T, F), x_lens (B,) -> (B, T', D), (B,)."""
        ...

    def init_state(self, batch: int, context: ChunkContext, device: torch.device | str) -> StateT:
        """The state of ``batch`` streams that have seen nothing yet."""
        ...

    def forward_chunk(
        self, x: Tensor, x_lens: Tensor, state: StateT, final: Tensor
    ) -> tuple[Tensor, Tensor, StateT]:
        """More frames of each stream: x (B, T, F), x_lens (B,), final (B,) bool.

        Returns the encoder frames that became final, (B, T', D) and (B,), and the new state;
        the old state is left as it was.
        """
        ...
