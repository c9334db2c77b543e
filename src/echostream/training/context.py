"""Limited-context training: the chunk/context each batch is encoded with, drawn per batch."""

from __future__ import annotations

import random
from dataclasses import dataclass

from echostream.encoders.base import ChunkContext


@dataclass(frozen=True, kw_only=True)
class ContextSampler:
    """The (chunk, left, right) sets limited-context training draws from, one draw per batch.

    Sizes are in the encoder's own frames (80 ms for ChunkFormer, 40 ms for Emformer). A chunk
    size of ``None`` means full context (:meth:`ChunkContext.full`); left and right sizes are then
    not drawn. With ``right_below_chunk`` only right sizes smaller than the chunk are drawn
    (ChunkFormer's ``streaming`` training).
    """

    chunk_sizes: tuple[int | None, ...] = (None, 16, 32, 64)
    left_sizes: tuple[int, ...] = (16, 32, 64, 128)
    right_sizes: tuple[int, ...] = (0, 8, 16, 32)
    right_below_chunk: bool = False

    def __post_init__(self) -> None:
        for name in ("chunk_sizes", "left_sizes", "right_sizes"):
            if not getattr(self, name):
                raise ValueError(f"ContextSampler.{name} is empty")
        if any(c is not None and c <= 0 for c in self.chunk_sizes):
            raise ValueError(f"ContextSampler.chunk_sizes must be positive or None, got {self.chunk_sizes}")
        if any(s < 0 for s in self.left_sizes + self.right_sizes):
            raise ValueError("ContextSampler left_sizes and right_sizes must be >= 0")
        if self.right_below_chunk:
            for chunk in self.chunk_sizes:
                if chunk is not None and not any(r < chunk for r in self.right_sizes):
                    raise ValueError(f"ContextSampler: no right size is below chunk size {chunk}")

    def draw(self, rng: random.Random, max_frames: int) -> ChunkContext:
        """The context of one batch whose longest utterance has ``max_frames`` encoder frames."""
        chunk = rng.choice(self.chunk_sizes)
        if chunk is None:
            return ChunkContext.full(max_frames)
        left = rng.choice(self.left_sizes)
        rights = [r for r in self.right_sizes if r < chunk] if self.right_below_chunk else self.right_sizes
        return ChunkContext(chunk=chunk, left=left, right=rng.choice(rights))

    def settings(self) -> list[ChunkContext]:
        """Every limited setting it may draw (full context aside), for checks up front."""
        rights = self.right_sizes
        return [
            ChunkContext(chunk=c, left=left, right=r)
            for c in self.chunk_sizes if c is not None
            for left in self.left_sizes
            for r in rights if not self.right_below_chunk or r < c
        ]
