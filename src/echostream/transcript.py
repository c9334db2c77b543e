"""Transcripts: text, timed tokens and segments from a CTC best path, and their file formats."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import NamedTuple

from echostream.heads.ctc import collapse_ctc
from echostream.text.vocab import Vocabulary


class Segment(NamedTuple):
    """A stretch of speech between pauses: ``(start_s, end_s, text)``."""

    start: float
    end: float
    text: str


class Token(NamedTuple):
    """A token and the time (s) of the frame where CTC emitted it."""

    token: str
    time: float


@dataclass(frozen=True)
class Transcript:
    """The result for one input. ``error`` is set (and the rest empty) when it could not be read."""

    source: str
    text: str = ""
    segments: list[Segment] = field(default_factory=list)
    tokens: list[Token] = field(default_factory=list)
    duration: float = 0.0
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def build_transcript(
    source: str,
    frame_labels: list[int],
    vocab: Vocabulary,
    *,
    frame_seconds: float,
    duration: float,
    blank_id: int = 0,
    max_silence: float = 0.5,
) -> Transcript:
    """Text, tokens and segments from per-frame best labels.

    A segment ends once ``max_silence`` seconds of blank frames follow speech; it starts up to
    two frames before its first token (halfway into the previous pause), as in ChunkFormer.

    >>> v = Vocabulary(("<blank>", "\u2581a", "b"))
    >>> t = build_transcript("x", [1, 0, 2] + [0] * 8 + [1, 1], v, frame_seconds=0.08, duration=1.04)
    >>> t.text, [(round(s, 2), round(e, 2), w) for s, e, w in t.segments]
    ('ab a', [(0.0, 0.64, 'ab'), (0.8, 0.96, 'a')])
    """
    alignment = collapse_ctc(frame_labels, blank_id)
    tokens = [Token(vocab.token(t), f * frame_seconds) for t, f in zip(alignment.tokens, alignment.token_frames)]
    if max_silence < frame_seconds:
        raise ValueError(f"max_silence must be at least one frame ({frame_seconds} s), got {max_silence}")
    silence_frames = math.floor(max_silence / frame_seconds + 1e-6)
    segments: list[Segment] = []
    start = previous_end = -1
    silence = 0
    first_token = 0  # index into alignment.tokens of the current segment's first token
    next_token = 0
    for t, label in enumerate(frame_labels):
        if label == blank_id:
            silence += 1
        else:
            if start == -1:
                start = max(math.ceil((t + previous_end) / 2), t - 2) if previous_end != -1 else max(t - 2, 0)
                first_token = next_token
            silence = 0
            while next_token < len(alignment.token_frames) and alignment.token_frames[next_token] <= t:
                next_token += 1
        if silence == silence_frames and start != -1:
            text = vocab.decode(alignment.tokens[first_token:next_token])
            segments.append(Segment(start * frame_seconds, t * frame_seconds, text))
            previous_end, start, silence = t, -1, 0
    if start != -1 and next_token > first_token:
        end = len(frame_labels) - 1
        segments.append(Segment(start * frame_seconds, end * frame_seconds, vocab.decode(alignment.tokens[first_token:next_token])))
    return Transcript(
        source=source,
        text=vocab.decode(alignment.tokens),
        segments=segments,
        tokens=tokens,
        duration=duration,
    )


def _timestamp(seconds: float, separator: str) -> str:
    millis = round(seconds * 1000)
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{separator}{millis:03d}"


def to_txt(t: Transcript) -> str:
    return t.text + "\n"


def to_json(t: Transcript) -> str:
    return json.dumps(
        {
            "source": t.source,
            "text": t.text,
            "duration": t.duration,
            "segments": [{"start": s.start, "end": s.end, "text": s.text} for s in t.segments],
            "tokens": [{"token": k.token, "time": k.time} for k in t.tokens],
        },
        ensure_ascii=False,
        indent=1,
    ) + "\n"


def to_srt(t: Transcript) -> str:
    """SubRip subtitles, one cue per segment.

    >>> print(to_srt(Transcript("x", "hi", [Segment(0.0, 1.5, "hi")])), end="")
    1
    00:00:00,000 --> 00:00:01,500
    hi
    """
    cues = [
        f"{i}\n{_timestamp(s.start, ',')} --> {_timestamp(s.end, ',')}\n{s.text}\n"
        for i, s in enumerate(t.segments, 1)
    ]
    return "\n".join(cues)


def to_vtt(t: Transcript) -> str:
    """WebVTT subtitles, one cue per segment."""
    cues = [f"{_timestamp(s.start, '.')} --> {_timestamp(s.end, '.')}\n{s.text}\n" for s in t.segments]
    return "WEBVTT\n\n" + "\n".join(cues)


FORMATS = {"txt": to_txt, "json": to_json, "srt": to_srt, "vtt": to_vtt}
