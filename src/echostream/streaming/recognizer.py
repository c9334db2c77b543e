"""Real-time recognition: a stateless, shared Recognizer and per-caller Streams.

In the style of sherpa-onnx::

    rec = Recognizer(model, chunk_size=8, left_context=32, right_context=0)
    s = rec.create_stream()
    s.accept_waveform(8000, samples)            # any rate, float in [-1, 1] or int16
    while rec.is_ready(s):
        rec.decode_streams([s])                 # many streams are decoded in one batch
    s.result.text, rec.is_endpoint(s)

A Stream owns everything of one caller: its resampler, its feature-extraction state, its encoder
state (attention/convolution caches and the frames still waiting for right context), and its
hypotheses. Frames leave the encoder only when no future audio can change them, so the *final*
labels equal those of the long-form path on the whole recording. With ``right_context > 0`` that
takes ``num_blocks * (chunk + right)`` frames; partial results then also show a provisional tail,
decoded as if the audio ended now (recomputed on each step, never kept).

Shape legend: T feature frames, F bins, T' encoder frames, V vocabulary.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import soxr
import torch

from echostream.audio import MIN_SAMPLE_RATE, AudioError
from echostream.encoders.base import ChunkContext
from echostream.encoders.chunkformer import ChunkFormerState, stack_states
from echostream.frontend.fbank import FbankConfig, FbankState, fbank_step, init_fbank_state
from echostream.heads.ctc import collapse_ctc
from echostream.model import Model
from echostream.nn.subsampling import RATE
from echostream.text.vocab import Vocabulary
from echostream.transcript import Token


@dataclass(frozen=True, kw_only=True)
class EndpointConfig:
    """When an utterance ends, in seconds (as sherpa-onnx's three rules).

    An endpoint is detected when any rule holds:
    1. nothing has been decoded and ``silence_without_speech`` seconds of blanks have passed;
    2. something has been decoded and ``silence_after_speech`` seconds of blanks followed it;
    3. the utterance has lasted ``max_utterance`` seconds.
    """

    enabled: bool = True
    silence_without_speech: float = 2.4
    silence_after_speech: float = 0.8
    max_utterance: float = 20.0

    def __post_init__(self) -> None:
        for name in ("silence_without_speech", "silence_after_speech", "max_utterance"):
            if getattr(self, name) <= 0:
                raise ValueError(f"EndpointConfig.{name} must be positive, got {getattr(self, name)}")


@dataclass(frozen=True)
class StreamResult:
    """What a stream has recognised in its current segment.

    ``tokens`` carry absolute times (seconds from the stream's start). ``is_final`` is True once
    the segment ended at an endpoint or the input finished and all of it was decoded.
    """

    text: str
    tokens: list[Token]
    is_final: bool
    segment: int
    start_time: float
    stable_text: str  # the part that future audio cannot change


class Stream:
    """One caller's audio and recognition state. Create with :meth:`Recognizer.create_stream`."""

    def __init__(
        self, state: ChunkFormerState, fbank: FbankConfig, vocab: Vocabulary, blank_id: int
    ) -> None:
        self._fbank_cfg = fbank
        self._vocab = vocab
        self._blank_id = blank_id
        self._frame_seconds = fbank.frame_shift_ms * RATE / 1000.0
        self._input_rate: int | None = None
        self._resampler: soxr.ResampleStream | None = None
        self._fbank: FbankState = init_fbank_state()
        self._features: list[np.ndarray] = []  # (T, F) pieces not yet given to the encoder
        self._buffered = 0
        self.state = state
        self.input_done = False
        self.flushed = False
        self.segment = 0
        self.segment_start = 0  # encoder frame where the current segment starts
        self.frames = 0  # encoder frames decoded for good
        self.labels: list[int] = []  # final labels of the current segment
        self.label_before: int | None = None  # the last label of the previous segment
        self.tail: list[int] = []  # provisional labels after them
        self.log_probs: list[np.ndarray] = []  # (T', V) pieces, kept only if the recognizer asks
        self.samples_accepted = 0

    # ------------------------------------------------------------------------------- audio in

    def accept_waveform(self, sample_rate: int, samples: np.ndarray | Sequence[float]) -> None:
        """Append audio: float samples in [-1, 1] or int16, mono, at ``sample_rate`` Hz."""
        if self.input_done:
            raise RuntimeError("accept_waveform after input_finished")
        if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, np.integer)):
            raise AudioError(f"sample rate must be an integer, got {sample_rate!r}")
        if sample_rate < MIN_SAMPLE_RATE:
            raise AudioError(f"sample rate {sample_rate} Hz is below the {MIN_SAMPLE_RATE} Hz minimum")
        if self._input_rate is None:
            self._input_rate = int(sample_rate)
            if self._input_rate != self._fbank_cfg.sample_rate:
                self._resampler = soxr.ResampleStream(
                    self._input_rate, self._fbank_cfg.sample_rate, 1, dtype="float32", quality="HQ"
                )
        elif sample_rate != self._input_rate:
            raise AudioError(f"sample rate changed from {self._input_rate} to {sample_rate} Hz mid-stream")
        x = np.asarray(samples)
        if x.dtype == np.int16:
            x = x.astype(np.float32) / 32768.0
        x = np.ascontiguousarray(x, dtype=np.float32).reshape(-1)
        if not np.all(np.isfinite(x)):
            raise AudioError("samples contain NaN or infinity")
        self.samples_accepted += len(x)
        if self._resampler is not None:
            x = self._resampler.resample_chunk(x, last=False)
        self._push(x)

    def _push(self, samples: np.ndarray) -> None:
        feats, self._fbank = fbank_step(samples, self._fbank, self._fbank_cfg)
        if len(feats):
            self._features.append(feats)
            self._buffered += len(feats)

    def input_finished(self) -> None:
        """No more audio will come; the next decoding steps decode the rest."""
        if self.input_done:
            return
        if self._resampler is not None:
            self._push(self._resampler.resample_chunk(np.zeros(0, np.float32), last=True))
        self.input_done = True

    def take_features(self) -> np.ndarray:
        """(T, F) buffered feature frames, removed from the buffer."""
        if self._features:
            feats = np.concatenate(self._features)
        else:
            feats = np.zeros((0, self._fbank_cfg.num_mel_bins), np.float32)
        self._features, self._buffered = [], 0
        return feats

    @property
    def buffered_frames(self) -> int:
        """Feature frames waiting to be decoded."""
        return self._buffered

    # ---------------------------------------------------------------------------- result out

    @property
    def result(self) -> StreamResult:
        """The current segment's hypothesis (final labels, then the provisional tail)."""
        stable = collapse_ctc(self.labels, self._blank_id, self.segment_start, self.label_before)
        both = collapse_ctc(self.labels + self.tail, self._blank_id, self.segment_start, self.label_before)
        tokens = [
            Token(self._vocab.token(t), f * self._frame_seconds)
            for t, f in zip(both.tokens, both.token_frames)
        ]
        return StreamResult(
            text=self._vocab.decode(both.tokens),
            tokens=tokens,
            is_final=self.flushed,
            segment=self.segment,
            start_time=self.segment_start * self._frame_seconds,
            stable_text=self._vocab.decode(stable.tokens),
        )

    def trailing_blank_seconds(self) -> float:
        """Seconds of blank frames at the end of the final labels of this segment."""
        n = 0
        for label in reversed(self.labels):
            if label != self._blank_id:
                break
            n += 1
        return n * self._frame_seconds

    def segment_seconds(self) -> float:
        return len(self.labels) * self._frame_seconds


class Recognizer:
    """Decodes many streams together. Holds no per-stream state; share one between callers."""

    def __init__(
        self,
        model: Model,
        *,
        chunk_size: int = 8,
        left_context: int = 32,
        right_context: int = 0,
        endpoint: EndpointConfig | None = None,
        provisional_tail: bool = True,
        keep_log_probs: bool = False,
    ) -> None:
        self.model = model
        self.context = ChunkContext(chunk=chunk_size, left=left_context, right=right_context)
        self.endpoint = endpoint if endpoint is not None else EndpointConfig()
        self.provisional_tail = provisional_tail
        self.keep_log_probs = keep_log_probs
        encoder = model.bundle.model.encoder
        self._tail_needed = encoder.latency_frames(self.context) > 0

    @property
    def latency_seconds(self) -> float:
        """Algorithmic latency of final results: the chunk plus the right context every layer
        waits for (seconds). Partial results show a provisional tail sooner."""
        encoder = self.model.bundle.model.encoder
        frames = self.context.chunk + encoder.latency_frames(self.context)
        return frames * self.model.bundle.fbank.frame_shift_ms * RATE / 1000.0

    def create_stream(self) -> Stream:
        bundle = self.model.bundle
        state = bundle.model.encoder.init_state(1, self.context, self.model.device)
        return Stream(state, bundle.fbank, bundle.vocab, bundle.model.cfg.blank_id)

    def is_ready(self, stream: Stream) -> bool:
        """True when the stream has a chunk's worth of new audio, or its final flush is due."""
        if stream.flushed:
            return False
        if stream.input_done:
            return True
        return stream.buffered_frames >= self.context.chunk * RATE

    def decode_stream(self, stream: Stream) -> None:
        self.decode_streams([stream])

    def decode_streams(self, streams: Sequence[Stream]) -> None:
        """One decoding step for every ready stream, batched in one encoder call."""
        ready = [s for s in streams if self.is_ready(s)]
        if not ready:
            return
        model = self.model.bundle.model
        device = self.model.device
        feats = [torch.from_numpy(s.take_features()) for s in ready]
        x = torch.nn.utils.rnn.pad_sequence(feats, batch_first=True).to(device)
        x_lens = torch.tensor([f.shape[0] for f in feats], device=device)
        final = torch.tensor([s.input_done for s in ready], device=device)
        with torch.inference_mode():
            y, y_lens, state = model.encoder.forward_chunk(x, x_lens, stack_states([s.state for s in ready]), final)
            log_probs = model.ctc(y)  # (B, T', V)
            labels = log_probs.argmax(dim=-1)  # (B, T')
            tails: list[list[int]] = [[] for _ in ready]
            unfinished = [i for i, s in enumerate(ready) if not s.input_done]
            if self.provisional_tail and self._tail_needed and unfinished:
                pending = stack_states([state.select(i) for i in unfinished])
                empty = x.new_zeros((len(unfinished), 0, x.shape[2]))
                t, t_lens, _ = model.encoder.forward_chunk(
                    empty, torch.zeros(len(unfinished), dtype=torch.long, device=device), pending,
                    torch.ones(len(unfinished), dtype=torch.bool, device=device),
                )
                t_labels = model.ctc(t).argmax(dim=-1)
                for j, i in enumerate(unfinished):
                    tails[i] = t_labels[j, : int(t_lens[j])].tolist()
        for i, s in enumerate(ready):
            s.state = state.select(i)
            new = labels[i, : int(y_lens[i])].tolist()
            s.labels.extend(new)
            s.frames += len(new)
            if self.keep_log_probs:
                s.log_probs.append(log_probs[i, : len(new)].cpu().numpy())
            s.tail = tails[i]
            if s.input_done:
                s.flushed = True

    def is_endpoint(self, stream: Stream) -> bool:
        """Whether the current segment has ended by the endpoint rules (on final frames)."""
        rules = self.endpoint
        if not rules.enabled or not stream.labels:
            return False
        silence = stream.trailing_blank_seconds()
        spoke = any(label != stream._blank_id for label in stream.labels)
        if not spoke and silence >= rules.silence_without_speech:
            return True
        if spoke and silence >= rules.silence_after_speech:
            return True
        return stream.segment_seconds() >= rules.max_utterance

    def reset(self, stream: Stream) -> None:
        """Start the next segment. The encoder keeps its context: recognition is continuous."""
        stream.segment += 1
        stream.segment_start = stream.frames
        if stream.labels:  # a token running across the cut is not emitted twice
            stream.label_before = stream.labels[-1]
        stream.labels = []
        stream.tail = []
