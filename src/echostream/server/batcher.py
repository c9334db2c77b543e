"""One decoding task for all connections: sessions queue audio, the batcher decodes them together.

A :class:`Session` is one connection's side of the work: the PCM it received and not yet handed
over (``inbox``), its :class:`~echostream.streaming.recognizer.Stream`, and a queue of replies for
the connection to send (``outbox``). Connections never touch the Stream: the batcher alone feeds
it and decodes it, one step at a time in a worker thread, so nothing is shared between threads
while a step runs and the event loop stays free to move audio and replies.

One step (:meth:`Batcher._step`, in the worker thread):
1. hand each session at most one chunk of its inbox to its Stream (and ``input_finished`` once the
   client said ``end`` and the inbox is empty): a stream sent faster than real time is decoded
   chunk by chunk, as a live one is, so its endpoints fall where they would in real time;
2. take the ready streams, least recently decoded first, at most ``max_batch`` of them, and decode
   them in one ``Recognizer.decode_streams`` call;
3. turn each decoded stream's result into replies: a final result when the input is finished or an
   endpoint was reached, else a partial result when the text changed.

Then, on the event loop, the replies go into the sessions' outboxes, and the next step starts at
once while any session has audio or a ready stream, or when a connection brings more.

Whole files (``POST /transcribe``) are :class:`FileJob` s decoded by the same worker, at a lower
priority: a job advances by one long-form step (``FILE_BLOCK_SECONDS`` of audio) only in a step
where no stream is ready, so uploads use the time live streams leave and never hold a live stream
up by more than one such step. Under a load that keeps streams ready all the time, uploads wait.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from echostream.runtime import release_free_memory
from echostream.server import protocol
from echostream.streaming.recognizer import Recognizer, Stream, StreamResult
from echostream.transcript import Transcript

MAX_PENDING_SECONDS = 10.0
"""A connection stops reading once this much of its audio waits in the inbox (backpressure)."""
FILE_BLOCK_SECONDS = 2.0
"""Audio of an uploaded file decoded in one step (the longest a ready stream waits for a job)."""

log = logging.getLogger("echostream.server")


@dataclass(frozen=True)
class CloseRequest:
    """An outbox item: send ``message`` (a ``failed`` reply) if any, then close with ``code``."""

    code: protocol.CloseCode
    message: str | None = None


Reply = dict[str, Any] | CloseRequest


@dataclass(eq=False)
class Session:
    """One connection's audio, stream and replies.

    The event loop owns ``inbox``, ``pending``, ``received``, ``end_requested``, ``closed`` and
    ``outbox``; the batcher's worker thread owns ``stream``, ``last_text``, ``done``, ``last_step``
    and ``results`` (the loop reads them only between steps).
    """

    stream: Stream
    sample_rate: int
    continuous: bool
    outbox: asyncio.Queue[Reply]  # the connection sends these, in order
    inbox: deque[np.ndarray] = field(default_factory=deque)  # (N,) int16 pieces, oldest first
    pending: int = 0  # samples in the inbox
    end_requested: bool = False
    closed: bool = False
    room: asyncio.Event = field(default_factory=asyncio.Event)  # set while the inbox has room
    # worker side
    last_text: str = ""
    done: bool = False
    last_step: int = -1
    results: int = 0  # final results produced
    received: int = 0  # samples the client sent

    def __post_init__(self) -> None:
        self.room.set()

    @property
    def audio_seconds(self) -> float:
        return self.received / self.sample_rate


@dataclass
class _Feed:
    session: Session
    samples: np.ndarray  # (N,) int16
    finish: bool


@dataclass(eq=False)
class FileJob:
    """A whole file to transcribe between stream steps; ``future`` gets its Transcript."""

    steps: Iterator[list[tuple[int, Transcript]]]  # Model.transcription_steps of one input
    future: asyncio.Future[Transcript]
    result: Transcript | None = None  # worker side
    error: Exception | None = None


@dataclass
class _StepOutcome:
    replies: list[tuple[Session, list[Reply]]]
    more: bool  # some stream is still ready
    job_done: FileJob | None = None


class Batcher:
    """Owns the shared Recognizer and decodes every session's stream in batches.

    Use from the event loop: :meth:`open` a session, :meth:`push` audio, :meth:`finish` it,
    :meth:`close` it when its connection ends. :meth:`run` is the decoding task.
    """

    def __init__(self, recognizer: Recognizer, *, max_batch: int) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        self.recognizer = recognizer
        self.max_batch = max_batch
        self.sessions: list[Session] = []
        self.jobs: deque[FileJob] = deque()
        self._wake = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="echostream-decode")
        self._steps = 0
        self._frame_seconds = recognizer.model.bundle.frame_seconds
        self._feed_seconds = recognizer.context.chunk * self._frame_seconds  # per session and step

    # ---------------------------------------------------------------------- connection side

    def open(self, sample_rate: int, continuous: bool, outbox: asyncio.Queue[Reply]) -> Session:
        """A new session with its own Stream; its replies go to ``outbox``."""
        session = Session(self.recognizer.create_stream(), sample_rate, continuous, outbox)
        self.sessions.append(session)
        return session

    def push(self, session: Session, samples: np.ndarray) -> None:
        """Queue (N,) int16 samples for decoding."""
        if session.end_requested or session.closed or not len(samples):
            return
        session.inbox.append(samples)
        session.pending += len(samples)
        session.received += len(samples)
        if session.pending >= MAX_PENDING_SECONDS * session.sample_rate:
            session.room.clear()
        self._wake.set()

    def finish(self, session: Session) -> None:
        """The client sent ``end``: decode the rest, then send the last final result."""
        session.end_requested = True
        self._wake.set()

    def close(self, session: Session) -> None:
        """The connection is gone: drop its stream (a step under way finishes, its replies are lost)."""
        session.closed = True
        session.room.set()
        if session in self.sessions:
            self.sessions.remove(session)

    def submit(self, steps: Iterator[list[tuple[int, Transcript]]]) -> asyncio.Future[Transcript]:
        """Queue a whole-file transcription (``Model.transcription_steps`` of one input)."""
        job = FileJob(steps, asyncio.get_running_loop().create_future())
        self.jobs.append(job)
        job.future.add_done_callback(lambda _: self._drop(job))
        self._wake.set()
        return job.future

    def _drop(self, job: FileJob) -> None:
        if job in self.jobs:  # cancelled: the client went away
            self.jobs.remove(job)

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    # --------------------------------------------------------------------------- decode task

    async def run(self) -> None:
        """Decode until cancelled."""
        loop = asyncio.get_running_loop()
        while True:
            await self._wake.wait()
            self._wake.clear()
            feeds = self._take_feeds()
            sessions = [s for s in self.sessions if not s.done]
            job = self.jobs[0] if self.jobs else None
            if not sessions and job is None:
                continue
            try:
                outcome = await loop.run_in_executor(self._executor, self._step, feeds, sessions, job)
            except Exception as err:  # one failed step must not stop the server
                log.exception("decoding step failed")
                outcome = _StepOutcome([(s, [CloseRequest(protocol.CloseCode.INTERNAL, f"decoding failed: {err}")])
                                        for s in sessions], more=False)
                for s in sessions:
                    s.done = True
            for session, replies in outcome.replies:
                if session.closed:
                    continue
                for reply in replies:
                    session.outbox.put_nowait(reply)
            finished = outcome.job_done
            if finished is not None:
                self._drop(finished)
                if not finished.future.done():
                    if finished.error is not None:
                        finished.future.set_exception(finished.error)
                    else:
                        assert finished.result is not None
                        finished.future.set_result(finished.result)
            if outcome.more or self.jobs or any(not s.done and (s.inbox or s.end_requested) for s in self.sessions):
                self._wake.set()

    def _take_feeds(self) -> list[_Feed]:
        feeds = []
        for session in self.sessions:
            if session.done:  # finished or failed: what still comes in is dropped
                session.inbox.clear()
                session.pending = 0
                session.room.set()
                continue
            budget = round(self._feed_seconds * session.sample_rate)
            pieces: list[np.ndarray] = []
            while session.inbox and budget > 0:
                piece = session.inbox.popleft()
                if len(piece) > budget:
                    session.inbox.appendleft(piece[budget:])
                    piece = piece[:budget]
                pieces.append(piece)
                budget -= len(piece)
                session.pending -= len(piece)
            finish = session.end_requested and not session.inbox
            if pieces or finish:
                feeds.append(_Feed(session, np.concatenate(pieces) if pieces else np.zeros(0, np.int16), finish))
            if session.pending < MAX_PENDING_SECONDS * session.sample_rate:
                session.room.set()
        return feeds

    def _step(self, feeds: list[_Feed], sessions: list[Session], job: FileJob | None = None) -> _StepOutcome:
        """One decoding step; runs in the worker thread. Streams first; ``job`` advances only if
        no stream was ready."""
        rec = self.recognizer
        failed: list[tuple[Session, list[Reply]]] = []
        for feed in feeds:
            stream = feed.session.stream
            try:
                if len(feed.samples):
                    stream.accept_waveform(feed.session.sample_rate, feed.samples)
                if feed.finish:
                    stream.input_finished()
            except ValueError as err:  # AudioError: the audio cannot be used
                feed.session.done = True
                failed.append((feed.session, [CloseRequest(protocol.CloseCode.BAD_DATA, str(err))]))
        ready = [s for s in sessions if not s.done and rec.is_ready(s.stream)]
        ready.sort(key=lambda s: s.last_step)
        batch = ready[: self.max_batch]
        waiting = len(ready) > len(batch)
        if batch:
            batch, broken = self._decode(batch)
            failed.extend(
                (session, [CloseRequest(protocol.CloseCode.INTERNAL, f"decoding failed: {_one_line(err)}")])
                for session, err in broken
            )
            self._steps += 1
            release_free_memory()
        replies = list(failed)
        for session in batch:
            session.last_step = self._steps
            replies.append((session, self._replies(session)))
        more = waiting or any(not s.done and rec.is_ready(s.stream) for s in batch)
        done = None
        if not ready and job is not None and self._advance(job):
            done = job
        return _StepOutcome(replies, more, done)

    @staticmethod
    def _advance(job: FileJob) -> bool:
        """One step of a file job; True when it has finished (with a result or an error)."""
        try:
            for finished in next(job.steps):
                job.result = finished[1]
        except StopIteration:
            if job.result is None:
                job.error = RuntimeError("the transcription ended without a result")
            return True
        except Exception as err:  # noqa: BLE001 - reported to the request, logged there
            job.error = err
            return True
        return job.result is not None

    def _decode(self, batch: list[Session]) -> tuple[list[Session], list[tuple[Session, Exception]]]:
        """Decode ``batch`` in one step; if that fails, each stream alone, so that only the
        streams that fail by themselves fail (a failed step changes no stream, see
        ``Recognizer.decode_streams``). Returns the decoded sessions and the failed ones."""
        rec = self.recognizer
        try:
            rec.decode_streams([s.stream for s in batch])
            return batch, []
        except Exception as err:
            if len(batch) == 1:
                log.exception("decoding step failed for one stream")
                batch[0].done = True
                return [], [(batch[0], err)]
            log.warning("decoding a batch of %d streams failed (%s); retrying them one by one",
                        len(batch), _one_line(err))
        decoded, broken = [], []
        for session in batch:
            try:
                rec.decode_streams([session.stream])
                decoded.append(session)
            except Exception as err:
                log.exception("decoding step failed for one stream")
                session.done = True
                broken.append((session, err))
        return decoded, broken

    def _replies(self, session: Session) -> list[Reply]:
        """The messages a decoding step produced for ``session``; resets it at an endpoint."""
        rec, stream = self.recognizer, session.stream
        if stream.flushed:
            session.done = True
            session.results += 1
            return [self._final(stream.result), protocol.speech_end(), CloseRequest(protocol.CloseCode.NORMAL)]
        if rec.is_endpoint(stream):
            final = rec.reset(stream)
            if stream.revised_frames:
                log.debug("stream revised %d committed frames", stream.revised_frames)
            if not session.continuous:
                session.done = True
                session.results += 1
                return [self._final(final), protocol.speech_end(), CloseRequest(protocol.CloseCode.NORMAL)]
            replies: list[Reply] = []
            if final.text or session.last_text:  # an endpoint after silence alone says nothing
                replies.append(self._final(final))
                session.results += 1
            session.last_text = ""
            return replies
        result = stream.result
        if result.text != session.last_text:
            session.last_text = result.text
            audio_ms = round(stream.samples_accepted * 1000 / session.sample_rate)
            return [protocol.partial_result(result.text, audio_ms=audio_ms)]
        return []

    def _final(self, result: StreamResult) -> dict[str, Any]:
        return protocol.final_result(result.text, protocol.word_pieces(result.tokens, self._frame_seconds))


def _one_line(err: Exception) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
