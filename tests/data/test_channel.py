"""Tests for echostream.data.channel: each telephone effect measured on its output."""

from __future__ import annotations

import random
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from scipy import signal

from echostream.audio import load_audio
from echostream.data.channel import (
    CODECS,
    TELEPHONE_RATE,
    BandPass,
    ChannelConfig,
    ChannelError,
    Clip,
    Codec,
    Gain,
    Line,
    PacketLoss,
    Resample,
    check_tools,
    codec_available,
    draw_line,
)

SAMPLE = Path(__file__).parents[2] / "samples" / "booking_16k.wav"


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    return load_audio(SAMPLE, 16000)  # (N,) 3.6 s of speech


def band_power_db(x: np.ndarray, rate: int, low: float, high: float) -> float:
    """Mean power spectral density (dB) of x between ``low`` and ``high`` Hz (Welch)."""
    f, psd = signal.welch(x, rate, nperseg=1024)
    band = (f >= low) & (f <= high)
    return float(10 * np.log10(psd[band].mean()))


def envelope(x: np.ndarray, rate: int) -> np.ndarray:
    """Log energy of 20 ms frames: what a speech recogniser mostly relies on."""
    size = rate // 50
    frames = x[: x.size // size * size].reshape(-1, size)
    return np.log10((frames.astype(np.float64) ** 2).mean(1) + 1e-8)


def test_resample_to_telephone_rate(speech: np.ndarray) -> None:
    y, rate = Resample().apply(speech, 16000)
    assert rate == TELEPHONE_RATE == 8000
    assert abs(y.size - speech.size / 2) <= 1
    assert y.dtype == np.float32


def test_band_pass_keeps_the_telephone_band_only() -> None:
    noise = np.random.default_rng(0).standard_normal(8000 * 4).astype(np.float32)
    y, rate = BandPass(300, 3400).apply(noise, 8000)
    inside = band_power_db(y, rate, 500, 3000)
    assert abs(inside - band_power_db(noise, 8000, 500, 3000)) < 1.0  # pass band untouched
    assert inside - band_power_db(y, rate, 0, 100) > 25  # 4th-order edges: > 25 dB down
    assert inside - band_power_db(y, rate, 3850, 4000) > 10


def test_band_pass_refuses_a_band_above_nyquist() -> None:
    with pytest.raises(ValueError, match="does not fit below 4000 Hz"):
        BandPass(300, 5000).apply(np.zeros(800, np.float32), 8000)


def test_gain_changes_the_power_by_its_decibels(speech: np.ndarray) -> None:
    y, _ = Gain(-6.0).apply(speech, 16000)
    ratio = 10 * np.log10(np.sum(y.astype(np.float64) ** 2) / np.sum(speech.astype(np.float64) ** 2))
    assert ratio == pytest.approx(-6.0, abs=1e-3)


def test_clip_clips_the_fraction_asked_for(speech: np.ndarray) -> None:
    y, _ = Clip(0.02).apply(speech, 16000)
    level = np.abs(y).max()
    assert np.mean(np.abs(y) >= level - 1e-7) == pytest.approx(0.02, abs=0.002)
    untouched = np.abs(speech) < level
    np.testing.assert_array_equal(y[untouched], speech[untouched])


@pytest.mark.parametrize("name", [c for c in CODECS if c != "pcm"])
def test_codec_round_trip(name: str, speech: np.ndarray) -> None:
    if not codec_available(name):
        pytest.skip(f"codec {name}: its tool (sox with libsox-fmt-all, or ffmpeg) is not installed")
    line, _ = Line((Resample(), BandPass())).apply(speech, 16000)
    y, rate = Codec(name).apply(line, TELEPHONE_RATE)
    assert rate == TELEPHONE_RATE and y.shape == line.shape and y.dtype == np.float32
    assert np.isfinite(y).all() and not np.array_equal(y, line)  # the codec changed the samples
    # codecs delay and reshape the waveform, but the speech's energy contour survives
    a, b = envelope(line, rate), envelope(y, rate)
    lag = int(np.argmax(signal.correlate(b - b.mean(), a - a.mean(), mode="full"))) - (a.size - 1)
    assert 0 <= lag <= 3  # within 60 ms of delay
    assert np.corrcoef(a[: a.size - lag], b[lag:])[0, 1] > 0.9


def test_codec_round_trip_from_the_wideband_rate(speech: np.ndarray) -> None:
    if not codec_available("gsm"):
        pytest.skip("codec gsm: sox with libsox-fmt-all is not installed")
    y, rate = Codec("gsm").apply(speech, 16000)  # resampled to 8 kHz and back
    assert rate == 16000 and y.shape == speech.shape
    assert band_power_db(speech, 16000, 4500, 7500) - band_power_db(y, 16000, 4500, 7500) > 30


def _ffmpeg(args: list[str], data: bytes) -> bytes:
    return subprocess.run(["ffmpeg", "-v", "error", *args], input=data, capture_output=True, check=True).stdout


@pytest.mark.skipif(
    shutil.which("ffmpeg") is None or not codec_available("mulaw"),
    reason="needs sox and ffmpeg (two independent G.711 implementations to compare)",
)
@pytest.mark.parametrize(("name", "container"), [("mulaw", "mulaw"), ("alaw", "alaw")])
def test_g711_gives_ffmpegs_code_words(name: str, container: str, speech: np.ndarray) -> None:
    line, _ = Resample().apply(speech, 16000)
    ours, _ = Codec(name).apply(line, TELEPHONE_RATE)
    raw = ["-f", "s16le", "-ar", "8000", "-ac", "1"]
    # the 256 levels of the codec, decoded by ffmpeg from every code word
    levels = np.unique(np.frombuffer(_ffmpeg(["-f", container, "-ar", "8000", "-i", "-", *raw, "-"],
                                             bytes(range(256))), "<i2")) / 32768  # fmt: skip
    coded = _ffmpeg([*raw, "-i", "-", "-f", container, "-"], (np.clip(line, -1, 1 - 1 / 32768) * 32768).astype("<i2").tobytes())
    theirs = np.frombuffer(_ffmpeg(["-f", container, "-ar", "8000", "-i", "-", *raw, "-"], coded), "<i2") / 32768
    ours_index = np.searchsorted(levels, ours)
    assert np.array_equal(levels[np.minimum(ours_index, levels.size - 1)], ours)  # only G.711 levels
    # the two encoders round some inputs near a decision threshold to the neighbouring level
    assert np.abs(ours_index - np.searchsorted(levels, theirs)).max() <= 1
    snr = 10 * np.log10(np.sum(line**2) / np.sum((ours - line) ** 2))
    assert 30 < snr < 45  # G.711's quantisation noise on speech (about 38 dB)


def test_packet_loss_zeroes_the_lost_frames(speech: np.ndarray) -> None:
    loss = PacketLoss(0.1, "zero", seed=4)
    y, _ = loss.apply(speech, 16000)
    lost = loss.lost_frames(speech.size, 16000)
    frames = np.resize(y, lost.size * 320).reshape(-1, 320)
    assert 0.05 < lost.mean() < 0.15
    assert not np.any(frames[lost[:-1].nonzero()[0]])
    kept = np.repeat(~lost, 320)[: speech.size]
    np.testing.assert_array_equal(y[kept], speech[kept])


def test_packet_loss_repeats_the_last_good_frame_fading() -> None:
    x = np.arange(1, 8001, dtype=np.float32)  # 1 s at 8 kHz: 50 frames of 160
    loss = PacketLoss(0.3, "repeat", seed=1)
    y, _ = loss.apply(x, 8000)
    lost = loss.lost_frames(x.size, 8000)
    i = next(i for i in range(1, lost.size) if lost[i] and not lost[i - 1])
    np.testing.assert_array_equal(y[i * 160 : (i + 1) * 160], 0.5 * x[(i - 1) * 160 : i * 160])


def test_packet_loss_with_opus_concealment(speech: np.ndarray) -> None:
    if shutil.which("opusenc") is None or shutil.which("opusdec") is None:
        pytest.skip("opusenc/opusdec not installed (Debian opus-tools)")
    clean, _ = PacketLoss(0.0, "opus").apply(speech, 16000)
    assert clean is speech  # no loss: nothing to do
    y, rate = PacketLoss(0.2, "opus").apply(speech, 16000)
    assert rate == 16000 and y.shape == speech.shape and np.isfinite(y).all()
    # concealment fills the gaps: no 20 ms frame of speech goes fully silent
    speech_frames = envelope(speech, 16000) > -3
    assert (envelope(y, 16000)[speech_frames] > -6).mean() > 0.95


def test_packet_loss_refuses_absurd_settings() -> None:
    with pytest.raises(ValueError, match="packet loss rate"):
        PacketLoss(1.5)
    with pytest.raises(ValueError, match="concealment 'magic'"):
        PacketLoss(0.1, "magic")


def test_lines_are_drawn_reproducibly_from_the_config() -> None:
    cfg = ChannelConfig(packet_loss_probability=0.5, clip_probability=0.5)
    first = [draw_line(cfg, random.Random(s)) for s in range(40)]
    again = [draw_line(cfg, random.Random(s)) for s in range(40)]
    assert first == again
    names = {e.name for line in first if line for e in line.effects if isinstance(e, Codec)}
    assert len(names) >= 6  # the codec is drawn by weight
    assert any(isinstance(e, PacketLoss) for line in first if line for e in line.effects)
    assert draw_line(ChannelConfig(probability=0.0), random.Random(0)) is None


def test_a_drawn_line_runs_end_to_end(speech: np.ndarray) -> None:
    cfg = ChannelConfig(codecs=("mulaw", "gsm"), codec_weights=(1.0, 1.0), packet_loss_probability=1.0,
                        concealments=("zero",), clip_probability=1.0)  # fmt: skip
    if not all(codec_available(c) for c in cfg.codecs):
        pytest.skip("sox with libsox-fmt-all is not installed")
    line = draw_line(cfg, random.Random(3))
    assert line is not None
    y, rate = line.apply(speech, 16000)
    assert rate == 8000 and abs(y.size - speech.size / 2) <= 1
    assert line.describe().startswith("8k bp") and "loss" in line.describe() and "clip" in line.describe()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"probability": 1.5}, "channel.probability must be in"),
        ({"codecs": ("mulaw", "carrier-pigeon"), "codec_weights": (1.0, 1.0)}, "unknown 'carrier-pigeon'"),
        ({"codecs": ("mulaw",), "codec_weights": (1.0, 2.0)}, "one weight per codec"),
        ({"codecs": ("mulaw",), "codec_weights": (0.0,)}, "not all 0"),
        ({"high_hz": (3000.0, 5000.0)}, "channel.high_hz must be"),
        ({"gain_db": (6.0, -6.0)}, "channel.gain_db must be"),
        ({"concealments": ()}, "channel.concealments"),
    ],
)
def test_channel_config_refuses_bad_values(change: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ChannelConfig(**change)  # type: ignore[arg-type]


def test_missing_tools_are_named_before_any_utterance(monkeypatch: pytest.MonkeyPatch) -> None:
    codec_available.cache_clear()
    monkeypatch.setenv("PATH", "/nonexistent")
    try:
        with pytest.raises(ChannelError, match="not available here: gsm, g722"):
            check_tools(ChannelConfig(codecs=("pcm", "gsm", "g722"), codec_weights=(1.0, 1.0, 1.0)))
        check_tools(ChannelConfig(codecs=("pcm", "gsm"), codec_weights=(1.0, 0.0),
                                  packet_loss_probability=0.0))  # fmt: skip
    finally:
        codec_available.cache_clear()
