"""Tests for echostream.transcript: segments and tokens from a CTC best path, and file formats."""

from __future__ import annotations

import json
import re

import pytest

from echostream.text.vocab import Vocabulary
from echostream.transcript import (
    FORMATS,
    Segment,
    Token,
    Transcript,
    build_transcript,
    to_json,
    to_srt,
    to_txt,
    to_vtt,
)

FRAME_S = 0.08
B = 0  # blank
A, BB, C = 1, 2, 3  # "▁a", "b", "▁c"
VOCAB = Vocabulary(("<blank>", "\u2581a", "b", "\u2581c"))


def _build(labels: list[int], max_silence: float = 0.5) -> Transcript:
    return build_transcript(
        "x.wav",
        labels,
        VOCAB,
        frame_seconds=FRAME_S,
        duration=len(labels) * FRAME_S,
        max_silence=max_silence,
    )


def _frames(segments: list[Segment]) -> list[tuple[int, int, str]]:
    """Segments with their times turned back into frame indices."""
    return [(round(s / FRAME_S), round(e / FRAME_S), t) for s, e, t in segments]


# -------------------------------------------------------------------------- text and tokens


def test_text_tokens_and_times() -> None:
    t = _build([B, A, A, BB, B, B, C, C, B])
    assert t.ok and t.source == "x.wav"
    assert t.text == "ab c"
    assert [k.token for k in t.tokens] == ["\u2581a", "b", "\u2581c"]
    assert [k.time for k in t.tokens] == pytest.approx([1 * FRAME_S, 3 * FRAME_S, 6 * FRAME_S])
    assert all(isinstance(k, Token) for k in t.tokens)
    assert t.duration == pytest.approx(9 * FRAME_S)


def test_token_time_is_frame_times_80_ms() -> None:
    labels = [B] * 40 + [A] + [B] * 3 + [BB]
    t = _build(labels)
    assert [k.time for k in t.tokens] == pytest.approx([40 * 0.08, 44 * 0.08])


def test_repeats_separated_by_blank_are_kept() -> None:
    t = _build([A, A, B, A, BB, BB, B, BB])
    assert [k.token for k in t.tokens] == ["\u2581a", "\u2581a", "b", "b"]
    assert [round(k.time / FRAME_S) for k in t.tokens] == [0, 3, 4, 7]
    assert t.text == "a abb"


def test_merged_repeats_give_one_token() -> None:
    t = _build([BB, BB, BB, BB])
    assert [k.token for k in t.tokens] == ["b"] and t.text == "b"


@pytest.mark.parametrize("labels", [[], [B], [B] * 30])
def test_no_speech_gives_empty_transcript(labels: list[int]) -> None:
    t = _build(labels)
    assert t.ok and t.text == "" and t.segments == [] and t.tokens == []


def test_blank_id_other_than_zero() -> None:
    vocab = Vocabulary(("\u2581a", "b", "<blank>"))
    t = build_transcript(
        "y",
        [2, 0, 2, 1, 1, 2] + [2] * 6 + [0],
        vocab,
        frame_seconds=FRAME_S,
        duration=1.0,
        blank_id=2,
    )
    assert t.text == "ab a"
    assert _frames(t.segments) == [(0, 10, "ab"), (11, 12, "a")]


# ------------------------------------------------------------------------------ segments


def test_one_segment_when_pauses_are_short() -> None:
    # 5 blank frames (0.40 s) do not end a segment.
    t = _build([A] + [B] * 5 + [C] + [B] * 2)
    assert _frames(t.segments) == [(0, 8, "a c")]


def test_new_segment_after_half_a_second_of_blanks() -> None:
    # 0.5 s // 0.08 s = 6 frames, as in ChunkFormer: the 6th blank frame ends the segment.
    labels = [A] + [B] * 6 + [C]
    t = _build(labels)
    assert [s.text for s in t.segments] == ["a", "c"]
    assert _frames(t.segments)[0] == (0, 6, "a")  # ends at the 6th blank frame


def test_segment_ends_at_the_last_frame_when_speech_runs_to_the_end() -> None:
    t = _build([B, B, A, B, B, B])  # trailing pause shorter than 0.5 s
    assert _frames(t.segments) == [(0, 5, "a")]
    t = _build([B] * 10 + [A, BB])
    assert _frames(t.segments) == [(8, 11, "ab")]


def test_first_segment_starts_two_frames_early_but_not_before_zero() -> None:
    assert _frames(_build([B] * 7 + [A, B]).segments)[0][0] == 5
    assert _frames(_build([B, A, B]).segments)[0][0] == 0
    assert _frames(_build([A, B]).segments)[0][0] == 0


def test_next_segment_starts_two_frames_early_after_a_long_pause() -> None:
    # segment 1 closes at frame 6; the next token at frame 20: start = max(ceil(13), 18) = 18
    t = _build([A] + [B] * 19 + [C, B])
    assert _frames(t.segments) == [(0, 6, "a"), (18, 21, "c")]
    assert t.segments[1].start == pytest.approx(18 * FRAME_S)


def test_next_segment_starts_halfway_into_a_short_pause() -> None:
    # segment 1 closes at frame 8 (6th blank after the token at 2); next token at 11:
    # start = max(ceil((11 + 8) / 2), 11 - 2) = 10
    t = _build([A, B, BB] + [B] * 8 + [A, A])
    assert t.text == "ab a"
    assert _frames(t.segments) == [(0, 8, "ab"), (10, 12, "a")]


def test_segments_cover_all_tokens_in_order() -> None:
    labels = [B, A, B, BB] + [B] * 7 + [C] + [B] * 12 + [A, A, B, BB] + [B] * 3
    t = _build(labels)
    assert [s.text for s in t.segments] == ["ab", "c", "ab"]
    assert " ".join(s.text for s in t.segments) == t.text
    starts = [s.start for s in t.segments]
    assert starts == sorted(starts)
    for prev, nxt in zip(t.segments, t.segments[1:]):
        assert prev.end <= nxt.start
    for s in t.segments:
        assert s.start <= s.end


def test_max_silence_sets_the_pause_length() -> None:
    labels = [A] + [B] * 8 + [C]
    assert len(_build(labels, max_silence=0.5).segments) == 2
    assert len(_build(labels, max_silence=1.0).segments) == 1  # needs 12 blank frames
    assert len(_build([A] + [B] * 12 + [C], max_silence=1.0).segments) == 2


@pytest.mark.parametrize(
    ("max_silence", "frames"),
    [
        (0.8, 10),
        (0.56, 7),
        pytest.param(0.48, 6),
        pytest.param(0.24, 3),
    ],
)
def test_max_silence_on_the_frame_grid(max_silence: float, frames: int) -> None:
    # "A segment ends once max_silence seconds of blank frames follow speech".
    short = _build([A] + [B] * (frames - 1) + [C], max_silence=max_silence)
    assert len(short.segments) == 1, f"{frames - 1} blank frames < {max_silence} s"
    long = _build([A] + [B] * frames + [C], max_silence=max_silence)
    assert len(long.segments) == 2


@pytest.mark.parametrize("max_silence", [0.0, 0.05])
def test_max_silence_below_one_frame_is_refused(max_silence: float) -> None:
    with pytest.raises(ValueError, match="max_silence"):
        _build([A, A, B, BB, B, B, B, A], max_silence=max_silence)


def test_segment_is_a_named_tuple() -> None:
    (seg,) = _build([A, B]).segments
    start, end, text = seg
    assert (start, end, text) == (seg.start, seg.end, seg.text) == (0.0, FRAME_S, "a")


# ------------------------------------------------------------------------------- formats


def _transcript(*segments: Segment, text: str = "hi there") -> Transcript:
    return Transcript(
        "talk.wav",
        text,
        list(segments),
        [Token("\u2581hi", 0.08), Token("\u2581there", 0.4)],
        duration=2.5,
    )


SRT_TIME = r"\d\d:\d\d:\d\d,\d\d\d"
VTT_TIME = r"\d\d:\d\d:\d\d\.\d\d\d"


def test_txt() -> None:
    assert to_txt(_transcript()) == "hi there\n"
    assert to_txt(Transcript("e.wav")) == "\n"


def test_srt_cues() -> None:
    t = _transcript(Segment(0.0, 1.5, "hi"), Segment(2.0, 2.48, "there"))
    srt = to_srt(t)
    assert srt.rstrip("\n") == (
        "1\n00:00:00,000 --> 00:00:01,500\nhi\n\n2\n00:00:02,000 --> 00:00:02,480\nthere"
    )
    cues = [c for c in srt.strip("\n").split("\n\n")]
    assert len(cues) == 2
    for number, cue in enumerate(cues, 1):
        index, times, text = cue.split("\n")
        assert index == str(number)
        assert re.fullmatch(f"{SRT_TIME} --> {SRT_TIME}", times)
        assert text


def test_vtt_cues() -> None:
    t = _transcript(Segment(0.0, 1.5, "hi"), Segment(2.0, 2.48, "there"))
    vtt = to_vtt(t)
    assert vtt.startswith("WEBVTT\n\n")
    body = vtt.removeprefix("WEBVTT\n\n").strip("\n")
    cues = body.split("\n\n")
    assert cues == ["00:00:00.000 --> 00:00:01.500\nhi", "00:00:02.000 --> 00:00:02.480\nthere"]
    for cue in cues:
        assert re.fullmatch(f"{VTT_TIME} --> {VTT_TIME}", cue.split("\n")[0])


def test_subtitles_without_segments() -> None:
    t = Transcript("silence.wav")
    assert to_srt(t).strip() == ""
    assert to_vtt(t).startswith("WEBVTT") and "-->" not in to_vtt(t)


@pytest.mark.parametrize(
    ("seconds", "srt", "vtt"),
    [
        (0.0, "00:00:00,000", "00:00:00.000"),
        (0.08, "00:00:00,080", "00:00:00.080"),
        (1.0004, "00:00:01,000", "00:00:01.000"),  # rounds down
        (1.0006, "00:00:01,001", "00:00:01.001"),  # rounds up
        (0.24000000000000002, "00:00:00,240", "00:00:00.240"),  # 3 * 0.08 in floats
        (59.9996, "00:01:00,000", "00:01:00.000"),  # rounding carries into the minutes
        (61.25, "00:01:01,250", "00:01:01.250"),
        (3599.9999, "01:00:00,000", "01:00:00.000"),  # and into the hours
        (3723.456, "01:02:03,456", "01:02:03.456"),
        (36000.0 + 59 * 60 + 59.999, "10:59:59,999", "10:59:59.999"),
        (100 * 3600 + 0.5, "100:00:00,500", "100:00:00.500"),
    ],
)
def test_timestamps(seconds: float, srt: str, vtt: str) -> None:
    t = _transcript(Segment(seconds, seconds, "x"))
    assert to_srt(t).split("\n")[1] == f"{srt} --> {srt}"
    assert to_vtt(t).split("\n")[2] == f"{vtt} --> {vtt}"


def test_hours_in_a_long_recording() -> None:
    t = _transcript(Segment(3 * 3600 + 5.2, 3 * 3600 + 7.84, "late"))
    assert "03:00:05,200 --> 03:00:07,840" in to_srt(t)
    assert "03:00:05.200 --> 03:00:07.840" in to_vtt(t)


def test_json() -> None:
    t = _transcript(Segment(0.0, 1.5, "xin chào"), text="xin chào")
    doc = json.loads(to_json(t))
    assert doc == {
        "source": "talk.wav",
        "text": "xin chào",
        "duration": 2.5,
        "segments": [{"start": 0.0, "end": 1.5, "text": "xin chào"}],
        "words": [],
        "tokens": [{"token": "\u2581hi", "time": 0.08}, {"token": "\u2581there", "time": 0.4}],
    }
    assert "chào" in to_json(t)  # not escaped
    assert to_json(t).endswith("\n")


def test_json_of_a_built_transcript_round_trips() -> None:
    t = _build([A, B, BB] + [B] * 8 + [A, A])
    doc = json.loads(to_json(t))
    assert doc["text"] == t.text
    assert [tuple(s.values()) for s in doc["segments"]] == [tuple(s) for s in t.segments]
    assert [tuple(k.values()) for k in doc["tokens"]] == [tuple(k) for k in t.tokens]


def test_formats_table() -> None:
    assert FORMATS == {"txt": to_txt, "json": to_json, "srt": to_srt, "vtt": to_vtt}


def test_error_transcript() -> None:
    t = Transcript("bad.wav", error="bad.wav: file not found")
    assert not t.ok
    assert Transcript("good.wav").ok


# ------------------------------------------------------------------ words and word-bounded cues


def test_token_times_carry_the_stated_offset_and_words_have_spans() -> None:
    t = build_transcript("x.wav", [B, A, BB, B, B, C, B, B], VOCAB, frame_seconds=FRAME_S, duration=0.64,
                         time_offset=0.0825)
    assert [k.time for k in t.tokens] == pytest.approx([0.1625, 0.2425, 0.4825])
    assert [w.word for w in t.words] == ["ab", "c"]
    assert [(w.start, w.end) for w in t.words] == [
        pytest.approx((0.1625, 0.3225)),  # its last token + one frame
        pytest.approx((0.4825, 0.5625)),
    ]
    assert " ".join(w.word for w in t.words) == t.text


def test_a_pause_inside_a_word_does_not_end_a_segment() -> None:
    """ "▁a" [0.64 s of blanks] "b" is one word: the cue must not cut it ("a" / "b")."""
    t = _build([A] + [B] * 8 + [BB] + [B] * 8 + [C, B])
    assert [s.text for s in t.segments] == ["ab", "c"]
    assert [w.word for w in t.words] == ["ab", "c"]
    cues = [line for line in to_srt(t).splitlines() if line and not line[0].isdigit()]
    assert cues == ["ab", "c"]


def test_json_has_words_rounded_to_the_millisecond() -> None:
    t = build_transcript("x.wav", [B, A, BB, B, C], VOCAB, frame_seconds=FRAME_S, duration=0.4123456,
                         time_offset=0.0825)
    doc = json.loads(to_json(t))
    assert doc["words"] == [
        {"word": "ab", "start": round(0.1625, 3), "end": round(0.2425 + 0.08, 3)},
        {"word": "c", "start": round(0.4025, 3), "end": round(0.4825, 3)},
    ]
    assert doc["duration"] == 0.412
    assert all(round(k["time"], 3) == k["time"] for k in doc["tokens"])
