"""Transcripts: text, timed tokens and segments from a CTC best path, and their file formats."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from echostream.heads.ctc import collapse_ctc
from echostream.text.vocab import WORD_BOUNDARY, Vocabulary


class Segment(NamedTuple):
    """A stretch of speech between pauses: ``(start_s, end_s, text)``."""

    start: float
    end: float
    text: str


class Token(NamedTuple):
    """A token and its time (s): where CTC emitted it (see :func:`token_time`)."""

    token: str
    time: float


class Word(NamedTuple):
    """A word and its span (s): from its first token's time to its end (see :func:`words_of`)."""

    word: str
    start: float
    end: float


def token_time(frame: int, frame_seconds: float, offset: float) -> float:
    """The time of a token CTC emitted at encoder frame ``frame`` (outputs round it to the ms).

    ``offset`` is where in its frame's receptive field the token is placed: the centre of the
    audio frame ``frame`` sees (82.5 ms for 8x subsampling of 25 ms / 10 ms features).

    >>> token_time(10, 0.08, 0.0825)
    0.8825
    """
    return round(frame * frame_seconds + offset, 6)  # float noise off, nothing more


def _starts_word(piece: str, previous: str | None) -> bool:
    return previous is None or piece.startswith(WORD_BOUNDARY) or previous.endswith(WORD_BOUNDARY)


def words_of(tokens: list[Token], frame_seconds: float) -> list[Word]:
    """Words of a token sequence, split as :meth:`Vocabulary.decode` splits text (at ``▁``).

    A word starts at its first token's time. It ends one frame after its last token, but no
    later than the next token, so that a pause does not count as part of the word before it.

    >>> toks = [Token("▁he", 0.0), Token("llo", 0.16), Token("▁world", 0.4), Token("s", 1.2)]
    >>> [(w.word, w.start, w.end) for w in words_of(toks, 0.08)]
    [('hello', 0.0, 0.24), ('worlds', 0.4, 1.28)]
    """
    groups: list[list[Any]] = []  # [text, start_s, index of the last token]
    new_word = True
    for i, (token, time) in enumerate(tokens):
        piece = token.replace(WORD_BOUNDARY, " ")
        if piece.startswith(" "):
            new_word = True
        for j, part in enumerate(piece.split()):
            if new_word or j > 0 or not groups:
                groups.append([part, time, i])
            else:
                groups[-1][0] += part
                groups[-1][2] = i
            new_word = False
        if piece.endswith(" ") and piece.strip():
            new_word = True
    out = []
    for text, start, last in groups:
        end = tokens[last].time + frame_seconds
        if last + 1 < len(tokens):
            end = min(end, tokens[last + 1].time)
        out.append(Word(text, start, round(end, 6)))
    return out


@dataclass(frozen=True)
class Transcript:
    """The result for one input. ``error`` is set when it could not be read to its end: the rest
    is then what was decoded before the failure (empty if it could not be read at all)."""

    source: str
    text: str = ""
    segments: list[Segment] = field(default_factory=list)
    tokens: list[Token] = field(default_factory=list)
    duration: float = 0.0
    error: str | None = None
    words: list[Word] = field(default_factory=list)

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
    error: str | None = None,
    time_offset: float = 0.0,
) -> Transcript:
    """Text, timed tokens and words, and segments from per-frame best labels.

    Tokens and words are timed by :func:`token_time` with ``time_offset``. A segment ends once
    ``max_silence`` seconds of blank frames follow a word, never inside a word (a pause before a
    word's continuation does not end it); it starts up to two frames before its first token
    (halfway into the previous pause), as in ChunkFormer. Segment times are frame boundaries.

    >>> v = Vocabulary(("<blank>", "\u2581a", "b"))
    >>> t = build_transcript("x", [1, 0, 2] + [0] * 8 + [1, 1], v, frame_seconds=0.08, duration=1.04)
    >>> t.text, [(round(s, 2), round(e, 2), w) for s, e, w in t.segments]
    ('ab a', [(0.0, 0.64, 'ab'), (0.8, 0.96, 'a')])
    """
    alignment = collapse_ctc(frame_labels, blank_id)
    tokens = [
        Token(vocab.token(t), token_time(f, frame_seconds, time_offset))
        for t, f in zip(alignment.tokens, alignment.token_frames)
    ]
    pieces = [vocab.token(t) for t in alignment.tokens]
    # token i may end a segment only if token i + 1 starts a new word
    word_starts = [_starts_word(p, pieces[i - 1] if i else None) for i, p in enumerate(pieces)]
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
        if silence == silence_frames and start != -1 and (next_token == len(pieces) or word_starts[next_token]):
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
        error=error,
        words=words_of(tokens, frame_seconds),
    )


def _timestamp(seconds: float, separator: str) -> str:
    millis = round(seconds * 1000)
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{separator}{millis:03d}"


def to_txt(t: Transcript) -> str:
    return t.text + "\n"


def to_dict(t: Transcript) -> dict[str, Any]:
    """The JSON form of a transcript: times in seconds, rounded to the millisecond."""
    out: dict[str, Any] = {
        "source": t.source,
        "text": t.text,
        "duration": round(t.duration, 3),
        "segments": [{"start": round(s.start, 3), "end": round(s.end, 3), "text": s.text} for s in t.segments],
        "words": [{"word": w.word, "start": round(w.start, 3), "end": round(w.end, 3)} for w in t.words],
        "tokens": [{"token": k.token, "time": round(k.time, 3)} for k in t.tokens],
    }
    if t.error is not None:
        out["error"] = t.error
    return out


def to_json(t: Transcript) -> str:
    return json.dumps(to_dict(t), ensure_ascii=False, indent=1) + "\n"


def to_json_line(t: Transcript) -> str:
    """One line of JSON Lines (no newline)."""
    return json.dumps(to_dict(t), ensure_ascii=False)


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
