"""Long-form transcription: many files of any length, block by block, with bounded memory.

Each input is a stream. Audio is read, featurised and encoded block by block; the encoder state
(whatever the encoder carries: caches, frames waiting for their right context) is carried from
block to block, so the result does not depend on the block size and peak memory does not grow
with duration. Several inputs are encoded together in one batch (continuous batching: when one
input ends, the next one takes its place).

This is the one long-form driver: what is done with the encoder frames of each input is a
:class:`FrameSink` (greedy labels, or a search strategy decoding piece by piece).

Shape legend: T' encoder frames, D model dim, V vocabulary.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
from torch import Tensor

from echostream.audio import AudioError, iter_audio_blocks, seconds_to_samples
from echostream.encoders.base import ChunkContext, EncoderState, stack_states
from echostream.frontend.fbank import FbankState, fbank_step, init_fbank_state
from echostream.heads.search import SearchStrategy, piece_end
from echostream.models.checkpoint import ModelBundle
from echostream.runtime import release_free_memory

MIN_BLOCK_SECONDS = 0.01  # audio read per step at least: one 10 ms feature frame shift
CTC_SLICE = 512  # encoder frames projected to the vocabulary at a time


@dataclass(frozen=True)
class AudioInput:
    """One input: a file path, or samples already at the model's rate."""

    name: str
    path: str | None = None
    samples: np.ndarray | None = None  # (S,) float32 at the model's sample rate
    channel: int | None = None  # of the file: this channel only (None: all averaged)

    def blocks(self, block_seconds: float, sample_rate: int) -> Iterator[np.ndarray]:
        """The audio in blocks of ``block_seconds`` (the last one shorter)."""
        if self.path is not None:
            return iter_audio_blocks(self.path, block_seconds, sample_rate, channel=self.channel)
        assert self.samples is not None
        size = max(1, seconds_to_samples(block_seconds, sample_rate))
        samples = self.samples
        return (samples[i : i + size] for i in range(0, max(len(samples), 1), size))


@dataclass
class StreamResult:
    """What decoding one input produced: per-frame labels, optionally all log-probs."""

    name: str
    frame_labels: np.ndarray  # (T',) int32 label per encoder frame (the best path)
    num_samples: int
    log_probs: np.ndarray | None = None  # (T', V) float32, only when asked for
    error: str | None = None  # with frame_labels of the audio read before the error, if any


class FrameSink(Protocol):
    """What becomes of one input's encoder frames, slice by slice, in order."""

    def add(self, encoder_out: Tensor, log_probs: Tensor) -> None:
        """encoder_out (T'', D) and their CTC log-probabilities (T'', V)."""
        ...

    def finish(self) -> np.ndarray:
        """(T',) int32 label per frame: the best path of what was decoded."""
        ...


class GreedySink:
    """Best label per frame (and, if asked, every log-probability)."""

    def __init__(self, keep_log_probs: bool = False) -> None:
        self.keep_log_probs = keep_log_probs
        self.labels: list[np.ndarray] = []
        self.log_probs: list[np.ndarray] = []

    def add(self, encoder_out: Tensor, log_probs: Tensor) -> None:
        self.labels.append(log_probs.argmax(dim=-1).to(torch.int32).cpu().numpy())
        if self.keep_log_probs:
            self.log_probs.append(log_probs.float().cpu().numpy())

    def finish(self) -> np.ndarray:
        return np.concatenate(self.labels) if self.labels else np.zeros(0, np.int32)


class SearchSink:
    """A search strategy decoding the frames piece by piece (bounded memory for any length).

    The CTC frames are cut where the best path has ``silence_frames`` blanks after a token, and at
    most every ``max_frames``; a piece whose best path is all blank gives no tokens without being
    searched. Labels returned: the best CTC path of each piece's chosen sequence.
    """

    def __init__(self, strategy: SearchStrategy, *, blank_id: int, silence_frames: int, max_frames: int) -> None:
        self.strategy, self.blank = strategy, blank_id
        self.silence_frames, self.max_frames = silence_frames, max_frames
        self.pending_enc: list[Tensor] = []  # (P, D) pieces of frames not yet decoded
        self.pending_lp: list[Tensor] = []  # (P, V)
        self.labels: list[int] = []  # best label of each pending frame
        self.start = 0  # absolute frame of the first pending frame
        self.tokens: list[tuple[int, int, int]] = []  # (token, first frame, last frame)

    def add(self, encoder_out: Tensor, log_probs: Tensor) -> None:
        self.pending_enc.append(encoder_out)
        self.pending_lp.append(log_probs)
        self.labels.extend(log_probs.argmax(dim=-1).tolist())
        while (n := piece_end(self.labels, blank_id=self.blank, silence_frames=self.silence_frames,
                              max_frames=self.max_frames)) is not None:
            self._decode(n)

    def _decode(self, n: int) -> None:
        enc, lp = torch.cat(self.pending_enc), torch.cat(self.pending_lp)  # (P, D), (P, V)
        if any(label != self.blank for label in self.labels[:n]):
            best = self.strategy(lp[:n], enc[:n])[0]
            for token, first, last in zip(best.tokens, best.token_frames, best.token_end_frames):
                self.tokens.append((token, self.start + first, self.start + last))
        self.pending_enc, self.pending_lp, self.labels = [enc[n:]], [lp[n:]], self.labels[n:]
        self.start += n

    def finish(self) -> np.ndarray:
        if self.labels:
            self._decode(len(self.labels))
        labels = np.full(self.start, self.blank, np.int32)
        for token, first, last in self.tokens:
            labels[first : last + 1] = token
        return labels


@dataclass
class _Active:
    source: AudioInput
    blocks: Iterator[np.ndarray]
    next_block: np.ndarray | None
    fbank: FbankState
    state: EncoderState
    sink: FrameSink
    num_samples: int = 0
    error: str | None = None  # why reading stopped before the end of the input


def _next_or_none(blocks: Iterator[np.ndarray]) -> np.ndarray | None:
    return next(blocks, None)


class LongFormDecoder:
    """Encodes inputs of any length with carried state; see the module docstring.

    ``sink`` makes the :class:`FrameSink` of each input (default: greedy labels, with all
    log-probabilities when ``keep_log_probs``).
    """

    def __init__(
        self,
        bundle: ModelBundle,
        context: ChunkContext,
        *,
        block_seconds: float = 30.0,
        batch_seconds: float = 300.0,
        keep_log_probs: bool = False,
        device: torch.device | str = "cpu",
        sink: Callable[[], FrameSink] | None = None,
    ) -> None:
        if not MIN_BLOCK_SECONDS <= block_seconds < math.inf:  # NaN too
            raise ValueError(f"block_seconds must be a number of seconds >= {MIN_BLOCK_SECONDS} (a feature "
                             f"frame's shift), got {block_seconds}")
        if not 0 < batch_seconds < math.inf:
            raise ValueError(f"batch_seconds must be a positive number of seconds, got {batch_seconds}")
        bundle.model.encoder.check_context(context)
        self.bundle = bundle
        self.context = context
        self.block_seconds = min(block_seconds, batch_seconds)
        self.max_streams = max(1, int(batch_seconds // self.block_seconds))
        self.keep_log_probs = keep_log_probs
        self.device = torch.device(device)
        self.sink = sink if sink is not None else (lambda: GreedySink(keep_log_probs))

    def _open(self, source: AudioInput) -> _Active:
        """Start a stream; reading its first block raises AudioError for unusable input."""
        blocks = source.blocks(self.block_seconds, self.bundle.fbank.sample_rate)
        first = next(blocks, None)
        if first is None:
            raise AudioError(f"{source.name}: no audio samples")
        return _Active(
            source=source,
            blocks=blocks,
            next_block=first,
            fbank=init_fbank_state(),
            state=self.bundle.model.init_state(1, self.context, self.device),
            sink=self.sink(),
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
                    self._encode(step, active)
                for index, _, is_final in step:
                    if is_final:
                        finished.append((index, self._finish(active.pop(index))))
                release_free_memory()
                if progress is not None:
                    progress(consumed / rate)
            yield finished

    def _encode(self, step: list[tuple[int, np.ndarray, bool]], active: dict[int, _Active]) -> None:
        """One encoder call for the streams of ``step``: (index, new features (T, F), is_final)."""
        model = self.bundle.model
        feats_t = [torch.from_numpy(f) for _, f, _ in step]
        x = torch.nn.utils.rnn.pad_sequence(feats_t, batch_first=True).to(self.device)
        x_lens = torch.tensor([f.shape[0] for f in feats_t], device=self.device)
        final = torch.tensor([fin for _, _, fin in step], device=self.device)
        state = stack_states([active[i].state for i, _, _ in step])
        y, y_lens, new_state = model.forward_chunk(x, x_lens, state, final)
        for b, (index, _, _) in enumerate(step):
            stream = active[index]
            stream.state = new_state.select(b)
            # frames in slices: a (T', V) matrix of a large vocabulary is big
            for t in range(0, int(y_lens[b]), CTC_SLICE):
                enc = y[b, t : min(t + CTC_SLICE, int(y_lens[b]))]  # (T'', D)
                stream.sink.add(enc, model.ctc(enc))

    def _finish(self, stream: _Active) -> StreamResult:
        labels = stream.sink.finish()
        log_probs = None
        if self.keep_log_probs:
            assert isinstance(stream.sink, GreedySink)
            vocab = self.bundle.model.cfg.vocab_size
            pieces = stream.sink.log_probs
            log_probs = np.concatenate(pieces) if pieces else np.zeros((0, vocab), np.float32)
        return StreamResult(stream.source.name, labels, stream.num_samples, log_probs, stream.error)
