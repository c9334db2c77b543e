"""What every streaming encoder offers, and the chunk/context setting they run with."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, TypeVar

import torch
from torch import Tensor

StateT = TypeVar("StateT")


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
        if self.chunk <= 0:
            raise ValueError(f"chunk_size must be positive, got {self.chunk}")
        if self.left < 0:
            raise ValueError(f"left_context must be >= 0, got {self.left}")
        if self.right < 0:
            raise ValueError(f"right_context must be >= 0, got {self.right}")


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
