"""The WeNet protocol's messages, parsed and built without a server."""

from __future__ import annotations

import json

import pytest

from echostream.server.protocol import (
    CloseCode,
    EndSignal,
    ProtocolError,
    StartSignal,
    failed,
    final_result,
    parse_signal,
    partial_result,
    word_pieces,
)
from echostream.text.vocab import Vocabulary
from echostream.transcript import Token


def test_start_signal_defaults_follow_wenet() -> None:
    assert parse_signal('{"signal": "start"}') == StartSignal(sample_rate=16000, nbest=1, continuous_decoding=False)
    assert parse_signal('{"signal": "start", "nbest": 3, "sample_rate": 8000, "continuous_decoding": true,'
                        ' "enable_timestamp": true}') == StartSignal(sample_rate=8000, nbest=3, continuous_decoding=True)
    assert parse_signal('{"signal": "end"}') == EndSignal()


@pytest.mark.parametrize(
    "text, words",
    [
        ("{not json", "not JSON"),
        ("[1, 2]", "JSON object"),
        ('{"nbest": 1}', "no 'signal'"),
        ('{"signal": "stop"}', "unknown signal 'stop'"),
        ('{"signal": "start", "sample_rate": 44100}', "sample_rate must be one of 8000, 16000"),
        ('{"signal": "start", "sample_rate": "16000"}', "sample_rate"),
        ('{"signal": "start", "sample_rate": true}', "sample_rate"),
        ('{"signal": "start", "nbest": 0}', "nbest must be a positive integer"),
        ('{"signal": "start", "continuous_decoding": "yes"}', "continuous_decoding must be true or false"),
    ],
)
def test_bad_signals_are_bad_data_with_one_line(text: str, words: str) -> None:
    with pytest.raises(ProtocolError) as info:
        parse_signal(text)
    assert info.value.code == CloseCode.BAD_DATA
    assert words in str(info.value)
    assert "\n" not in str(info.value)


def test_nbest_is_a_json_string_holding_one_hypothesis() -> None:
    message = partial_result("ab c")
    assert json.loads(message["nbest"]) == [{"sentence": "ab c"}]
    final = final_result("ab", word_pieces([Token("\u2581ab", 0.4)], 0.08))
    assert final["type"] == "final_result"
    assert json.loads(final["nbest"]) == [{"sentence": "ab", "word_pieces": [{"word": "ab", "start": 400, "end": 480}]}]


def test_failure_messages_keep_one_line() -> None:
    assert failed("first\nsecond") == {"status": "failed", "message": "first"}
    assert failed("") == {"status": "failed", "message": "error"}


def test_word_pieces_split_as_the_vocabulary_decodes() -> None:
    vocab = Vocabulary(("<blank>", "\u2581he", "llo", "\u2581", "wor", "ld", "\u2581a", "b\u2581", "x"))
    ids = [1, 2, 3, 4, 5, 6, 7, 8]
    times = [0.0, 0.08, 0.4, 0.48, 0.56, 1.0, 1.04, 3.0]
    tokens = [Token(vocab.token(i), t) for i, t in zip(ids, times)]
    words = word_pieces(tokens, 0.08)
    assert " ".join(w.word for w in words) == vocab.decode(ids) == "hello world ab x"
    # a word ends at the next token, at most one frame after its last token
    assert [(w.start, w.end) for w in words] == [(0, 160), (480, 640), (1000, 1120), (3000, 3080)]
    assert word_pieces([], 0.08) == []
