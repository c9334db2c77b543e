"""Additive noise at a drawn signal-to-noise ratio: coloured noise, babble, music, recordings.

:func:`mix_at_snr` scales a noise so that the speech-to-noise power ratio of the mix is exactly the
one asked for (power over the whole utterance, as ``10 log10(sum s^2 / sum n^2)``).
:class:`NoiseConfig` is the distribution drawn per utterance: a kind (``white``, ``pink``,
``brown``, ``babble`` of several speakers, ``music`` such as hold music, or ``folder``: any
recordings a user points to) and an SNR. :class:`NoiseSource` draws the noise itself; the files of
a folder or manifest are read once and kept.

Shape legend: N samples of a mono float32 waveform.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from echostream.audio import AudioError, load_audio

KINDS = ("white", "pink", "brown", "babble", "music", "folder")
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3", ".opus")


def colored_noise(kind: str, n: int, rng: np.random.Generator) -> np.ndarray:
    """(n,) Gaussian noise with a power spectrum flat (``white``), falling 3 dB per octave
    (``pink``, 1/f) or 6 dB per octave (``brown``, 1/f^2), scaled to unit power.

    >>> x = colored_noise("pink", 16000, np.random.default_rng(0))
    >>> x.shape, round(float(np.mean(x * x)), 6)
    ((16000,), 1.0)
    """
    if kind not in ("white", "pink", "brown"):
        raise ValueError(f"unknown noise colour {kind!r} (white, pink, brown)")
    if n == 0:
        return np.zeros(0, np.float32)
    white = rng.standard_normal(n)
    if kind != "white":
        spectrum = np.fft.rfft(white)  # (n // 2 + 1,)
        f = np.arange(spectrum.size, dtype=np.float64)
        f[0] = f[1] if f.size > 1 else 1.0
        spectrum /= f ** (0.5 if kind == "pink" else 1.0)  # power ~ 1/f or 1/f^2
        white = np.fft.irfft(spectrum, n)
    white -= white.mean()
    power = float(np.mean(white * white))
    return (white / np.sqrt(power if power > 0 else 1.0)).astype(np.float32)


def snr_db(speech: np.ndarray, noise: np.ndarray) -> float:
    """10 log10 of the power ratio of ``speech`` to ``noise`` (each (N,))."""
    return float(10 * np.log10(np.sum(speech.astype(np.float64) ** 2) / np.sum(noise.astype(np.float64) ** 2)))


def mix_at_snr(speech: np.ndarray, noise: np.ndarray, snr: float) -> np.ndarray:
    """speech + noise scaled to ``snr`` dB below it; both (N,). Silent speech gets the noise at
    unit-free level 0.01 (there is no level to be relative to).

    >>> s = np.sin(np.arange(8000, dtype=np.float32))
    >>> n = colored_noise("white", 8000, np.random.default_rng(1))
    >>> round(snr_db(s, mix_at_snr(s, n, 10.0) - s), 3)
    10.0
    """
    if speech.shape != noise.shape:
        raise ValueError(f"speech {speech.shape} and noise {noise.shape} differ in shape")
    noise_power = float(np.mean(noise.astype(np.float64) ** 2))
    if noise_power == 0:
        return speech
    speech_power = float(np.mean(speech.astype(np.float64) ** 2))
    target = speech_power / 10 ** (snr / 10) if speech_power > 0 else 1e-4
    return (speech + noise * np.float32(np.sqrt(target / noise_power))).astype(np.float32)


def _check_range(name: str, pair: tuple[float, float], low: float, high: float) -> None:
    if len(pair) != 2 or not low <= pair[0] <= pair[1] <= high:
        raise ValueError(f"noise.{name} must be [min, max] within [{low}, {high}], got {pair}")


@dataclass(frozen=True, kw_only=True)
class NoiseConfig:
    """Additive noise, drawn per utterance: with ``probability``, a kind from ``kinds`` (weights
    ``kind_weights``) mixed in at an SNR drawn uniformly from ``snr_db`` ([min, max] dB).

    ``babble`` names a manifest (JSONL) or folder of speech; ``babble_speakers`` ([min, max])
    utterances of it are summed at random offsets. ``music`` and ``folder`` name folders of audio
    files (hold music; any noise recordings), searched recursively. A kind whose source is not
    given cannot have a weight above 0.
    """

    probability: float = 1.0
    snr_db: tuple[float, float] = (5.0, 15.0)
    kinds: tuple[str, ...] = ("white", "pink", "brown")
    kind_weights: tuple[float, ...] = (1.0, 1.0, 1.0)
    babble: str | None = None
    babble_speakers: tuple[int, int] = (3, 6)
    music: str | None = None
    folder: str | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.probability <= 1:
            raise ValueError(f"noise.probability must be in [0, 1], got {self.probability}")
        _check_range("snr_db", self.snr_db, -20.0, 80.0)
        if not 1 <= self.babble_speakers[0] <= self.babble_speakers[1] <= 50:
            raise ValueError(f"noise.babble_speakers must be [min, max] in [1, 50], got {self.babble_speakers}")
        unknown = [k for k in self.kinds if k not in KINDS]
        if unknown or not self.kinds:
            raise ValueError(f"noise.kinds: unknown {unknown[:1] or '(none)'} (known: {', '.join(KINDS)})")
        if len(self.kind_weights) != len(self.kinds):
            raise ValueError("noise.kind_weights must give one weight per kind")
        if any(w < 0 for w in self.kind_weights) or sum(self.kind_weights) <= 0:
            raise ValueError("noise.kind_weights must be >= 0 and not all 0")
        for kind, weight in zip(self.kinds, self.kind_weights, strict=True):
            if weight > 0 and kind in ("babble", "music", "folder") and getattr(self, kind) is None:
                raise ValueError(f"noise kind {kind} has weight {weight} but noise.{kind} names no source")


def _audio_files(folder: str) -> list[Path]:
    root = Path(folder)
    if not root.is_dir():
        raise ValueError(f"noise source {folder}: not a folder")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES)
    if not files:
        raise ValueError(f"noise source {folder}: no audio files ({', '.join(AUDIO_SUFFIXES)})")
    return files


def _speech_files(source: str) -> list[Path]:
    if Path(source).is_dir():
        return _audio_files(source)
    from echostream.data.manifest import read_manifest

    try:
        rows = read_manifest(source)
    except (OSError, ValueError) as err:
        raise ValueError(f"noise.babble {source}: {err}") from None
    if not rows:
        raise ValueError(f"noise.babble {source}: no utterances")
    return [Path(r.audio) for r in rows]


class NoiseSource:
    """Draws noises from a :class:`NoiseConfig` at ``rate``; decoded files are cached (up to
    ``cache_files`` of each source, drawn once from the source's list by ``seed``)."""

    def __init__(self, cfg: NoiseConfig, rate: int, *, cache_files: int = 200, seed: int = 0) -> None:
        self.cfg = cfg
        self.rate = rate
        pick = random.Random(seed)
        self.files: dict[str, list[Path]] = {}
        for kind, listing in (("babble", _speech_files), ("music", _audio_files), ("folder", _audio_files)):
            source = getattr(cfg, kind)
            if source is not None:
                found = listing(source)
                self.files[kind] = pick.sample(found, min(cache_files, len(found)))
        self._cache: dict[Path, np.ndarray | None] = {}

    def _read(self, path: Path) -> np.ndarray | None:
        if path not in self._cache:
            try:
                samples = load_audio(path, self.rate)
                self._cache[path] = samples if samples.size and np.any(samples) else None
            except AudioError:
                self._cache[path] = None  # unreadable noise is passed over
        return self._cache[path]

    def _excerpt(self, kind: str, n: int, rng: random.Random) -> np.ndarray | None:
        """(n,) from a random file of ``kind`` (looped if shorter, at a random offset)."""
        for _ in range(5):
            samples = self._read(rng.choice(self.files[kind]))
            if samples is None:
                continue
            start = rng.randrange(samples.size)
            return np.resize(np.roll(samples, -start), n).astype(np.float32)
        return None

    def draw(self, n: int, rng: random.Random) -> tuple[str, np.ndarray] | None:
        """A noise kind and (n,) samples of it (None: nothing readable of the kind drawn)."""
        kind = rng.choices(self.cfg.kinds, self.cfg.kind_weights)[0]
        if kind in ("white", "pink", "brown"):
            return kind, colored_noise(kind, n, np.random.default_rng(rng.getrandbits(63)))
        if kind != "babble":
            noise = self._excerpt(kind, n, rng)
            return None if noise is None else (kind, noise)
        total = np.zeros(n, np.float32)
        for _ in range(rng.randint(*self.cfg.babble_speakers)):
            voice = self._excerpt("babble", n, rng)
            if voice is not None:
                total += voice / np.float32(np.sqrt(np.mean(voice * voice)) + 1e-9)
        return None if not np.any(total) else ("babble", total)

    def apply(self, speech: np.ndarray, rng: random.Random) -> tuple[np.ndarray, str | None]:
        """speech (N,) with a noise drawn from the config mixed in (or as it was), and a short
        description such as ``pink@7.5dB`` (None: no noise)."""
        if rng.random() >= self.cfg.probability or speech.size == 0:
            return speech, None
        drawn = self.draw(speech.size, rng)
        if drawn is None:
            return speech, None
        kind, noise = drawn
        snr = rng.uniform(*self.cfg.snr_db)
        return mix_at_snr(speech, noise, snr), f"{kind}@{snr:.1f}dB"
