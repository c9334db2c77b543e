"""Feeding a Recognizer stream in pieces, as a client would (shared by the streaming tests)."""

from __future__ import annotations

import random

import numpy as np

from echostream.streaming.recognizer import Recognizer, Stream


def feed_in_pieces(rec: Recognizer, stream: Stream, samples: np.ndarray, rate: int, rng: random.Random,
                   smallest: int, largest: int) -> Stream:
    """Feed ``samples`` (any shape ``accept_waveform`` takes) in random pieces of ``smallest`` to
    ``largest`` rows, decoding whenever the stream is ready, then finish it."""
    pos = 0
    while pos < len(samples):
        n = rng.randint(smallest, largest)
        stream.accept_waveform(rate, samples[pos : pos + n])
        pos += n
        while rec.is_ready(stream):
            rec.decode_streams([stream])
    stream.input_finished()
    while rec.is_ready(stream):
        rec.decode_streams([stream])
    return stream
