"""Long-form transcription: many files of any length, block by block, with bounded memory.

Each input is a stream. Audio is read, featurised and encoded block by block; the encoder state
(attention and convolution caches, frames waiting for their right context) is carried from block
to block, so the result does not depend on the block size and peak memory does not grow with
duration. Several inputs are encoded together in one masked batch (continuous batching: when one
input ends, the next one takes its place).

Shape legend: T' encoder frames, V vocabulary.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from echostream.audio import AudioError, iter_audio_blocks, seconds_to_samples
from echostream.encoders.base import ChunkContext
from echostream.encoders.chunkformer import ChunkFormerState, stack_states
from echostream.frontend.fbank import FbankState, fbank_step, init_fbank_state
from echostream.models.asr import ASRModel
from echostream.models.checkpoint import ModelBundle
from echostream.nn.subsampling import RATE, RECEPTIVE_FIELD
from echostream.runtime import release_free_memory

CTC_SLICE = 512  # encoder frames projected to the vocabulary at a time


@dataclass(frozen=True)
class AudioInput:
    """One input: a file path, or samples already at the model's rate."""

    name: str
    path: str | None = None
    samples: np.ndarray | None = None  # (S,) float32 at the model's sample rate

    def blocks(self, block_seconds: float, sample_rate: int) -> Iterator[np.ndarray]:
        """The audio in blocks of ``block_seconds`` (the last one shorter)."""
        if self.path is not None:
            return iter_audio_blocks(self.path, block_seconds, sample_rate)
        assert self.samples is not None
        size = max(1, seconds_to_samples(block_seconds, sample_rate))
        samples = self.samples
        return (samples[i : i + size] for i in range(0, max(len(samples), 1), size))


@dataclass
class StreamResult:
    """What decoding one input produced: per-frame best labels, optionally all log-probs."""

    name: str
    frame_labels: np.ndarray  # (T',) int32 argmax label per encoder frame
    num_samples: int
    log_probs: np.ndarray | None = None  # (T', V) float32, only when asked for
    error: str | None = None  # with frame_labels of the audio read before the error, if any


@dataclass
class _Active:
    source: AudioInput
    blocks: Iterator[np.ndarray]
    next_block: np.ndarray | None
    fbank: FbankState
    state: ChunkFormerState
    labels: list[np.ndarray] = field(default_factory=list)
    log_probs: list[np.ndarray] = field(default_factory=list)
    num_samples: int = 0
    error: str | None = None  # why reading stopped before the end of the input


def _next_or_none(blocks: Iterator[np.ndarray]) -> np.ndarray | None:
    return next(blocks, None)


class LongFormDecoder:
    """Encodes inputs of any length with carried state; see the module docstring."""

    def __init__(
        self,
        bundle: ModelBundle,
        context: ChunkContext,
        *,
        block_seconds: float = 30.0,
        batch_seconds: float = 300.0,
        keep_log_probs: bool = False,
        device: torch.device | str = "cpu",
    ) -> None:
        if block_seconds <= 0:
            raise ValueError(f"block_seconds must be positive, got {block_seconds}")
        if batch_seconds <= 0:
            raise ValueError(f"batch_seconds must be positive, got {batch_seconds}")
        self.bundle = bundle
        self.context = context
        self.block_seconds = min(block_seconds, batch_seconds)
        self.max_streams = max(1, int(batch_seconds // self.block_seconds))
        self.keep_log_probs = keep_log_probs
        self.device = torch.device(device)

    def _open(self, source: AudioInput) -> _Active:
        """Start a stream; reading its first block raises AudioError for unusable input."""
        blocks = source.blocks(self.block_seconds, self.bundle.fbank.sample_rate)
        first = next(blocks, None)
        if first is None:
            raise AudioError(f"{source.name}: no audio samples")
        encoder = self.bundle.model.encoder
        return _Active(
            source=source,
            blocks=blocks,
            next_block=first,
            fbank=init_fbank_state(),
            state=encoder.init_state(1, self.context, self.device),
        )

    def run(
        self,
        sources: Sequence[AudioInput],
        progress: Callable[[float], None] | None = None,
    ) -> list[StreamResult]:
        """Decode every source; a bad one gets ``error`` set and the others go on.

        ``progress`` is called with the seconds of audio consumed by each step.
        """
        results: dict[int, StreamResult] = {}
        for finished in self.steps(sources, progress):
            results.update(finished)
        return [results[i] for i in range(len(sources))]

    def steps(
        self,
        sources: Sequence[AudioInput],
        progress: Callable[[float], None] | None = None,
    ) -> Iterator[list[tuple[int, StreamResult]]]:
        """Decode the sources one encoder step at a time; after each step, yield the
        ``(index, result)`` of the inputs that finished in it (often none).

        An input that cannot be opened finishes at once with ``error`` set. One whose decoding
        fails mid-file (a corrupt block) keeps what was decoded before: its last good block is
        decoded as its end, and the result carries both those labels and the error.
        """
        rate = self.bundle.fbank.sample_rate
        waiting = list(enumerate(sources))[::-1]
        active: dict[int, _Active] = {}
        model = self.bundle.model
        while waiting or active:
            finished: list[tuple[int, StreamResult]] = []
            while waiting and len(active) < self.max_streams:
                index, source = waiting.pop()
                try:
                    active[index] = self._open(source)
                except AudioError as err:
                    finished.append((index, StreamResult(source.name, np.zeros(0, np.int32), 0, error=str(err))))
            step: list[tuple[int, np.ndarray, bool]] = []
            consumed = 0
            for index, stream in active.items():
                block = stream.next_block
                assert block is not None
                try:
                    stream.next_block = _next_or_none(stream.blocks)
                except AudioError as err:  # this block becomes the last one
                    stream.next_block = None
                    stream.error = str(err)
                feats, stream.fbank = fbank_step(block, stream.fbank, self.bundle.fbank)
                stream.num_samples += len(block)
                consumed += len(block)
                step.append((index, feats, stream.next_block is None))
            if step:
                with torch.inference_mode():
                    self._encode(step, active, model)
                for index, _, is_final in step:
                    if is_final:
                        finished.append((index, self._finish(active.pop(index))))
                release_free_memory()
                if progress is not None:
                    progress(consumed / rate)
            yield finished

    def _encode(self, step: list[tuple[int, np.ndarray, bool]], active: dict[int, _Active], model: ASRModel) -> None:
        """One encoder call for the streams of ``step``: (index, new features (T, F), is_final)."""
        feats_t = [torch.from_numpy(f) for _, f, _ in step]
        x = torch.nn.utils.rnn.pad_sequence(feats_t, batch_first=True).to(self.device)
        x_lens = torch.tensor([f.shape[0] for f in feats_t], device=self.device)
        final = torch.tensor([fin for _, _, fin in step], device=self.device)
        state = stack_states([active[i].state for i, _, _ in step])
        y, y_lens, new_state = model.encoder.forward_chunk(x, x_lens, state, final)
        for b, (index, _, _) in enumerate(step):
            stream = active[index]
            stream.state = new_state.select(b)
            # frames in slices: a (T', V) matrix of a large vocabulary is big
            for t in range(0, int(y_lens[b]), CTC_SLICE):
                log_probs = model.ctc(y[b, t : min(t + CTC_SLICE, int(y_lens[b]))])  # (T'', V)
                stream.labels.append(log_probs.argmax(dim=-1).to(torch.int32).cpu().numpy())
                if self.keep_log_probs:
                    stream.log_probs.append(log_probs.float().cpu().numpy())

    def _finish(self, stream: _Active) -> StreamResult:
        labels = np.concatenate(stream.labels) if stream.labels else np.zeros(0, np.int32)
        log_probs = None
        if self.keep_log_probs:
            vocab = self.bundle.model.cfg.vocab_size
            log_probs = (
                np.concatenate(stream.log_probs) if stream.log_probs else np.zeros((0, vocab), np.float32)
            )
        return StreamResult(stream.source.name, labels, stream.num_samples, log_probs, stream.error)


def frame_seconds(bundle: ModelBundle) -> float:
    """Seconds per encoder frame (80 ms for 10 ms features and 8x subsampling)."""
    return bundle.fbank.frame_shift_ms * RATE / 1000.0


def token_time_offset(bundle: ModelBundle) -> float:
    """Where a token emitted at encoder frame j is placed after ``j * frame_seconds``: the centre
    of the audio that frame sees (its 15 feature frames: 82.5 ms for 25 ms / 10 ms features)."""
    fbank = bundle.fbank
    return ((RECEPTIVE_FIELD - 1) * fbank.frame_shift_ms + fbank.frame_length_ms) / 2000.0

