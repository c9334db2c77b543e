"""Audio loading, resampling and sample <-> frame <-> second arithmetic.

Shape legend:
    N  samples of a mono waveform at the model rate (``SAMPLE_RATE`` unless stated)
    C  channels of a multi-channel input
    B  samples in one block of :func:`iter_audio_blocks`

Every waveform this module returns is float32, mono, ``(N,)``, at ``target_rate``. Integer encodings
are scaled into [-1, 1); float encodings are passed through as stored (they are expected to lie in
[-1, 1] but are not clipped).

Decoding: libsndfile (through ``soundfile``) reads WAV, FLAC, OGG/Vorbis/Opus, MP3 and the other
formats it knows; anything it cannot open (m4a, aac, webm, ...) is decoded by an ``ffmpeg``
subprocess, if ``ffmpeg`` is installed. Every failure is an :class:`AudioError` whose message is one
line naming the file.
"""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

SAMPLE_RATE = 16000
"""The model's sample rate (Hz)."""
MIN_SAMPLE_RATE = 8000
"""Inputs recorded below this rate (Hz) are refused: they lack most of the speech band."""
FRAME_SHIFT_MS = 10
"""Hop between feature frames (milliseconds)."""
FRAME_LENGTH_MS = 25
"""Analysis window of one feature frame (milliseconds)."""

_RESAMPLE_QUALITY = "HQ"
_FORMAT_NOT_RECOGNISED = "format not recognised"
# Containers libsndfile cannot read but ffmpeg can; used to phrase "ffmpeg is needed" errors.
_FFMPEG_EXTENSIONS = frozenset(
    {
        "aac",
        "ac3",
        "amr",
        "m4a",
        "m4b",
        "mka",
        "mkv",
        "mov",
        "mp2",
        "mp3",
        "mp4",
        "webm",
        "wma",
        "3gp",
    }
)


class AudioError(ValueError):
    """Audio that cannot be used; the message is one line, naming the file when there is one."""


# --------------------------------------------------------------------------------------------
# Arithmetic
# --------------------------------------------------------------------------------------------


def samples_to_seconds(num_samples: int, sample_rate: int = SAMPLE_RATE) -> float:
    """Duration of ``num_samples`` samples.

    >>> samples_to_seconds(24000)
    1.5
    """
    return num_samples / sample_rate


def seconds_to_samples(seconds: float, sample_rate: int = SAMPLE_RATE) -> int:
    """Number of samples in ``seconds``, rounded to the nearest sample.

    >>> seconds_to_samples(0.5), seconds_to_samples(1.0, 8000)
    (8000, 8000)
    """
    return round(seconds * sample_rate)


def ms_to_samples(ms: float, sample_rate: int = SAMPLE_RATE) -> int:
    """Samples in a window of ``ms`` milliseconds, truncated exactly as Kaldi does.

    Kaldi computes ``int(samp_freq * 0.001f * ms)`` in single precision; this reproduces it so that
    frame counts agree with ``kaldi_native_fbank`` for every configuration.

    >>> ms_to_samples(FRAME_LENGTH_MS), ms_to_samples(FRAME_SHIFT_MS)
    (400, 160)
    """
    return int(np.float32(sample_rate) * np.float32(0.001) * np.float32(ms))


FRAME_LENGTH_SAMPLES = ms_to_samples(FRAME_LENGTH_MS)
"""Samples in one analysis window at ``SAMPLE_RATE`` (400)."""
FRAME_SHIFT_SAMPLES = ms_to_samples(FRAME_SHIFT_MS)
"""Samples between frame starts at ``SAMPLE_RATE`` (160)."""


def num_frames(
    num_samples: int,
    frame_length: int = FRAME_LENGTH_SAMPLES,
    frame_shift: int = FRAME_SHIFT_SAMPLES,
) -> int:
    """Frames whose window lies wholly inside ``num_samples`` samples (Kaldi ``snip_edges``).

    Frame ``i`` covers samples ``[i * frame_shift, i * frame_shift + frame_length)``.

    >>> num_frames(399), num_frames(400), num_frames(559), num_frames(560)
    (0, 1, 1, 2)
    """
    if num_samples < frame_length:
        return 0
    return 1 + (num_samples - frame_length) // frame_shift


def frames_to_seconds(frame_index: int, frame_shift_ms: float = FRAME_SHIFT_MS) -> float:
    """Start time of feature frame ``frame_index``.

    >>> frames_to_seconds(150)
    1.5
    """
    return frame_index * frame_shift_ms / 1000.0


# --------------------------------------------------------------------------------------------
# In-memory waveforms
# --------------------------------------------------------------------------------------------


MAX_CHANNELS = 32
"""More columns than this in a 2-D array means it was passed as (channels, frames)."""

# integer sample encodings: (offset, scale) so that (x - offset) / scale lies in [-1, 1)
_INTEGER_SCALES: dict[np.dtype, tuple[float, float]] = {
    np.dtype(np.int16): (0.0, 2.0**15),
    np.dtype(np.int32): (0.0, 2.0**31),
    np.dtype(np.int8): (0.0, 2.0**7),
    np.dtype(np.uint8): (128.0, 2.0**7),  # 8-bit WAV is unsigned
}


def check_sample_rate(sample_rate: object, name: str = "sample_rate") -> int:
    """``sample_rate`` as an int, or AudioError: not a positive int, or below ``MIN_SAMPLE_RATE``.

    >>> check_sample_rate(8000)
    8000
    """
    _check_rate_argument(name, sample_rate)
    rate = int(sample_rate)  # type: ignore[call-overload]
    if rate < MIN_SAMPLE_RATE:
        raise AudioError(f"sample rate {rate} Hz is below the {MIN_SAMPLE_RATE} Hz minimum")
    return rate


def parse_channel(value: object) -> int | None:
    """A channel choice -> its 0-based index: ``left`` 0, ``right`` 1, a number as given, None
    (or ``mix``) for the average of all channels.

    >>> parse_channel("right"), parse_channel("3"), parse_channel(None)
    (1, 3, None)
    """
    if value is None or value == "mix":
        return None
    if isinstance(value, str):
        named = {"left": 0, "right": 1}
        if value.strip().lower() in named:
            return named[value.strip().lower()]
        if not value.strip().isdigit():
            raise AudioError(f"channel {value!r}: expected left, right, mix or a 0-based channel number")
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 0 <= value < MAX_CHANNELS:
        raise AudioError(f"channel {value!r}: expected left, right, mix or a number in [0, {MAX_CHANNELS})")
    return int(value)


def normalize_samples(
    samples: object, *, allow_empty: bool = False, channel: int | None = None
) -> np.ndarray:
    """Any in-memory waveform -> (N,) float32 mono in the encoding's [-1, 1] range.

    The one input normalisation of echostream: :func:`prepare_waveform` (whole arrays given to
    ``Model.transcribe``) and ``Stream.accept_waveform`` (pieces of a stream) both use it.

    Args:
        samples: (N,) mono or (N, C) frames x channels (at most ``MAX_CHANNELS``), as a numpy
            array or a sequence of numbers. Floats of any precision (expected in [-1, 1], passed
            through), int16 / int32 / int8 (scaled by 2**15 / 2**31 / 2**7) or uint8 (unsigned
            8-bit PCM, centred on 128).
        allow_empty: accept zero samples (a stream's empty piece) instead of refusing them.
        channel: keep this channel (0-based) instead of averaging them (mono input: only 0).

    Returns:
        (N,) float32: channels are averaged, or the one asked for is kept.

    Raises:
        AudioError: wrong number of dimensions, (channels, frames) order, no samples, an
            unsupported dtype, or NaN/inf values. The input is never modified.

    >>> normalize_samples(np.array([[16384, -16384], [0, 32767]], dtype=np.int16)).tolist()
    [0.0, 0.4999847412109375]
    """
    if isinstance(samples, np.ndarray):
        array = samples
    else:
        try:
            array = np.asarray(samples)
        except (TypeError, ValueError) as err:
            raise AudioError(f"samples are not an array of numbers ({err})") from None
    if array.ndim not in (1, 2):
        raise AudioError(f"expected samples of shape (frames,) or (frames, channels), got {array.shape}")
    if array.size == 0 and not allow_empty:
        raise AudioError(f"no audio samples (shape {array.shape})")
    if array.ndim == 2 and array.shape[1] > MAX_CHANNELS:
        raise AudioError(
            f"samples of shape {array.shape} look like (channels, frames); pass (frames, channels)"
        )
    if np.issubdtype(array.dtype, np.floating):
        scaled = array.astype(np.float32)
    elif array.dtype in _INTEGER_SCALES:
        offset, scale = _INTEGER_SCALES[array.dtype]
        scaled = ((array.astype(np.float64) - offset) / scale).astype(np.float32)
    else:
        raise AudioError(
            f"unsupported sample dtype {array.dtype}; use float, int16, int32, int8 or uint8"
        )
    if not np.isfinite(scaled).all():
        raise AudioError("samples contain non-finite values (NaN or inf)")
    if scaled.ndim == 1:
        scaled = scaled[:, None]
    return _downmix(scaled, channel)


def prepare_waveform(
    samples: np.ndarray, sample_rate: int, target_rate: int = SAMPLE_RATE, *, channel: int | None = None
) -> np.ndarray:
    """Turn an in-memory waveform into the model's input.

    Args:
        samples: (N,) or (N, C), anything :func:`normalize_samples` takes.
        sample_rate: rate of ``samples`` in Hz, a positive int of at least ``MIN_SAMPLE_RATE``.
        target_rate: rate of the result.

    Returns:
        (N',) float32 mono at ``target_rate``; channels are averaged, or ``channel`` kept.

    Raises:
        AudioError: bad rate, or anything :func:`normalize_samples` refuses.
    """
    rate = check_sample_rate(sample_rate)
    _check_rate_argument("target_rate", target_rate)
    return _resample(normalize_samples(samples, channel=channel), rate, target_rate)


def _check_rate_argument(name: str, rate: object) -> None:
    if isinstance(rate, bool) or not isinstance(rate, (int, np.integer)) or rate <= 0:
        raise AudioError(f"{name} must be a positive int, got {rate!r}")


def _downmix(block: np.ndarray, channel: int | None = None) -> np.ndarray:
    """(B, C) float32 -> (B,) float32, the average of the channels (or channel ``channel``).

    Sample-wise (no reduction across rows), so downmixing a file block by block gives exactly
    the same samples as downmixing it whole.
    """
    channels = block.shape[1]
    if channel is not None:
        _check_channel(channel, channels, "the audio")
        return np.ascontiguousarray(block[:, channel], dtype=np.float32)
    if channels == 1:
        return np.ascontiguousarray(block[:, 0], dtype=np.float32)
    total = block[:, 0].astype(np.float64)  # (B,)
    for c in range(1, channels):
        total += block[:, c]
    return (total / channels).astype(np.float32)


def _check_channel(channel: int, channels: int, what: str) -> None:
    if not 0 <= channel < channels:
        names = {0: " (left)", 1: " (right)"}
        raise AudioError(
            f"{what} has {channels} channel{'s' if channels != 1 else ''}; there is no channel "
            f"{channel}{names.get(channel, '')}"
        )


def _resample(mono: np.ndarray, rate: int, target_rate: int) -> np.ndarray:
    """(N,) float32 at ``rate`` -> (N',) float32 at ``target_rate``."""
    if rate == target_rate:
        return mono
    out = soxr.resample(mono, rate, target_rate, quality=_RESAMPLE_QUALITY)
    return np.asarray(out, dtype=np.float32)


# --------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class _Header:
    """What libsndfile reports about a file it can read."""

    sample_rate: int
    frames: int  # samples per channel
    channels: int


@dataclass(frozen=True, kw_only=True)
class _Source:
    """A checked file and how it is decoded: libsndfile when ``header`` is set, else ffmpeg."""

    path: Path
    name: str  # the path as the caller spelled it, for messages
    header: _Header | None
    libsndfile_reason: str = ""  # why libsndfile refused the file (ffmpeg sources only)


def load_audio(
    path: str | os.PathLike[str], target_rate: int = SAMPLE_RATE, *, channel: int | None = None
) -> np.ndarray:
    """Read a whole audio file.

    Args:
        path: WAV/FLAC/OGG/MP3 (any sample encoding) or, with ffmpeg installed, any container
            ffmpeg decodes.
        target_rate: rate of the result in Hz.
        channel: keep this channel (0-based: 0 left, 1 right) instead of averaging them, e.g.
            one side of a stereo call recording.

    Returns:
        (N,) float32 mono at ``target_rate``; channels are averaged (or ``channel`` kept), the
        rate is converted with soxr (HQ) for libsndfile formats and by ffmpeg otherwise.

    Raises:
        AudioError: one line naming the file (missing, empty, not audio, undecodable, sample rate
            below ``MIN_SAMPLE_RATE``, no samples, non-finite samples, ffmpeg needed).
    """
    _check_rate_argument("target_rate", target_rate)
    source = _open_source(path, channel)
    if source.header is None:
        mono = _ffmpeg_decode(source, target_rate, channel)
        if mono.size == 0:
            raise AudioError(f"{source.name}: no audio samples")
        _check_finite(source, mono)
        return mono
    try:
        data, rate = sf.read(source.path, dtype="float32", always_2d=True)  # (N, C)
    except (sf.LibsndfileError, RuntimeError) as err:
        raise AudioError(f"{source.name}: cannot decode audio: {_libsndfile_reason(err)}") from err
    if data.shape[0] == 0:
        raise AudioError(f"{source.name}: no audio samples")
    mono = _downmix(data, channel)
    _check_finite(source, mono)
    return _resample(mono, rate, target_rate)


def audio_duration(path: str | os.PathLike[str], *, channel: int | None = None) -> float:
    """Duration of an audio file in seconds, from its header when possible.

    libsndfile formats read the header only; other containers ask ``ffprobe`` and, failing that,
    decode the file with ffmpeg. With ``channel``, a file without that channel is an AudioError.
    """
    source = _open_source(path, channel)
    if source.header is not None:
        return source.header.frames / source.header.sample_rate
    probed = _ffprobe_duration(source)
    if probed is not None:
        return probed
    return samples_to_seconds(_ffmpeg_decode(source, SAMPLE_RATE).size)


def iter_audio_blocks(
    path: str | os.PathLike[str],
    block_seconds: float,
    target_rate: int = SAMPLE_RATE,
    *,
    channel: int | None = None,
) -> Iterator[np.ndarray]:
    """Read a file of any length block by block, in bounded memory.

    Every yielded block is (B,) float32 mono at ``target_rate`` with
    ``B = seconds_to_samples(block_seconds, target_rate)``, except the last, which may be shorter.
    Concatenating the blocks equals :func:`load_audio` exactly when no resampling is needed, and
    up to the streaming resampler's block effects otherwise (soxr's stream and one-shot results
    agree to float rounding and in length to within a sample).

    Errors are those of :func:`load_audio`; they are raised by this call, before any block, except
    for decoding failures in the middle of the file.
    """
    _check_rate_argument("target_rate", target_rate)
    block_size = seconds_to_samples(block_seconds, target_rate)
    if block_size <= 0:
        raise AudioError(f"block_seconds must give at least one sample, got {block_seconds!r}")
    source = _open_source(path, channel)
    if source.header is None:
        pieces = _ffmpeg_pieces(source, target_rate, block_size, channel)
    else:
        read_size = max(1, seconds_to_samples(block_seconds, source.header.sample_rate))
        pieces = _soundfile_pieces(source, target_rate, read_size, channel)
    blocks = _reblock(pieces, block_size)
    first = next(blocks, None)
    if first is None:
        raise AudioError(f"{source.name}: no audio samples")
    return itertools.chain([first], blocks)


def _open_source(path: str | os.PathLike[str], channel: int | None = None) -> _Source:
    """Check the file (and that it has ``channel``, when libsndfile reads it) and pick its
    decoder; raise AudioError for every problem found up front."""
    name = os.fspath(path)
    file = Path(name)
    if not file.exists():
        raise AudioError(f"{name}: file not found")
    if not file.is_file():
        raise AudioError(f"{name}: not a regular file")
    if file.stat().st_size == 0:
        raise AudioError(f"{name}: file is empty (0 bytes)")
    if file.suffix.lower() in _MPEG_SUFFIXES and not _starts_like_mpeg(file):
        # libsndfile's mp3 decoder prints notes to the terminal on such a file: ffmpeg decides
        source = _Source(path=file, name=name, header=None, libsndfile_reason=_NOT_MPEG)
        _check_ffmpeg_usable(source)
        return source
    try:
        info = sf.info(file)
    except (sf.LibsndfileError, RuntimeError) as err:
        source = _Source(
            path=file, name=name, header=None, libsndfile_reason=_libsndfile_reason(err)
        )
        _check_ffmpeg_usable(source)
        if channel is not None:
            channels = _ffprobe_channels(source)
            if channels is not None:  # ffmpeg's pan filter would give silence for a missing one
                _check_channel(channel, channels, name)
        return source
    if info.samplerate < MIN_SAMPLE_RATE:
        raise AudioError(
            f"{name}: sample rate {info.samplerate} Hz is below the {MIN_SAMPLE_RATE} Hz minimum"
        )
    if info.frames == 0:
        raise AudioError(f"{name}: no audio samples")
    if channel is not None:
        _check_channel(channel, info.channels, name)
    return _Source(
        path=file,
        name=name,
        header=_Header(sample_rate=info.samplerate, frames=info.frames, channels=info.channels),
    )


_MPEG_SUFFIXES = (".mp3", ".mp2", ".mpga")
_NOT_MPEG = "not MPEG audio (no ID3 tag or MPEG frame header at its start)"


def _starts_like_mpeg(file: Path) -> bool:
    """Whether a file starts as MPEG audio does: an ID3v2 tag or a frame sync (11 bits set)."""
    with file.open("rb") as f:
        head = f.read(3)
    return head.startswith(b"ID3") or (len(head) >= 2 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0)


def _extension(source: _Source) -> str:
    return source.path.suffix.lower().lstrip(".")


def _libsndfile_recognised(source: _Source) -> bool:
    """Whether libsndfile knew the format (and failed on the content) rather than not knowing it."""
    return source.libsndfile_reason.lower().rstrip(".") != _FORMAT_NOT_RECOGNISED


def _check_ffmpeg_usable(source: _Source) -> None:
    """libsndfile refused the file: without ffmpeg, say why the file cannot be read."""
    if shutil.which("ffmpeg") is not None:
        return
    if _libsndfile_recognised(source):
        raise AudioError(f"{source.name}: cannot decode audio: {source.libsndfile_reason}")
    if _extension(source) in _FFMPEG_EXTENSIONS:
        raise AudioError(
            f"{source.name}: {_extension(source)} needs ffmpeg, which is not installed"
        )
    raise AudioError(f"{source.name}: not an audio file ({_FORMAT_NOT_RECOGNISED})")


def _libsndfile_reason(err: Exception) -> str:
    """The short reason of a soundfile error, without the "Error opening 'path':" prefix."""
    reason = _first_line(getattr(err, "error_string", None) or str(err))
    # libsndfile's mp3 probe reports an unrecognised existing file as missing; say what it means.
    if reason.lower().startswith("file does not exist or is not a regular file"):
        return "Format not recognised."
    return reason


def _first_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[0] if lines else "unknown error"


def _check_finite(source: _Source, mono: np.ndarray) -> None:
    if not np.isfinite(mono).all():
        raise AudioError(f"{source.name}: audio contains non-finite samples (NaN or inf)")


# --------------------------------------------------------------------------------------------
# ffmpeg
# --------------------------------------------------------------------------------------------


def _ffmpeg_command(source: _Source, target_rate: int, channel: int | None = None) -> list[str]:
    mono = ["-ac", "1"] if channel is None else ["-af", f"pan=mono|c0=c{channel}"]
    return [
        "ffmpeg", "-nostdin", "-v", "error", "-i", str(source.path),
        "-f", "f32le", *mono, "-ar", str(target_rate), "-",
    ]  # fmt: skip


def _ffmpeg_failure(source: _Source, stderr: bytes) -> AudioError:
    """Both decoders failed: report the more telling of the two reasons."""
    if _libsndfile_recognised(source):
        return AudioError(f"{source.name}: cannot decode audio: {source.libsndfile_reason}")
    reason = _first_line(stderr.decode("utf-8", errors="replace"))
    # ffmpeg prefixes the reason with the input path; the message names the file already.
    reason = reason.removeprefix(f"{source.path}: ")
    if reason.lower().startswith("invalid data found") and (
        _extension(source) not in _FFMPEG_EXTENSIONS
    ):
        return AudioError(f"{source.name}: not an audio file ({_FORMAT_NOT_RECOGNISED})")
    return AudioError(f"{source.name}: cannot decode audio: ffmpeg: {reason}")


def _ffmpeg_decode(source: _Source, target_rate: int, channel: int | None = None) -> np.ndarray:
    """Whole file -> (N,) float32 mono at ``target_rate`` (ffmpeg resamples)."""
    try:
        result = subprocess.run(
            _ffmpeg_command(source, target_rate, channel), capture_output=True, check=False
        )
    except OSError as err:
        raise AudioError(f"{source.name}: cannot run ffmpeg: {err.strerror}") from err
    if result.returncode != 0:
        raise _ffmpeg_failure(source, result.stderr)
    return np.frombuffer(result.stdout, dtype="<f4").astype(np.float32)


def _ffmpeg_pieces(
    source: _Source, target_rate: int, block_size: int, channel: int | None = None
) -> Iterator[np.ndarray]:
    """Stream ffmpeg's output: (B,) float32 pieces of at most ``block_size`` samples."""
    block_bytes = 4 * block_size
    # stderr goes to a file so that a chatty decoder can never block on a full pipe.
    with tempfile.TemporaryFile() as stderr_file:
        try:
            process = subprocess.Popen(
                _ffmpeg_command(source, target_rate, channel),
                stdout=subprocess.PIPE,
                stderr=stderr_file,
                stdin=subprocess.DEVNULL,
            )
        except OSError as err:
            raise AudioError(f"{source.name}: cannot run ffmpeg: {err.strerror}") from err
        assert process.stdout is not None
        try:
            leftover = b""  # bytes of an incomplete float32 sample
            while True:
                chunk = process.stdout.read(block_bytes)
                if not chunk:
                    break
                data = leftover + chunk
                usable = len(data) - len(data) % 4
                leftover = data[usable:]
                yield np.frombuffer(data[:usable], dtype="<f4").astype(np.float32)
            if process.wait() != 0:
                stderr_file.seek(0)
                raise _ffmpeg_failure(source, stderr_file.read())
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
            process.stdout.close()


def _ffprobe(source: _Source, *entries: str) -> str | None:
    """One value ffprobe reports about the file (``-show_entries``), None when it cannot say."""
    if shutil.which("ffprobe") is None:
        return None
    command = [
        "ffprobe", "-v", "error", *entries,
        "-of", "default=noprint_wrappers=1:nokey=1", str(source.path),
    ]  # fmt: skip
    try:
        result = subprocess.run(command, capture_output=True, check=False, text=True)
    except OSError:
        return None
    return result.stdout.strip()


def _ffprobe_channels(source: _Source) -> int | None:
    """Channels of the first audio stream, as ffprobe reports them (None: unknown)."""
    text = _ffprobe(source, "-select_streams", "a:0", "-show_entries", "stream=channels")
    return int(text) if text and text.isdigit() else None


def _ffprobe_duration(source: _Source) -> float | None:
    text = _ffprobe(source, "-show_entries", "format=duration")
    try:
        return float(text) if text else None
    except ValueError:
        return None


# --------------------------------------------------------------------------------------------
# Block reading
# --------------------------------------------------------------------------------------------


def _soundfile_pieces(
    source: _Source, target_rate: int, read_size: int, channel: int | None = None
) -> Iterator[np.ndarray]:
    """Read, downmix and stream-resample: (B,) float32 pieces at ``target_rate`` (sizes vary)."""
    assert source.header is not None
    rate = source.header.sample_rate
    resampler = (
        None
        if rate == target_rate
        else soxr.ResampleStream(rate, target_rate, 1, dtype="float32", quality=_RESAMPLE_QUALITY)
    )
    try:
        with sf.SoundFile(source.path) as file:
            while True:
                block = file.read(read_size, dtype="float32", always_2d=True)  # (B, C)
                last = block.shape[0] < read_size
                mono = _downmix(block, channel)
                _check_finite(source, mono)
                if resampler is not None:
                    mono = np.asarray(resampler.resample_chunk(mono, last=last), dtype=np.float32)
                yield mono
                if last:
                    return
    except (sf.LibsndfileError, RuntimeError) as err:
        raise AudioError(f"{source.name}: cannot decode audio: {_libsndfile_reason(err)}") from err


def _reblock(pieces: Iterator[np.ndarray], block_size: int) -> Iterator[np.ndarray]:
    """Re-cut pieces of any size into (block_size,) blocks plus a shorter final block."""
    buffered: list[np.ndarray] = []
    buffered_len = 0
    for piece in pieces:
        if piece.size == 0:
            continue
        buffered.append(piece)
        buffered_len += piece.size
        if buffered_len < block_size:
            continue
        joined = np.concatenate(buffered)  # (buffered_len,)
        full = buffered_len - buffered_len % block_size
        for start in range(0, full, block_size):
            yield joined[start : start + block_size]
        rest = joined[full:]
        buffered = [rest] if rest.size else []
        buffered_len = rest.size
    if buffered_len:
        yield np.concatenate(buffered)
