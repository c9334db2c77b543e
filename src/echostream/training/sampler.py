"""Dynamic batches by total audio seconds, drawn from duration buckets, resumable exactly."""

from __future__ import annotations

import bisect
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True)
class SamplerConfig:
    """Batches hold at most ``max_batch_seconds`` of audio (padding counted: the longest
    utterance times the batch size) and ``max_batch_size`` utterances; utterances are grouped by
    duration with ``bucket_boundaries`` (seconds) so batches waste little padding."""

    max_batch_seconds: float = 200.0
    max_batch_size: int = 64
    bucket_boundaries: tuple[float, ...] = (2.0, 4.0, 6.0, 8.0, 12.0, 16.0, 24.0)
    shuffle: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        if self.max_batch_seconds <= 0 or self.max_batch_size <= 0:
            raise ValueError("sampler.max_batch_seconds and max_batch_size must be positive")
        if list(self.bucket_boundaries) != sorted(self.bucket_boundaries):
            raise ValueError("sampler.bucket_boundaries must be increasing")


class DurationBucketSampler:
    """Yields lists of utterance indices; the same (seed, epoch) gives the same batches.

    With ``world_size > 1`` each rank takes every ``world_size``-th batch (all ranks see the same
    number of batches). ``state_dict``/``load_state_dict`` resume mid-epoch exactly.

    A mix of sources: ``sources`` gives each utterance's source (0, 1, ...) and ``weights`` each
    source's share of an epoch. An epoch then holds as many utterances as all sources together,
    source ``s`` giving ``weights[s] / sum(weights)`` of them: drawn without repetition from its
    utterances (reshuffled each epoch), and cycled through again when its share is larger than it
    (a small source is repeated, a large one subsampled).
    """

    def __init__(
        self,
        durations: Sequence[float],
        cfg: SamplerConfig,
        rank: int = 0,
        world_size: int = 1,
        *,
        sources: Sequence[int] | None = None,
        weights: Sequence[float] | None = None,
    ) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside world_size {world_size}")
        if (sources is None) != (weights is None):
            raise ValueError("give both sources and weights for a mix, or neither")
        if sources is not None and weights is not None:
            if len(sources) != len(durations):
                raise ValueError(f"{len(sources)} sources for {len(durations)} utterances")
            if any(w < 0 for w in weights) or sum(weights) <= 0:
                raise ValueError("mix weights must be >= 0 and not all 0")
            present = set(sources)
            if not present <= set(range(len(weights))):
                raise ValueError(f"a source index is outside the {len(weights)} weights")
            empty = [s for s, w in enumerate(weights) if w > 0 and s not in present]
            if empty:
                raise ValueError(f"source {empty[0]} has weight {weights[empty[0]]} but no utterances")
        self.durations = list(durations)
        self.sources = list(sources) if sources is not None else None
        self.weights = list(weights) if weights is not None else None
        self.cfg = cfg
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0
        self.position = 0  # batches of this epoch already yielded (this rank)

    def epoch_indices(self, epoch: int) -> list[int]:
        """The utterances of ``epoch`` (each once, or drawn by the mix's weights)."""
        if self.sources is None or self.weights is None:
            return list(range(len(self.durations)))
        rng = random.Random(f"{self.cfg.seed}:mix:{epoch}")
        members: list[list[int]] = [[] for _ in self.weights]
        for i, s in enumerate(self.sources):
            members[s].append(i)
        total, weight_sum = len(self.durations), sum(self.weights)
        chosen: list[int] = []
        for share, pool in zip(self.weights, members, strict=True):
            wanted = round(total * share / weight_sum)
            while wanted > 0 and pool:
                rng.shuffle(pool)
                chosen += pool[:wanted]
                wanted -= min(wanted, len(pool))
        return chosen

    def _batches(self, epoch: int) -> list[list[int]]:
        rng = random.Random(f"{self.cfg.seed}:{epoch}")
        buckets: list[list[int]] = [[] for _ in range(len(self.cfg.bucket_boundaries) + 1)]
        for i in self.epoch_indices(epoch):
            buckets[bisect.bisect_left(self.cfg.bucket_boundaries, self.durations[i])].append(i)
        batches: list[list[int]] = []
        for bucket in buckets:
            if self.cfg.shuffle:
                rng.shuffle(bucket)
            batch: list[int] = []
            longest = 0.0
            for i in bucket:
                d = self.durations[i]
                longer = max(longest, d)
                if batch and (longer * (len(batch) + 1) > self.cfg.max_batch_seconds
                              or len(batch) >= self.cfg.max_batch_size):
                    batches.append(batch)
                    batch, longer = [], d
                batch.append(i)
                longest = longer
            if batch:
                batches.append(batch)
        if self.cfg.shuffle:
            rng.shuffle(batches)
        usable = len(batches) - len(batches) % self.world_size if len(batches) >= self.world_size else len(batches)
        return batches[:usable][self.rank :: self.world_size]

    def __len__(self) -> int:
        return len(self._batches(self.epoch))

    def __iter__(self) -> Iterator[list[int]]:
        batches = self._batches(self.epoch)
        while self.position < len(batches):
            batch = batches[self.position]
            self.position += 1
            yield batch
        self.epoch += 1
        self.position = 0

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch = int(state["epoch"])
        self.position = int(state["position"])
