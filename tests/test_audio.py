"""Tests for echostream.audio: decoding, downmix, resampling, block reading and errors."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from echostream import audio
from echostream.audio import (
    MAX_CHANNELS,
    MIN_SAMPLE_RATE,
    SAMPLE_RATE,
    AudioError,
    audio_duration,
    iter_audio_blocks,
    load_audio,
    normalize_samples,
    parse_channel,
    prepare_waveform,
)

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared"
FIXTURE_AUDIO = SHARED / "fixtures" / "chunkformer-tiny" / "audio"
FSDD = SHARED / "data" / "fsdd"


def _signal(rate: int, seconds: float, channels: int = 1, seed: int = 0) -> np.ndarray:
    """(N,) or (N, C) float64 speech-band noise plus a tone, peak below 0.9."""
    rng = np.random.default_rng(seed)
    n = int(rate * seconds)
    t = np.arange(n) / rate
    columns = [
        0.5 * np.sin(2 * np.pi * (220 + 110 * c) * t) + 0.1 * rng.standard_normal(n)
        for c in range(channels)
    ]
    x = np.clip(np.stack(columns, axis=1), -0.9, 0.9)  # (N, C)
    return x[:, 0] if channels == 1 else x


def _write(path: Path, data: np.ndarray, rate: int, subtype: str | None = None) -> Path:
    sf.write(path, data, rate, subtype=subtype)
    return path


def _require_ffmpeg() -> None:
    if shutil.which("ffmpeg") is None:
        pytest.skip("ffmpeg is not installed")


def _ffmpeg_encode(source: Path, target: Path) -> Path:
    subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-y", "-i", str(source), str(target)], check=True
    )
    return target


def _no_ffmpeg(monkeypatch: pytest.MonkeyPatch) -> None:
    real_which = shutil.which
    monkeypatch.setattr(
        audio.shutil, "which", lambda name: None if name == "ffmpeg" else real_which(name)
    )


# ---------------------------------------------------------------------------------- formats


@pytest.mark.parametrize(
    ("subtype", "atol"),
    [
        ("PCM_16", 1 / 2**15),
        ("PCM_24", 1 / 2**23),
        ("PCM_32", 1e-7),
        ("FLOAT", 1e-7),
        ("DOUBLE", 1e-7),
        ("PCM_U8", 1 / 2**7),
    ],
)
def test_wav_subtypes_round_trip(tmp_path: Path, subtype: str, atol: float) -> None:
    x = _signal(SAMPLE_RATE, 0.5)
    path = _write(tmp_path / f"{subtype}.wav", x, SAMPLE_RATE, subtype)
    y = load_audio(path)
    assert y.dtype == np.float32 and y.shape == x.shape
    np.testing.assert_allclose(y, x, atol=atol, rtol=0)


def test_stereo_is_averaged(tmp_path: Path) -> None:
    x = _signal(SAMPLE_RATE, 0.5, channels=2)
    path = _write(tmp_path / "stereo.wav", x, SAMPLE_RATE, "FLOAT")
    y = load_audio(path)
    assert y.shape == (x.shape[0],)
    np.testing.assert_allclose(y, x.mean(axis=1), atol=1e-7)


@pytest.mark.parametrize(("choice", "column"), [("left", 0), ("right", 1), ("1", 1), (0, 0)])
def test_one_channel_of_a_stereo_call_is_kept(tmp_path: Path, choice: object, column: int) -> None:
    x = np.stack([_signal(8000, 0.6, seed=1), _signal(8000, 0.6, seed=2)], axis=1)  # agent | customer
    path = _write(tmp_path / "call.wav", x, 8000, "FLOAT")
    channel = parse_channel(choice)
    expected = load_audio(_write(tmp_path / "side.wav", x[:, column], 8000, "FLOAT"))
    np.testing.assert_array_equal(load_audio(path, channel=channel), expected)
    np.testing.assert_array_equal(np.concatenate(list(iter_audio_blocks(path, 0.25, channel=channel))), expected)
    np.testing.assert_array_equal(
        prepare_waveform(x.astype(np.float32), 8000, channel=channel), prepare_waveform(x[:, column].astype(np.float32), 8000)
    )


def test_a_channel_the_file_lacks_is_one_clear_error(tmp_path: Path) -> None:
    path = _write(tmp_path / "mono.wav", _signal(SAMPLE_RATE, 0.2), SAMPLE_RATE)
    with pytest.raises(AudioError, match=r"mono.wav has 1 channel; there is no channel 1 \(right\)"):
        load_audio(path, channel=1)
    with pytest.raises(AudioError, match="there is no channel 1"):
        iter_audio_blocks(path, 1.0, channel=1)  # before any block
    for bad in ("centre", -1, "99", True):
        with pytest.raises(AudioError, match="expected left, right, mix"):
            parse_channel(bad)


def test_one_channel_through_ffmpeg(tmp_path: Path) -> None:
    _require_ffmpeg()
    x = np.stack([_signal(SAMPLE_RATE, 1.0, seed=1), np.zeros(SAMPLE_RATE)], axis=1)  # speech | silence
    wav = _write(tmp_path / "call.wav", x, SAMPLE_RATE)
    m4a = _ffmpeg_encode(wav, tmp_path / "call.m4a")
    left, right = load_audio(m4a, channel=0), load_audio(m4a, channel=1)
    assert np.sqrt(np.mean(left**2)) > 0.1 and np.sqrt(np.mean(right**2)) < 1e-3
    with pytest.raises(AudioError, match="call.m4a has 2 channels; there is no channel 5"):
        load_audio(m4a, channel=5)


def test_8khz_speech_is_resampled() -> None:
    path = min(FSDD.glob("*.wav"))
    n = sf.info(path).frames
    y = load_audio(path)
    assert abs(y.size - 2 * n) <= 1
    assert y.dtype == np.float32
    # Resampling keeps the signal: the energy barely changes.
    x = sf.read(path, dtype="float32")[0]
    assert np.sqrt(np.mean(y**2)) == pytest.approx(np.sqrt(np.mean(x**2)), rel=0.05)


def test_44k_is_resampled_with_right_length(tmp_path: Path) -> None:
    x = _signal(44100, 1.3, channels=2)
    path = _write(tmp_path / "cd.wav", x, 44100)
    y = load_audio(path)
    assert abs(y.size - round(x.shape[0] * SAMPLE_RATE / 44100)) <= 1
    assert np.abs(y).max() < 1.0
    assert load_audio(path, target_rate=44100).size == x.shape[0]


@pytest.mark.parametrize(("fmt", "suffix"), [("FLAC", "flac"), ("OGG", "ogg")])
def test_flac_and_ogg(tmp_path: Path, fmt: str, suffix: str) -> None:
    x = _signal(SAMPLE_RATE, 1.0)
    path = tmp_path / f"speech.{suffix}"
    sf.write(path, x, SAMPLE_RATE, format=fmt)
    y = load_audio(path)
    assert y.shape == x.shape
    if fmt == "FLAC":
        np.testing.assert_allclose(y, x, atol=1 / 2**15)
    else:  # lossy: the waveform is close, not equal
        assert np.corrcoef(x, y)[0, 1] > 0.95


def test_mp3(tmp_path: Path) -> None:
    _require_ffmpeg()
    x = _signal(22050, 1.0)
    mp3 = _ffmpeg_encode(_write(tmp_path / "src.wav", x, 22050), tmp_path / "song.mp3")
    y = load_audio(mp3)
    expected = x.size * SAMPLE_RATE // 22050
    assert abs(y.size - expected) < 0.06 * SAMPLE_RATE  # codec padding, if any, is small
    assert np.sqrt(np.mean(y**2)) == pytest.approx(np.sqrt(np.mean(x**2)), rel=0.15)
    assert audio_duration(mp3) == pytest.approx(1.0, abs=0.06)


def test_m4a_goes_through_ffmpeg(tmp_path: Path) -> None:
    _require_ffmpeg()
    x = _signal(SAMPLE_RATE, 1.0)
    m4a = _ffmpeg_encode(_write(tmp_path / "src.wav", x, SAMPLE_RATE), tmp_path / "song.m4a")
    with pytest.raises(sf.LibsndfileError):
        sf.info(m4a)  # libsndfile cannot read it: ffmpeg must be doing the work
    y = load_audio(m4a)
    assert y.dtype == np.float32
    assert abs(y.size - x.size) < 0.1 * SAMPLE_RATE
    assert audio_duration(m4a) == pytest.approx(1.0, abs=0.1)
    blocks = list(iter_audio_blocks(m4a, 0.25))
    assert all(b.size == 4000 for b in blocks[:-1])
    np.testing.assert_array_equal(np.concatenate(blocks), y)


def test_audio_duration_from_header(tmp_path: Path) -> None:
    path = _write(tmp_path / "d.wav", _signal(44100, 0.75), 44100)
    assert audio_duration(path) == pytest.approx(0.75, abs=1 / 44100)
    assert audio_duration(FIXTURE_AUDIO / "long.wav") == pytest.approx(30.0)


def test_non_finite_float_file(tmp_path: Path) -> None:
    x = _signal(SAMPLE_RATE, 0.2)
    x[100] = np.nan
    path = _write(tmp_path / "nan.wav", x, SAMPLE_RATE, "FLOAT")
    with pytest.raises(AudioError, match="non-finite"):
        load_audio(path)


# ----------------------------------------------------------------------------------- errors


def _make_missing(tmp_path: Path) -> Path:
    return tmp_path / "missing.wav"


def _make_empty(tmp_path: Path) -> Path:
    path = tmp_path / "empty.wav"
    path.write_bytes(b"")
    return path


def _make_text(tmp_path: Path) -> Path:
    path = tmp_path / "notes.txt"
    path.write_text("these are my notes\n" * 20)
    return path


def _make_corrupt(tmp_path: Path) -> Path:
    path = tmp_path / "corrupt.wav"
    path.write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes(range(200)))
    return path


def _make_low_rate(tmp_path: Path) -> Path:
    return _write(tmp_path / "x.wav", _signal(4000, 0.5), 4000)


def _make_no_samples(tmp_path: Path) -> Path:
    return _write(tmp_path / "x.wav", np.zeros(0), SAMPLE_RATE)


ERROR_CASES: list[tuple[Callable[[Path], Path], str]] = [
    (_make_missing, "file not found"),
    (_make_empty, r"file is empty \(0 bytes\)"),
    (_make_text, r"not an audio file \(format not recognised\)"),
    (_make_corrupt, "cannot decode audio: .*fmt"),
    (_make_low_rate, "sample rate 4000 Hz is below the 8000 Hz minimum"),
    (_make_no_samples, "no audio samples"),
]

READERS: dict[str, Callable[[Path], object]] = {
    "load_audio": load_audio,
    "iter_audio_blocks": lambda p: iter_audio_blocks(p, 1.0),  # raises before any block
    "audio_duration": audio_duration,
}


@pytest.mark.parametrize("with_ffmpeg", [True, False], ids=["ffmpeg", "no-ffmpeg"])
@pytest.mark.parametrize("reader", list(READERS))
@pytest.mark.parametrize(("make", "message"), ERROR_CASES, ids=[m.__name__ for m, _ in ERROR_CASES])
def test_errors_are_one_line_naming_the_file(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    make: Callable[[Path], Path],
    message: str,
    reader: str,
    with_ffmpeg: bool,
) -> None:
    if with_ffmpeg:
        _require_ffmpeg()
    else:
        _no_ffmpeg(monkeypatch)
    path = make(tmp_path)
    with pytest.raises(AudioError, match=f"^{path}: {message}") as info:
        READERS[reader](path)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("suffix", ["mp3", "m4a"])
def test_ffmpeg_needed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, suffix: str) -> None:
    _no_ffmpeg(monkeypatch)
    path = tmp_path / f"song.{suffix}"
    noise = bytes(np.random.default_rng(0).integers(0, 256, 3000, dtype=np.uint8))
    path.write_bytes(b"ID3\x04" + noise if suffix == "mp3" else noise)  # an mp3 libsndfile cannot read
    with pytest.raises(
        AudioError, match=f"^{path}: {suffix} needs ffmpeg, which is not installed$"
    ):
        load_audio(path)


@pytest.mark.parametrize("content", [b"hello, this is text\n" * 100, bytes(range(256)) * 8])
def test_a_file_named_mp3_that_is_not_mpeg_is_one_quiet_line(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], content: bytes
) -> None:
    path = tmp_path / "song.mp3"
    path.write_bytes(content)
    with pytest.raises(AudioError, match=f"^{path}: cannot decode audio: not MPEG audio") as info:
        load_audio(path)
    assert "\n" not in str(info.value)
    out, err = capfd.readouterr()
    assert out == err == ""  # libsndfile's mp3 decoder printed "Note: Illegal Audio-MPEG-Header ..." here


def test_ffmpeg_failure_is_one_line(tmp_path: Path) -> None:
    _require_ffmpeg()
    path = tmp_path / "broken.m4a"
    path.write_bytes(b"\x00\x00\x00\x18ftypM4A " + bytes(range(256)) * 4)
    with pytest.raises(AudioError, match=f"^{path}: cannot decode audio: ffmpeg: ") as info:
        load_audio(path)
    assert "\n" not in str(info.value)


def test_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(AudioError, match="not a regular file"):
        load_audio(tmp_path)


# ------------------------------------------------------------------------------ block reading


def test_blocks_equal_load_audio_exactly_at_16k() -> None:
    path = FIXTURE_AUDIO / "long.wav"
    whole = load_audio(path)
    blocks = list(iter_audio_blocks(path, 1.7))
    assert all(b.dtype == np.float32 and b.size == 27200 for b in blocks[:-1])
    assert 0 < blocks[-1].size <= 27200
    np.testing.assert_array_equal(np.concatenate(blocks), whole)


@pytest.mark.parametrize(("rate", "channels"), [(44100, 2), (8000, 1), (22050, 1)])
def test_blocks_match_load_audio_when_resampling(tmp_path: Path, rate: int, channels: int) -> None:
    path = _write(tmp_path / "r.wav", _signal(rate, 3.1, channels), rate, "FLOAT")
    whole = load_audio(path)
    blocks = list(iter_audio_blocks(path, 0.45))
    assert all(b.size == 7200 for b in blocks[:-1])
    joined = np.concatenate(blocks)
    assert abs(joined.size - whole.size) <= 1
    n = min(joined.size, whole.size)
    np.testing.assert_allclose(joined[:n], whole[:n], atol=1e-5)


def test_blocks_of_stereo_16k_equal_exactly(tmp_path: Path) -> None:
    path = _write(tmp_path / "s.wav", _signal(SAMPLE_RATE, 1.05, 2), SAMPLE_RATE, "PCM_24")
    blocks = list(iter_audio_blocks(path, 0.1))
    np.testing.assert_array_equal(np.concatenate(blocks), load_audio(path))


def test_blocks_need_a_positive_size() -> None:
    with pytest.raises(AudioError, match="block_seconds"):
        iter_audio_blocks(FIXTURE_AUDIO / "utt2.wav", 0.0)


# ------------------------------------------------------------------------- in-memory waveforms


def test_prepare_float_passes_through() -> None:
    x = _signal(SAMPLE_RATE, 0.3)
    y = prepare_waveform(x, SAMPLE_RATE)
    assert y.dtype == np.float32
    np.testing.assert_array_equal(y, x.astype(np.float32))
    half = x.astype(np.float16)
    np.testing.assert_array_equal(prepare_waveform(half, SAMPLE_RATE), half.astype(np.float32))


def test_prepare_integer_scaling() -> None:
    np.testing.assert_array_equal(
        prepare_waveform(np.array([-32768, 0, 16384], dtype=np.int16), SAMPLE_RATE),
        np.array([-1.0, 0.0, 0.5], dtype=np.float32),
    )
    np.testing.assert_array_equal(
        prepare_waveform(np.array([-(2**31), 0, 2**30], dtype=np.int32), SAMPLE_RATE),
        np.array([-1.0, 0.0, 0.5], dtype=np.float32),
    )


def test_prepare_8bit_scaling() -> None:
    np.testing.assert_array_equal(
        prepare_waveform(np.array([0, 128, 192], dtype=np.uint8), SAMPLE_RATE),
        np.array([-1.0, 0.0, 0.5], dtype=np.float32),
    )
    np.testing.assert_array_equal(
        prepare_waveform(np.array([-128, 0, 64], dtype=np.int8), SAMPLE_RATE),
        np.array([-1.0, 0.0, 0.5], dtype=np.float32),
    )


def test_normalize_mixes_short_stereo_pieces_and_keeps_the_input() -> None:
    stereo = np.array([[0.5, -0.5], [0.25, 0.75]], dtype=np.float32)  # (frames, channels)
    before = stereo.copy()
    np.testing.assert_array_equal(normalize_samples(stereo), np.array([0.0, 0.5], np.float32))
    np.testing.assert_array_equal(stereo, before)
    one_frame = np.array([[1000, 3000]], dtype=np.int16)  # (1, 2): one stereo frame, not 2 channels x 1
    np.testing.assert_allclose(normalize_samples(one_frame), [2000 / 32768], rtol=1e-6)
    assert normalize_samples(np.zeros(0, np.int16), allow_empty=True).shape == (0,)
    np.testing.assert_array_equal(normalize_samples([0.0, 0.5]), np.array([0.0, 0.5], np.float32))


def test_prepare_matches_file_loading() -> None:
    path = sorted(FSDD.glob("*.wav"))[1]
    pcm, rate = sf.read(path, dtype="int16")
    np.testing.assert_array_equal(prepare_waveform(pcm, rate), load_audio(path))


def test_prepare_downmix_and_resample() -> None:
    x = _signal(8000, 0.5, channels=2)
    y = prepare_waveform(x, 8000)
    assert y.shape == (8000,)
    np.testing.assert_allclose(prepare_waveform(x, SAMPLE_RATE), x.mean(axis=1), atol=1e-7)
    assert prepare_waveform(x[:, 0], 8000, target_rate=8000).shape == (4000,)


@pytest.mark.parametrize(
    ("samples", "rate", "message"),
    [
        (np.zeros(100), 0, "sample_rate must be a positive int"),
        (np.zeros(100), -16000, "sample_rate must be a positive int"),
        (np.zeros(100), 16000.0, "sample_rate must be a positive int"),
        (np.zeros(100), True, "sample_rate must be a positive int"),
        (np.zeros(100), 4000, f"below the {MIN_SAMPLE_RATE} Hz minimum"),
        (np.zeros(0), SAMPLE_RATE, "no audio samples"),
        (np.zeros((0, 2)), SAMPLE_RATE, "no audio samples"),
        (np.zeros((10, 2, 2)), SAMPLE_RATE, r"shape \(frames,\) or \(frames, channels\)"),
        (np.zeros(()), SAMPLE_RATE, r"shape \(frames,\) or \(frames, channels\)"),
        (np.zeros((2, 100)), SAMPLE_RATE, r"look like \(channels, frames\)"),
        (np.array([0.0, np.nan]), SAMPLE_RATE, "non-finite"),
        (np.array([0.0, np.inf]), SAMPLE_RATE, "non-finite"),
        (np.zeros(100, dtype=np.uint16), SAMPLE_RATE, "unsupported sample dtype uint16"),
        (np.zeros(100, dtype=np.complex64), SAMPLE_RATE, "unsupported sample dtype complex64"),
        (np.array(["a", "b"]), SAMPLE_RATE, "unsupported sample dtype"),
        (np.zeros((100, MAX_CHANNELS + 1)), SAMPLE_RATE, r"look like \(channels, frames\)"),
    ],
)
def test_prepare_errors(samples: np.ndarray, rate: object, message: str) -> None:
    with pytest.raises(AudioError, match=message) as info:
        prepare_waveform(samples, rate)  # type: ignore[arg-type]
    assert "\n" not in str(info.value)


# -------------------------------------------------------------------------------- arithmetic


def test_arithmetic() -> None:
    assert audio.FRAME_LENGTH_SAMPLES == 400 and audio.FRAME_SHIFT_SAMPLES == 160
    assert audio.seconds_to_samples(audio.samples_to_seconds(12345)) == 12345
    assert [audio.num_frames(n) for n in (0, 399, 400, 559, 560)] == [0, 0, 1, 1, 2]
    assert audio.ms_to_samples(25, 8000) == 200 and audio.ms_to_samples(10, 22050) == 220
    assert audio.frames_to_seconds(3) == pytest.approx(0.03)
