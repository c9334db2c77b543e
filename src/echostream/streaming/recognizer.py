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
hypotheses. Frames leave the encoder only when no future audio can change them ("exact" frames),
so they equal those of the long-form path on the whole recording. With ``right_context > 0`` a
frame is exact only ``latency_seconds`` after its audio (every layer waits for its own right
context: 10.9 s for the default model at 8/16/8); the hypothesis then also shows a provisional
tail, the frames after the exact ones decoded as if the audio ended now (recomputed each step).

How a segment's final result is made (:meth:`Recognizer.reset`):

- At a *silence* endpoint (rules 1 and 2 of :class:`EndpointConfig`, judged on the hypothesis:
  exact labels plus the provisional tail), the final result commits the hypothesis, tail
  included, so that a pause is answered within a chunk and the right context, not
  ``latency_seconds`` later. The exact frames of the committed tail arrive later; they are not
  decoded again (no word is sent twice), and each one that disagrees with what was committed is
  counted in :attr:`Stream.revised_frames`. A tail ending in ``silence_after_speech`` of blanks
  agreed with its exact frames at every endpoint measured with the small_en model on the samples;
  the general_en default revises one frame of them at 16/32/16 (a final "nin" for "ninth").
- At a *length* endpoint (rule 3) or a reset by hand, only exact frames are committed; the tail
  is decoded again, exactly, in the next segment.
- When the input finishes, every frame is exact.

So the finals of a stream, joined, equal the long-form transcript of the whole recording at the
same chunk/context setting, wherever committed tails agree with their exact frames
(``revised_frames == 0``), and always with ``right_context = 0``, where there is no tail.

Shape legend: T feature frames, F bins, T' encoder frames, V vocabulary.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import soxr
import torch

from echostream.audio import AudioError, check_sample_rate, normalize_samples
from echostream.encoders.base import STREAMING_CONTEXT, EncoderState, stack_states, user_context
from echostream.frontend.fbank import FbankConfig, FbankState, fbank_step, init_fbank_state
from echostream.heads.ctc import collapse_ctc
from echostream.model import Model
from echostream.text.vocab import Vocabulary
from echostream.transcript import Token, token_time


@dataclass(frozen=True, kw_only=True)
class EndpointConfig:
    """When an utterance ends, in seconds (as sherpa-onnx's three rules).

    An endpoint is detected when any rule holds:
    1. nothing has been decoded and ``silence_without_speech`` seconds of blanks have passed;
    2. something has been decoded and ``silence_after_speech`` seconds of blanks followed it;
    3. the utterance has lasted ``max_utterance`` seconds.
    Rules 1 and 2 are judged on the hypothesis (exact labels and the provisional tail), rule 3 on
    exact labels (see the module docstring for what each commits).
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
    """One caller's audio and recognition state. Create with :meth:`Recognizer.create_stream`.

    Frame bookkeeping (absolute encoder frames from the stream's start)::

        [ ... previous segments ... | committed tail | labels ... ] frames [ tail ... ]
                                    ^ exact frames not yet arrived of tails committed at endpoints

    ``labels`` are the exact labels of the current segment, ``tail`` the provisional labels after
    ``frames`` (the exact frames decoded so far). After a silence endpoint the segment may start
    past ``frames``: the exact frames of the committed tail are still to come.
    """

    def __init__(
        self, state: EncoderState, fbank: FbankConfig, vocab: Vocabulary, blank_id: int, *,
        frame_seconds: float, time_offset: float = 0.0,
    ) -> None:
        self._fbank_cfg = fbank
        self._time_offset = time_offset
        self._vocab = vocab
        self._blank_id = blank_id
        self._frame_seconds = frame_seconds
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
        self.frames = 0  # exact encoder frames decoded so far
        self.labels: list[int] = []  # exact labels of the current segment
        self.label_before: int | None = None  # the last label of the previous segment
        self.tail: list[int] = []  # provisional labels of the frames after `frames`
        self.committed: list[int] = []  # committed labels of frames [frames, segment_start)
        self.revised_frames = 0  # exact frames that disagreed with the tail committed for them
        self.log_probs: list[np.ndarray] = []  # (T', V) pieces, kept only if the recognizer asks
        self.samples_accepted = 0

    # ------------------------------------------------------------------------------- audio in

    def accept_waveform(self, sample_rate: int, samples: np.ndarray | Sequence[float]) -> None:
        """Append audio at ``sample_rate`` Hz: (N,) mono or (N, C) frames x channels (mixed down),
        float in [-1, 1] or int16/int32/int8/uint8 PCM (scaled), any piece size.

        Refused input (AudioError: a bad or changed rate, NaN/inf, a bad shape or dtype) leaves the
        stream exactly as it was.
        """
        if self.input_done:
            raise RuntimeError("accept_waveform after input_finished")
        rate = check_sample_rate(sample_rate)
        if self._input_rate is not None and rate != self._input_rate:
            raise AudioError(f"sample rate changed from {self._input_rate} to {rate} Hz mid-stream")
        x = normalize_samples(samples, allow_empty=True)  # (N,) float32
        if self._input_rate is None:
            self._input_rate = rate
            if rate != self._fbank_cfg.sample_rate:
                self._resampler = soxr.ResampleStream(
                    rate, self._fbank_cfg.sample_rate, 1, dtype="float32", quality="HQ"
                )
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

    def peek_features(self) -> np.ndarray:
        """(T, F) buffered feature frames, left in the buffer (see :meth:`drop_features`)."""
        if len(self._features) > 1:
            self._features = [np.concatenate(self._features)]
        if self._features:
            return self._features[0]
        return np.zeros((0, self._fbank_cfg.num_mel_bins), np.float32)

    def drop_features(self, count: int) -> None:
        """Remove the first ``count`` buffered frames (a decoding step consumed them)."""
        feats = self.peek_features()
        rest = feats[count:]
        self._features = [rest] if len(rest) else []
        self._buffered = len(rest)

    @property
    def buffered_frames(self) -> int:
        """Feature frames waiting to be decoded."""
        return self._buffered

    # ------------------------------------------------------------------- decoded frames in

    def add_exact(self, labels: list[int]) -> None:
        """Exact labels of the next frames; those of committed tails are checked, not kept."""
        n = min(len(labels), len(self.committed))
        self.revised_frames += sum(a != b for a, b in zip(labels[:n], self.committed[:n]))
        self.committed = self.committed[n:]
        self.labels.extend(labels[n:])
        self.frames += len(labels)

    @property
    def visible_tail(self) -> list[int]:
        """The provisional labels that belong to the current segment."""
        return self.tail[max(0, self.segment_start - self.frames) :]

    @property
    def hypothesis(self) -> list[int]:
        """Labels of the current segment: exact ones, then the provisional tail."""
        return self.labels + self.visible_tail

    # ---------------------------------------------------------------------------- result out

    def _result(self, labels: list[int], stable: list[int], is_final: bool) -> StreamResult:
        both = collapse_ctc(labels, self._blank_id, self.segment_start, self.label_before)
        tokens = [
            Token(self._vocab.token(t), token_time(f, self._frame_seconds, self._time_offset))
            for t, f in zip(both.tokens, both.token_frames)
        ]
        stable_tokens = collapse_ctc(stable, self._blank_id, self.segment_start, self.label_before).tokens
        return StreamResult(
            text=self._vocab.decode(both.tokens),
            tokens=tokens,
            is_final=is_final,
            segment=self.segment,
            start_time=self.segment_start * self._frame_seconds,
            stable_text=self._vocab.decode(stable_tokens),
        )

    @property
    def result(self) -> StreamResult:
        """The current segment's hypothesis (exact labels, then the provisional tail)."""
        return self._result(self.hypothesis, self.labels, self.flushed)

    def trailing_blank_seconds(self) -> float:
        """Seconds of blank frames at the end of the current segment's hypothesis."""
        n = 0
        for label in reversed(self.hypothesis):
            if label != self._blank_id:
                break
            n += 1
        return n * self._frame_seconds

    def segment_seconds(self) -> float:
        """Seconds of exact frames in the current segment."""
        return len(self.labels) * self._frame_seconds


class Recognizer:
    """Decodes many streams together. Holds no per-stream state; share one between callers."""

    def __init__(
        self,
        model: Model,
        *,
        chunk_size: int = STREAMING_CONTEXT.chunk,
        left_context: int = STREAMING_CONTEXT.left,
        right_context: int = STREAMING_CONTEXT.right,
        endpoint: EndpointConfig | None = None,
        provisional_tail: bool = True,
        keep_log_probs: bool = False,
    ) -> None:
        self.model = model
        self.context = user_context(chunk_size, left_context, right_context)
        encoder = model.bundle.model.encoder
        encoder.check_context(self.context)
        self.endpoint = endpoint if endpoint is not None else EndpointConfig()
        self.provisional_tail = provisional_tail
        self.keep_log_probs = keep_log_probs
        self._tail_needed = encoder.latency_frames(self.context) > 0
        self._chunk_features = self.context.chunk * encoder.subsampling  # feature frames of a chunk

    @property
    def latency_seconds(self) -> float:
        """Algorithmic latency of exact frames: the chunk plus the right context every layer
        waits for (seconds). The hypothesis shows a provisional tail sooner."""
        encoder = self.model.bundle.model.encoder
        frames = self.context.chunk + encoder.latency_frames(self.context)
        return frames * self.model.bundle.frame_seconds  # type: ignore[no-any-return]

    def create_stream(self) -> Stream:
        bundle = self.model.bundle
        state = bundle.model.init_state(1, self.context, self.model.device)
        return Stream(state, bundle.fbank, bundle.vocab, bundle.model.cfg.blank_id,
                      frame_seconds=bundle.frame_seconds, time_offset=bundle.token_time_offset)

    def is_ready(self, stream: Stream) -> bool:
        """True when the stream has a chunk's worth of new audio, or its final flush is due."""
        if stream.flushed:
            return False
        if stream.input_done:
            return True
        return stream.buffered_frames >= self._chunk_features

    def decode_stream(self, stream: Stream) -> None:
        self.decode_streams([stream])

    def decode_streams(self, streams: Sequence[Stream]) -> None:
        """One decoding step for every ready stream, batched in one encoder call.

        All or nothing: if the step raises, no stream has changed (its audio is still buffered),
        so the caller may retry the streams, for instance one at a time to find a culprit.
        """
        ready = [s for s in streams if self.is_ready(s)]
        if not ready:
            return
        model = self.model.bundle.model
        device = self.model.device
        feats = [torch.from_numpy(s.peek_features()) for s in ready]
        x = torch.nn.utils.rnn.pad_sequence(feats, batch_first=True).to(device)
        x_lens = torch.tensor([f.shape[0] for f in feats], device=device)
        final = torch.tensor([s.input_done for s in ready], device=device)
        with torch.inference_mode():
            y, y_lens, state = model.forward_chunk(x, x_lens, stack_states([s.state for s in ready]), final)
            log_probs = model.ctc(y)  # (B, T', V)
            labels = log_probs.argmax(dim=-1)  # (B, T')
            tails: list[list[int]] = [[] for _ in ready]
            unfinished = [i for i, s in enumerate(ready) if not s.input_done]
            if self.provisional_tail and self._tail_needed and unfinished:
                pending = stack_states([state.select(i) for i in unfinished])
                empty = x.new_zeros((len(unfinished), 0, x.shape[2]))
                t, t_lens, _ = model.forward_chunk(
                    empty, torch.zeros(len(unfinished), dtype=torch.long, device=device), pending,
                    torch.ones(len(unfinished), dtype=torch.bool, device=device),
                )
                t_labels = model.ctc(t).argmax(dim=-1)
                for j, i in enumerate(unfinished):
                    tails[i] = t_labels[j, : int(t_lens[j])].tolist()
            new_labels = [labels[i, : int(y_lens[i])].tolist() for i in range(len(ready))]
            kept = [log_probs[i, : len(n)].cpu().numpy() for i, n in enumerate(new_labels)] if self.keep_log_probs else []
        # nothing above changed a stream; from here on nothing can fail
        for i, s in enumerate(ready):
            s.drop_features(feats[i].shape[0])
            s.state = state.select(i)
            s.add_exact(new_labels[i])
            if self.keep_log_probs:
                s.log_probs.append(kept[i])
            s.tail = tails[i]
            if s.input_done:
                s.flushed = True

    def endpoint_rule(self, stream: Stream) -> int | None:
        """Which endpoint rule of :class:`EndpointConfig` (1, 2 or 3) holds now, if any."""
        rules = self.endpoint
        if not rules.enabled:
            return None
        hypothesis = stream.hypothesis
        if hypothesis:
            silence = stream.trailing_blank_seconds()
            spoke = any(label != stream._blank_id for label in hypothesis)
            if not spoke and silence >= rules.silence_without_speech:
                return 1
            if spoke and silence >= rules.silence_after_speech:
                return 2
        if stream.labels and stream.segment_seconds() >= rules.max_utterance:
            return 3
        return None

    def is_endpoint(self, stream: Stream) -> bool:
        """Whether the current segment has ended by the endpoint rules."""
        return self.endpoint_rule(stream) is not None

    def reset(self, stream: Stream) -> StreamResult:
        """End the current segment and start the next; returns the segment's final result.

        At a silence endpoint (rules 1, 2) the hypothesis is committed, provisional tail
        included; otherwise only the exact labels (see the module docstring). The encoder keeps
        its context: recognition is continuous.
        """
        silence = self.endpoint_rule(stream) in (1, 2)
        tail = stream.visible_tail if silence else []
        final = stream._result(stream.labels + tail, stream.labels + tail, True)
        committed = stream.labels + tail
        stream.segment += 1
        if committed:  # a token running across the cut is not emitted twice
            stream.label_before = committed[-1]
        stream.committed = stream.committed + tail
        stream.segment_start = max(stream.segment_start + len(committed), stream.frames)
        stream.labels = []
        return final
