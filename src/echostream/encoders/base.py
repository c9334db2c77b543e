"""What every streaming encoder offers, and the chunk/context setting they run with."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, TypeVar

import torch
from torch import Tensor

StateT = TypeVar("StateT")

MAX_CONTEXT_FRAMES = 1024
"""The largest chunk, left or right context accepted (frames; 82 s at 80 ms). Beyond it a chunk's
attention and padding cost grow without bound (a 100000-frame chunk took 90 s and 9.5 GB on a
5.6 s file) while no model is trained for such windows."""


@dataclass(frozen=True, kw_only=True)
class ChunkContext:
    """How much an encoder frame may see, in encoder frames (80 ms each for 8x subsampling).

    Attention of a chunk of ``chunk`` frames sees ``left`` frames before it and ``right``
    frames after it. ``right`` frames of future audio are the algorithmic latency beyond the
    chunk itself.
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


def user_context(chunk_size: int, left_context: int, right_context: int) -> ChunkContext:
    """A chunk/context setting asked for by a user, checked against ``MAX_CONTEXT_FRAMES``.

    (Internal settings, such as the one-chunk full context of training, may be larger.)

    >>> user_context(64, 128, 100000)
    Traceback (most recent call last):
    ...
    ValueError: right_context 100000 is above the maximum of 1024 frames (81.92 s at 80 ms per frame)
    """
    context = ChunkContext(chunk=chunk_size, left=left_context, right=right_context)
    for name, value in (("chunk_size", context.chunk), ("left_context", context.left), ("right_context", context.right)):
        if value > MAX_CONTEXT_FRAMES:
            raise ValueError(
                f"{name} {value} is above the maximum of {MAX_CONTEXT_FRAMES} frames "
                f"({MAX_CONTEXT_FRAMES * 0.08:g} s at 80 ms per frame)"
            )
    return context


class StreamingEncoder(Protocol[StateT]):
    """The interface shared by all echostream encoders.

    Shape legend: B batch, T feature frames, F feature bins, T' encoder frames, D model dim.
    """

    def output_size(self) -> int: ...

    def forward(self, x: Tensor, x_lens: Tensor, context: ChunkContext) -> tuple[Tensor, Tensor]:
        """Whole utterances (the masked batch): x (B, T, F), x_lens (B,) -> (B, T', D), (B,)."""
        ...

    def init_state(self, batch: int, context: ChunkContext, device: torch.device) -> StateT:
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
