"""A telephone line: 8 kHz, the telephone band, level changes, codecs, packet loss, clipping.

A :class:`Line` is one chain of effects, each a small frozen dataclass with
``apply(x, rate) -> (y, rate')``; :class:`ChannelConfig` is the distribution that
:func:`draw_line` draws a line from, once per utterance. Effects and lines are usable by themselves
(``Line((Resample(8000), Codec("gsm"))).apply(x, 16000)``), in the training data loader
(``augment.channel``) and from the command line (``echostream augment``).

Codecs are round trips through the real encoders: G.711 mu-law and A-law (``sox``), GSM 06.10
and AMR-NB (``sox``, AMR-NB through libopencore-amrnb), G.722, G.726, Speex, Codec 2 and Opus
(``ffmpeg``). Packet loss drops 20 ms frames and either leaves silence, repeats the last good frame,
or lets the Opus decoder conceal the loss (``opusdec --packet-loss``, from opus-tools).

Shape legend: N samples of a mono float32 waveform in [-1, 1].
"""

from __future__ import annotations

import functools
import random
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import soxr

TELEPHONE_RATE = 8000
"""Sample rate of a narrowband telephone line (Hz)."""


class ChannelError(RuntimeError):
    """An effect that cannot run here (a missing tool) or whose tool failed; one line."""


class Effect(Protocol):
    def apply(self, x: np.ndarray, rate: int) -> tuple[np.ndarray, int]:
        """x: (N,) at ``rate`` -> (N',) at the rate returned."""
        ...


@dataclass(frozen=True)
class Resample:
    """To ``rate`` Hz (soxr, high quality)."""

    rate: int = TELEPHONE_RATE

    def apply(self, x: np.ndarray, rate: int) -> tuple[np.ndarray, int]:
        if rate == self.rate:
            return x, rate
        return np.asarray(soxr.resample(x, rate, self.rate, quality="HQ"), np.float32), self.rate


@dataclass(frozen=True)
class BandPass:
    """Butterworth band-pass of ``order`` between ``low_hz`` and ``high_hz`` (zero phase)."""

    low_hz: float = 300.0
    high_hz: float = 3400.0
    order: int = 4

    def apply(self, x: np.ndarray, rate: int) -> tuple[np.ndarray, int]:
        from scipy import signal

        if not 0 < self.low_hz < self.high_hz < rate / 2:
            raise ValueError(
                f"band-pass {self.low_hz}-{self.high_hz} Hz does not fit below {rate / 2:g} Hz"
            )
        sos = signal.butter(
            self.order, [self.low_hz, self.high_hz], btype="bandpass", fs=rate, output="sos"
        )
        if x.size <= 3 * (2 * sos.shape[0] + 1):  # too short for the padded zero-phase filter
            return np.asarray(signal.sosfilt(sos, x), np.float32), rate
        return np.asarray(signal.sosfiltfilt(sos, x), np.float32), rate


@dataclass(frozen=True)
class Gain:
    """Level change by ``db`` decibels (the line or the handset's level)."""

    db: float

    def apply(self, x: np.ndarray, rate: int) -> tuple[np.ndarray, int]:
        return (x * np.float32(10 ** (self.db / 20))).astype(np.float32), rate


@dataclass(frozen=True)
class Clip:
    """Hard clipping of the loudest ``fraction`` of the samples (an overdriven handset or line)."""

    fraction: float = 0.01

    def apply(self, x: np.ndarray, rate: int) -> tuple[np.ndarray, int]:
        if x.size == 0 or self.fraction <= 0:
            return x, rate
        level = float(np.quantile(np.abs(x), 1 - self.fraction))
        return np.clip(x, -level, level).astype(np.float32), rate


@dataclass(frozen=True)
class _CodecSpec:
    rate: int  # the rate the codec runs at
    tool: str  # the program that runs it
    encode: tuple[str, ...]  # arguments between the raw input and the output
    decode: tuple[str, ...]  # arguments between the encoded input and the raw output


def _sox(kind: str, *options: str) -> _CodecSpec:
    return _CodecSpec(
        TELEPHONE_RATE, "sox", (*options, "-t", kind, "-"), ("-t", kind, "-r", str(TELEPHONE_RATE))
    )


def _ffmpeg(container: str, codec: str, rate: int, *options: str) -> _CodecSpec:
    return _CodecSpec(
        rate, "ffmpeg", ("-c:a", codec, *options, "-f", container, "-"), ("-f", container)
    )


CODECS: dict[str, _CodecSpec | None] = {
    "pcm": None,  # 16-bit linear: the line's band and rate only
    "mulaw": _sox("ul"),  # G.711 mu-law
    "alaw": _sox("al"),  # G.711 A-law
    "gsm": _sox("gsm"),  # GSM 06.10 full rate
    "amr-nb": _sox("amr-nb", "-C", "7"),  # AMR-NB 12.2 kbit/s
    "g722": _ffmpeg("g722", "g722", 16000),  # wideband ADPCM (fed the 8 kHz line upsampled)
    "g726": _ffmpeg("g726", "g726", TELEPHONE_RATE, "-b:a", "32k"),
    "speex": _ffmpeg("ogg", "libspeex", TELEPHONE_RATE),
    "codec2": _ffmpeg("codec2", "libcodec2", TELEPHONE_RATE, "-mode", "3200"),
    "opus": _ffmpeg("ogg", "libopus", TELEPHONE_RATE, "-b:a", "12k"),
}
"""Codec names: ``pcm`` (none) and the round trips the tools here can run."""


def _int16(x: np.ndarray) -> bytes:
    return (np.clip(x, -1.0, 1.0 - 1 / 32768) * 32768).astype("<i2").tobytes()


def _float(data: bytes) -> np.ndarray:
    return np.frombuffer(data[: len(data) // 2 * 2], "<i2").astype(np.float32) / 32768


def _raw_args(tool: str, rate: int) -> tuple[str, ...]:
    if tool == "sox":
        return ("-t", "raw", "-r", str(rate), "-e", "signed", "-b", "16", "-c", "1")
    return ("-f", "s16le", "-ar", str(rate), "-ac", "1")


def _run(command: Sequence[str], data: bytes, what: str) -> bytes:
    try:
        done = subprocess.run(list(command), input=data, capture_output=True, check=False)
    except OSError as err:
        raise ChannelError(f"{what}: cannot run {command[0]}: {err}") from None
    if done.returncode != 0 or not done.stdout:
        reason = done.stderr.decode(errors="replace").strip().splitlines()
        raise ChannelError(f"{what}: {command[0]} failed: {reason[-1] if reason else 'no output'}")
    return done.stdout


def _round_trip(spec: _CodecSpec, name: str, x: np.ndarray) -> np.ndarray:
    """x: (N,) at ``spec.rate`` -> (about N,) decoded, at ``spec.rate``."""
    raw = _raw_args(spec.tool, spec.rate)
    if spec.tool == "sox":
        encoded = _run(["sox", "-D", *raw, "-", *spec.encode], _int16(x), f"codec {name}")
        decoded = _run(
            ["sox", "-D", *spec.decode, "-", "-t", "raw", "-e", "signed", "-b", "16", "-c", "1", "-"],
            encoded,
            f"codec {name}",
        )
    else:
        quiet = ("ffmpeg", "-nostdin", "-v", "error")
        encoded = _run([*quiet, *raw, "-i", "-", *spec.encode], _int16(x), f"codec {name}")
        decoded = _run(
            [*quiet, *spec.decode, "-i", "-", *raw, "-"], encoded, f"codec {name}"
        )
    return _float(decoded)


@dataclass(frozen=True)
class Codec:
    """An encode/decode round trip through codec ``name`` (one of :data:`CODECS`) at its own rate;
    returns at the rate it was given, trimmed or padded to the input's length (codec delay kept)."""

    name: str

    def __post_init__(self) -> None:
        if self.name not in CODECS:
            raise ValueError(f"unknown codec {self.name!r} (known: {', '.join(CODECS)})")

    def apply(self, x: np.ndarray, rate: int) -> tuple[np.ndarray, int]:
        spec = CODECS[self.name]
        if spec is None or x.size == 0:
            return x, rate
        y, _ = Resample(spec.rate).apply(x, rate)
        y = _round_trip(spec, self.name, y)
        y, _ = Resample(rate).apply(y, spec.rate)
        return _fit(y, x.size), rate


def _fit(y: np.ndarray, n: int) -> np.ndarray:
    """(M,) -> (n,): cut or zero-padded at the end."""
    if y.size >= n:
        return np.ascontiguousarray(y[:n], np.float32)
    return np.concatenate([y, np.zeros(n - y.size, np.float32)])


CONCEALMENTS = ("zero", "repeat", "opus")


@dataclass(frozen=True)
class PacketLoss:
    """Each ``frame_ms`` frame is lost with probability ``rate``. ``concealment``: ``zero``
    (silence), ``repeat`` (the last good frame again, fading by half each time) or ``opus`` (the
    line is Opus-coded and ``opusdec --packet-loss`` drops packets and conceals them; its own draw).
    ``seed`` draws which frames are lost (``zero`` and ``repeat``)."""

    rate: float = 0.05
    concealment: str = "zero"
    frame_ms: float = 20.0
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.rate < 1:
            raise ValueError(f"packet loss rate must be in [0, 1), got {self.rate}")
        if self.concealment not in CONCEALMENTS:
            raise ValueError(
                f"concealment {self.concealment!r} is not one of {', '.join(CONCEALMENTS)}"
            )
        if self.frame_ms <= 0:
            raise ValueError(f"packet loss frame_ms must be positive, got {self.frame_ms}")

    def lost_frames(self, n: int, rate: int) -> np.ndarray:
        """(frames,) bool, True where the frame of ``n`` samples at ``rate`` is lost."""
        size = max(1, round(rate * self.frame_ms / 1000))
        frames = -(-n // size)
        return np.random.default_rng(self.seed).random(frames) < self.rate

    def apply(self, x: np.ndarray, rate: int) -> tuple[np.ndarray, int]:
        if self.rate == 0 or x.size == 0:
            return x, rate
        if self.concealment == "opus":
            return self._opus(x, rate), rate
        size = max(1, round(rate * self.frame_ms / 1000))
        y = x.copy()
        last: np.ndarray | None = None
        for i, lost in enumerate(self.lost_frames(x.size, rate)):
            piece = slice(i * size, min((i + 1) * size, x.size))
            if not lost:
                last = y[piece]
                continue
            if self.concealment == "repeat" and last is not None:
                last = last[: piece.stop - piece.start] * np.float32(0.5)
                y[piece] = np.resize(last, piece.stop - piece.start)
            else:
                y[piece] = 0.0
        return y, rate

    def _opus(self, x: np.ndarray, rate: int) -> np.ndarray:
        line, _ = Resample(TELEPHONE_RATE).apply(x, rate)
        raw = ("--raw", "--raw-rate", str(TELEPHONE_RATE), "--raw-chan", "1")
        encoded = _run(
            ["opusenc", "--quiet", *raw, "--bitrate", "12", "--framesize", "20", "-", "-"],
            _int16(line),
            "packet loss (opus)",
        )
        decoded = _run(
            ["opusdec", "--quiet", "--rate", str(TELEPHONE_RATE), "--packet-loss",
             f"{100 * self.rate:g}", "-", "-"],
            encoded,
            "packet loss (opus)",
        )
        y, _ = Resample(rate).apply(_float(decoded), TELEPHONE_RATE)
        return _fit(y, x.size)


@dataclass(frozen=True)
class Line:
    """One telephone line: its effects, applied in order."""

    effects: tuple[Effect, ...]

    def apply(self, x: np.ndarray, rate: int) -> tuple[np.ndarray, int]:
        """x: (N,) at ``rate`` -> (N',) at the line's rate (the last resampling's)."""
        for effect in self.effects:
            x, rate = effect.apply(x, rate)
        return x, rate

    def describe(self) -> str:
        """A short name, e.g. ``8k bp300-3400 gsm loss5%zero``."""
        parts = []
        for e in self.effects:
            if isinstance(e, Resample):
                parts.append(f"{e.rate // 1000}k")
            elif isinstance(e, BandPass):
                parts.append(f"bp{e.low_hz:.0f}-{e.high_hz:.0f}")
            elif isinstance(e, Gain):
                parts.append(f"{e.db:+.0f}dB")
            elif isinstance(e, Codec):
                parts.append(e.name)
            elif isinstance(e, PacketLoss):
                parts.append(f"loss{100 * e.rate:.0f}%{e.concealment}")
            elif isinstance(e, Clip):
                parts.append(f"clip{100 * e.fraction:.1f}%")
        return " ".join(parts)


def _check_range(name: str, pair: tuple[float, float], low: float, high: float) -> None:
    if len(pair) != 2 or not low <= pair[0] <= pair[1] <= high:
        raise ValueError(f"channel.{name} must be [min, max] within [{low}, {high}], got {pair}")


def _check_probability(name: str, value: float) -> None:
    if not 0 <= value <= 1:
        raise ValueError(f"{name} must be in [0, 1], got {value}")


@dataclass(frozen=True, kw_only=True)
class ChannelConfig:
    """The distribution of telephone lines, drawn per utterance (see :func:`draw_line`).

    With ``probability`` an utterance goes through a line: resampled to ``rate``, band-passed
    between edges drawn from ``low_hz`` and ``high_hz``, its level moved by ``gain_db``, coded by a
    codec drawn from ``codecs`` with ``codec_weights``, with ``packet_loss_probability`` frames
    lost at a rate drawn from ``packet_loss_rate`` (concealed one of the ``concealments`` ways),
    and with ``clip_probability`` clipped (a ``clip_fraction`` of its samples). Ranges are
    ``[min, max]``, drawn uniformly.
    """

    probability: float = 1.0
    rate: int = TELEPHONE_RATE
    low_hz: tuple[float, float] = (250.0, 350.0)
    high_hz: tuple[float, float] = (3200.0, 3500.0)
    gain_db: tuple[float, float] = (-12.0, 6.0)
    codecs: tuple[str, ...] = ("pcm", "mulaw", "alaw", "gsm", "amr-nb", "g722", "g726", "speex",
                               "codec2", "opus")  # fmt: skip
    codec_weights: tuple[float, ...] = (1.0, 3.0, 2.0, 2.0, 2.0, 0.5, 0.5, 0.5, 0.25, 1.0)
    packet_loss_probability: float = 0.15
    packet_loss_rate: tuple[float, float] = (0.01, 0.08)
    concealments: tuple[str, ...] = CONCEALMENTS
    clip_probability: float = 0.1
    clip_fraction: tuple[float, float] = (0.001, 0.02)

    def __post_init__(self) -> None:
        _check_probability("channel.probability", self.probability)
        _check_probability("channel.packet_loss_probability", self.packet_loss_probability)
        _check_probability("channel.clip_probability", self.clip_probability)
        if not 4000 <= self.rate <= 48000:
            raise ValueError(f"channel.rate must be in [4000, 48000] Hz, got {self.rate}")
        _check_range("low_hz", self.low_hz, 0.0, self.rate / 2)
        _check_range("high_hz", self.high_hz, 0.0, self.rate / 2)
        if self.low_hz[1] >= self.high_hz[0]:
            raise ValueError("channel.low_hz must lie below channel.high_hz")
        _check_range("gain_db", self.gain_db, -60.0, 30.0)
        _check_range("packet_loss_rate", self.packet_loss_rate, 0.0, 0.99)
        _check_range("clip_fraction", self.clip_fraction, 0.0, 0.5)
        unknown = [c for c in self.codecs if c not in CODECS]
        if unknown:
            raise ValueError(f"channel.codecs: unknown {unknown[0]!r} (known: {', '.join(CODECS)})")
        if len(self.codec_weights) != len(self.codecs) or not self.codecs:
            raise ValueError("channel.codec_weights must give one weight per codec")
        if any(w < 0 for w in self.codec_weights) or sum(self.codec_weights) <= 0:
            raise ValueError("channel.codec_weights must be >= 0 and not all 0")
        bad = [c for c in self.concealments if c not in CONCEALMENTS]
        if bad or not self.concealments:
            raise ValueError(f"channel.concealments must be some of {', '.join(CONCEALMENTS)}")


def draw_line(cfg: ChannelConfig, rng: random.Random) -> Line | None:
    """One line drawn from ``cfg`` (None: this utterance stays off the telephone)."""
    if rng.random() >= cfg.probability:
        return None
    effects: list[Effect] = [
        Resample(cfg.rate),
        BandPass(rng.uniform(*cfg.low_hz), rng.uniform(*cfg.high_hz)),
        Gain(rng.uniform(*cfg.gain_db)),
        Codec(rng.choices(cfg.codecs, cfg.codec_weights)[0]),
    ]
    if rng.random() < cfg.packet_loss_probability:
        effects.append(
            PacketLoss(
                rng.uniform(*cfg.packet_loss_rate),
                rng.choice(cfg.concealments),
                seed=rng.getrandbits(32),
            )
        )
    if rng.random() < cfg.clip_probability:
        effects.append(Clip(rng.uniform(*cfg.clip_fraction)))
    return Line(tuple(effects))


@functools.cache
def codec_available(name: str) -> bool:
    """Whether this machine can run codec ``name`` (its tool is installed and knows the codec)."""
    spec = CODECS[name]
    if spec is None:
        return True
    if shutil.which(spec.tool) is None:
        return False
    try:
        Codec(name).apply(np.zeros(1600, np.float32), TELEPHONE_RATE)
    except ChannelError:
        return False
    return True


def check_tools(cfg: ChannelConfig) -> None:
    """Raise a one-line :class:`ChannelError` if a line drawn from ``cfg`` could need a tool or
    codec this machine lacks (so that training fails at its start, not per utterance)."""
    missing = [
        c for c, w in zip(cfg.codecs, cfg.codec_weights, strict=True) if w > 0 and not codec_available(c)
    ]
    if missing:
        raise ChannelError(
            f"channel codecs not available here: {', '.join(missing)} (install sox with "
            "libsox-fmt-all and ffmpeg, or give them weight 0 in channel.codec_weights)"
        )
    opus = cfg.packet_loss_probability > 0 and "opus" in cfg.concealments
    if opus and (shutil.which("opusenc") is None or shutil.which("opusdec") is None):
        raise ChannelError(
            "packet loss with opus concealment needs opusenc and opusdec (Debian opus-tools); "
            "install them or drop opus from channel.concealments"
        )

