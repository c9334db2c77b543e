"""The streaming Recognizer/Stream API: the invariant with the long-form path, batching, endpoints."""

from __future__ import annotations

import copy
import random
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr
import torch

import echostream
from echostream.audio import AudioError
from echostream.streaming.recognizer import EndpointConfig, Recognizer, Stream
from streaming_helpers import feed_in_pieces

SETTINGS = [(8, 32, 0), (8, 16, 8), (4, 8, 4), (16, 32, 16)]


def _to_int16(samples: np.ndarray) -> np.ndarray:
    """The 16-bit samples a 16-bit file's floats came from (exact)."""
    return np.clip(np.round(samples * 32768), -32768, 32767).astype(np.int16)


def _stream_file(
    rec: Recognizer, samples: np.ndarray, rate: int, rng: random.Random, as_int16: bool = False
) -> Stream:
    """Feed ``samples`` in random pieces of 10 ms to 2 s, decoding whenever ready."""
    return feed_in_pieces(rec, rec.create_stream(), _to_int16(samples) if as_int16 else samples, rate, rng,
                          rate // 100, 2 * rate)


@pytest.fixture(scope="module")
def long_audio(fixture_dir: Path) -> tuple[str, np.ndarray]:
    path = fixture_dir / "audio" / "long.wav"
    samples, rate = sf.read(path, dtype="float32")
    assert rate == 16000
    return str(path), samples


@pytest.mark.parametrize("setting", SETTINGS, ids=lambda s: "c{}_l{}_r{}".format(*s))
def test_pieces_of_any_size_equal_the_long_form_path(
    fixture_model: echostream.Model, long_audio: tuple[str, np.ndarray], setting: tuple[int, int, int]
) -> None:
    path, samples = long_audio
    c, left, right = setting
    expected = fixture_model.ctc_log_probs(path, chunk_size=c, left_context=left, right_context=right)
    text = fixture_model.transcribe(path, chunk_size=c, left_context=left, right_context=right)[0].text
    rec = Recognizer(fixture_model, chunk_size=c, left_context=left, right_context=right,
                     endpoint=EndpointConfig(enabled=False), keep_log_probs=True)
    for seed in range(2):
        s = _stream_file(rec, samples, 16000, random.Random(seed))
        got = np.concatenate(s.log_probs)
        assert got.shape == expected.shape
        assert np.abs(got - expected).max() <= 1e-4
        assert s.result.text == text
        assert s.result.is_final and s.result.stable_text == text


def test_int16_input_and_8khz_input(fixture_model: echostream.Model, long_audio: tuple[str, np.ndarray], tmp_path: Path) -> None:
    path, samples = long_audio
    rec = Recognizer(fixture_model, chunk_size=8, left_context=16, right_context=0,
                     endpoint=EndpointConfig(enabled=False))
    s = _stream_file(rec, samples, 16000, random.Random(3), as_int16=True)
    assert s.result.text == fixture_model.transcribe(path, chunk_size=8, left_context=16, right_context=0)[0].text
    low = soxr.resample(samples, 16000, 8000)
    wav8 = tmp_path / "long8k.wav"
    sf.write(wav8, low, 8000, subtype="FLOAT")
    offline = fixture_model.transcribe(str(wav8), chunk_size=8, left_context=16, right_context=0)[0].text
    s8 = _stream_file(rec, low, 8000, random.Random(4))
    assert s8.result.text == offline


def test_streams_at_different_positions_batch_together(
    fixture_model: echostream.Model, fixture_dir: Path
) -> None:
    rec = Recognizer(fixture_model, chunk_size=4, left_context=8, right_context=4,
                     endpoint=EndpointConfig(enabled=False))
    files = sorted((fixture_dir / "audio").glob("*.wav"))
    audio = [sf.read(f, dtype="float32")[0] for f in files]
    alone = [_stream_file(rec, a, 16000, random.Random(i)).result.text for i, a in enumerate(audio)]
    streams = [rec.create_stream() for _ in audio]
    positions = [0] * len(audio)
    rng = random.Random(7)
    while not all(s.result.is_final for s in streams):
        for i, (s, a) in enumerate(zip(streams, audio)):
            if positions[i] < len(a):
                n = rng.randint(160, 32000)
                s.accept_waveform(16000, a[positions[i] : positions[i] + n])
                positions[i] += n
            elif not s.input_done:
                s.input_finished()
        rec.decode_streams(streams)  # only the ready ones are decoded, all in one batch
    assert [s.result.text for s in streams] == alone


def test_provisional_tail_shows_before_frames_are_final(
    fixture_model: echostream.Model, long_audio: tuple[str, np.ndarray]
) -> None:
    _, samples = long_audio
    rec = Recognizer(fixture_model, chunk_size=4, left_context=8, right_context=4,
                     endpoint=EndpointConfig(enabled=False))
    assert rec.latency_seconds > 4 * 0.08  # final frames wait for every layer's right context
    s = rec.create_stream()
    s.accept_waveform(16000, samples[: 16000 * 3])
    while rec.is_ready(s):
        rec.decode_streams([s])
    assert s.tail, "a partial result covers audio whose frames are not final yet"
    assert len(s.labels) + len(s.tail) >= (3 * 100 - 15) // 8 + 1 - 4 * 2


def _always_blank(model: echostream.Model) -> echostream.Model:
    """The fixture model with its CTC head biased so that every frame is blank."""
    bundle = copy.deepcopy(model.bundle)
    with torch.no_grad():
        bundle.model.ctc.ctc_lo.bias[bundle.model.cfg.blank_id] = 1e4
    return echostream.Model(bundle)


def test_endpoints_split_continuous_segments(
    fixture_model: echostream.Model, long_audio: tuple[str, np.ndarray]
) -> None:
    _, samples = long_audio
    rules = EndpointConfig(silence_without_speech=2.0, silence_after_speech=0.8, max_utterance=20.0)
    rec = Recognizer(_always_blank(fixture_model), chunk_size=8, left_context=16, right_context=0, endpoint=rules)
    s = rec.create_stream()
    finals = []
    for pos in range(0, 16000 * 9, 1600):
        s.accept_waveform(16000, samples[pos : pos + 1600])
        while rec.is_ready(s):
            rec.decode_streams([s])
            if rec.is_endpoint(s):
                finals.append(s.result)
                rec.reset(s)
    assert [r.segment for r in finals] == [0, 1, 2]  # 2.0 s of blanks -> 4 chunks of 0.64 s each
    assert [round(r.start_time, 2) for r in finals] == [0.0, 2.56, 5.12]  # whole chunks of 0.64 s
    assert s.result.segment == 3 and s.result.start_time > finals[-1].start_time


def test_endpoint_rules_on_final_labels(fixture_model: echostream.Model) -> None:
    rec = Recognizer(fixture_model, chunk_size=8, left_context=16, right_context=0,
                     endpoint=EndpointConfig(silence_after_speech=0.8, silence_without_speech=2.4))
    s = rec.create_stream()
    s.labels = [3] + [0] * 9  # 0.72 s of blanks after speech
    assert not rec.is_endpoint(s)
    s.labels.append(0)  # 0.80 s
    assert rec.is_endpoint(s)
    s.labels = [0] * 29  # 2.32 s, nothing said
    assert not rec.is_endpoint(s)
    s.labels.append(0)
    assert rec.is_endpoint(s)
    off = Recognizer(fixture_model, endpoint=EndpointConfig(enabled=False))
    assert not off.is_endpoint(s)


def test_max_utterance_rule(fixture_model: echostream.Model, long_audio: tuple[str, np.ndarray]) -> None:
    _, samples = long_audio
    rec = Recognizer(fixture_model, chunk_size=8, left_context=16, right_context=0,
                     endpoint=EndpointConfig(max_utterance=1.0, silence_after_speech=50, silence_without_speech=50))
    s = rec.create_stream()
    s.accept_waveform(16000, samples[: 16000 * 3])
    hit = False
    while rec.is_ready(s):
        rec.decode_streams([s])
        hit = hit or rec.is_endpoint(s)
    assert hit


def test_bad_input_is_refused_and_the_stream_goes_on(fixture_model: echostream.Model, long_audio: tuple[str, np.ndarray]) -> None:
    _, samples = long_audio
    rec = Recognizer(fixture_model, chunk_size=8, left_context=16, right_context=0)
    s = rec.create_stream()
    with pytest.raises(AudioError, match="below"):
        s.accept_waveform(4000, samples[:100])
    s.accept_waveform(16000, samples[:16000])
    with pytest.raises(AudioError, match="changed"):
        s.accept_waveform(8000, samples[:100])
    with pytest.raises(AudioError, match="NaN"):
        s.accept_waveform(16000, np.array([0.0, np.nan], np.float32))
    s.accept_waveform(16000, samples[16000:32000])
    s.input_finished()
    while rec.is_ready(s):
        rec.decode_streams([s])
    assert s.result.is_final
    with pytest.raises(RuntimeError):
        s.accept_waveform(16000, samples[:10])


def test_endpoint_config_validation() -> None:
    with pytest.raises(ValueError, match="max_utterance"):
        EndpointConfig(max_utterance=0)


def test_a_token_across_a_segment_cut_is_not_repeated(fixture_model: echostream.Model) -> None:
    rec = Recognizer(fixture_model, chunk_size=8, left_context=16, right_context=0)
    s = rec.create_stream()
    s.labels = [0, 5, 5]
    s.frames = 3
    first = s.result.text
    rec.reset(s)
    s.labels = [5, 5, 0, 7]  # label 5 continues across the cut, then 7
    s.frames = 7
    vocab = fixture_model.bundle.vocab
    assert first == vocab.decode([5])
    assert s.result.text == vocab.decode([7])


# ------------------------------------------------------------------ input normalisation


def test_stereo_and_int32_pieces_are_mixed_and_scaled_as_transcribe_does(
    fixture_model: echostream.Model, long_audio: tuple[str, np.ndarray]
) -> None:
    _, samples = long_audio
    mono = samples[: 16000 * 6]
    stereo = np.stack([mono, 0.5 * mono[::-1]], axis=1)  # (N, 2), two different channels
    pcm32 = np.round(stereo * 2**31 * 0.9).astype(np.int32)
    offline = fixture_model.transcribe((pcm32, 16000), chunk_size=8, left_context=16, right_context=0)[0]
    assert offline.ok and offline.text
    rec = Recognizer(fixture_model, chunk_size=8, left_context=16, right_context=0,
                     endpoint=EndpointConfig(enabled=False))
    s = rec.create_stream()
    feed_in_pieces(rec, s, pcm32, 16000, random.Random(5), 1, 8000)  # pieces as short as one stereo frame
    assert s.samples_accepted == len(mono)
    assert s.result.text == offline.text


def test_a_refused_piece_changes_nothing(fixture_model: echostream.Model, long_audio: tuple[str, np.ndarray]) -> None:
    _, samples = long_audio
    rec = Recognizer(fixture_model, chunk_size=8, left_context=16, right_context=0)
    s = rec.create_stream()
    with pytest.raises(AudioError, match="NaN"):
        s.accept_waveform(8000, np.array([0.0, np.nan], np.float32))
    with pytest.raises(AudioError, match="unsupported sample dtype"):
        s.accept_waveform(8000, np.zeros(10, np.complex64))
    with pytest.raises(AudioError, match=r"channels, frames"):
        s.accept_waveform(8000, np.zeros((2, 4000), np.float32))
    assert s.samples_accepted == 0 and s.buffered_frames == 0
    s.accept_waveform(16000, samples[:16000])  # the refused 8 kHz calls did not fix the rate
    assert s.samples_accepted == 16000


# ------------------------------------------------------- finals with right context


def _joined_samples(samples_dir: Path) -> np.ndarray:
    parts = []
    for name in ("booking_16k", "phone_16k", "options_16k"):
        x, rate = sf.read(samples_dir / f"{name}.wav", dtype="float32")
        assert rate == 16000
        parts += [x, np.zeros(2 * rate, np.float32)]
    return np.concatenate(parts)


def _finals(rec: Recognizer, samples: np.ndarray, piece: int = 1600) -> list[tuple[str, int]]:
    """Stream ``samples`` in 100 ms pieces, resetting at endpoints: each final's text and the
    samples accepted when it was made."""
    s = rec.create_stream()
    out = []
    for pos in range(0, len(samples), piece):
        s.accept_waveform(16000, samples[pos : pos + piece])
        while rec.is_ready(s):
            rec.decode_streams([s])
            if rec.is_endpoint(s):
                out.append((rec.reset(s).text, s.samples_accepted))
    s.input_finished()
    while rec.is_ready(s):
        rec.decode_streams([s])
    out.append((s.result.text, s.samples_accepted))
    assert s.revised_frames == 0
    return [(text, n) for text, n in out if text]


@pytest.mark.parametrize("setting", [(8, 16, 8), (16, 32, 16), (8, 32, 0)], ids=lambda s: "c{}_l{}_r{}".format(*s))
def test_finals_joined_equal_the_offline_transcript(setting: tuple[int, int, int]) -> None:
    """The bundled small_en model on three sentences joined by 2 s pauses: a final at each pause
    (and where the model itself pauses), made within a few seconds of the pause (not after
    latency_seconds), the finals joined equal to the long-form transcript of the whole recording,
    with no word sent twice. (small_en's committed tails agree with their exact frames here; the
    default general_en model's revise one frame at 16/32/16, "ninth" final as "nin".)"""
    root = Path(__file__).resolve().parents[1]
    model = echostream.load_model("small_en")
    samples = _joined_samples(root / "samples")
    c, left, right = setting
    offline = model.transcribe((samples, 16000), chunk_size=c, left_context=left, right_context=right)[0].text
    rec = Recognizer(model, chunk_size=c, left_context=left, right_context=right)
    finals = _finals(rec, samples)
    assert len(finals) >= 3
    joined = " ".join(text for text, _ in finals)
    assert joined.replace(" ", "") == offline.replace(" ", "")  # a word may be cut at a segment end
    first_end = len(sf.read(root / "samples" / "booking_16k.wav")[0])
    assert finals[0][1] < first_end + 3 * 16000
    if right:
        assert 3 < rec.latency_seconds  # exact frames of the sentence end came later than its final


@pytest.mark.parametrize("setting", [(8, 16, 8), (4, 8, 4)], ids=lambda s: "c{}_l{}_r{}".format(*s))
def test_length_endpoints_commit_exact_frames_only(
    fixture_model: echostream.Model, long_audio: tuple[str, np.ndarray], setting: tuple[int, int, int]
) -> None:
    """Random weights, a 30 s file cut by the utterance-length rule mid-speech: the tail is not
    committed, so the finals joined equal the long-form text exactly."""
    path, samples = long_audio
    c, left, right = setting
    offline = fixture_model.transcribe(path, chunk_size=c, left_context=left, right_context=right)[0].text
    rules = EndpointConfig(max_utterance=4.0, silence_after_speech=100.0, silence_without_speech=100.0)
    rec = Recognizer(fixture_model, chunk_size=c, left_context=left, right_context=right, endpoint=rules)
    finals = _finals(rec, samples)
    assert len(finals) >= 5
    assert "".join(text for text, _ in finals).replace(" ", "") == offline.replace(" ", "")
