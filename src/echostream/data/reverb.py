"""Room reverberation: impulse responses of shoebox rooms with a drawn RT60 (``pyroomacoustics``).

:func:`room_impulse_response` builds a room whose Sabine RT60 is the one asked for: its shape and
wall absorption are drawn, its size is solved from them (a short RT60 needs a small, absorbent
room: a booth or a car), and the image-source method computes the response between a talker and a
microphone placed at random inside it. :class:`Reverb` draws RT60s from a :class:`ReverbConfig`;
computing a room costs tens of milliseconds, so it keeps a bank of ``bank_size`` responses,
computed once, and draws from the bank per utterance.

Shape legend: N samples of a mono float32 waveform, K taps of an impulse response.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np

from echostream.extras import require

SABINE = 0.161
"""Sabine's constant (s/m): RT60 = SABINE * V / (S * absorption)."""


@dataclass(frozen=True, kw_only=True)
class ReverbConfig:
    """Reverberation drawn per utterance: with ``probability``, the response of a room whose RT60
    is drawn uniformly from ``rt60`` ([min, max] seconds; light office or car reverb by default),
    out of a bank of ``bank_size`` rooms computed once."""

    probability: float = 1.0
    rt60: tuple[float, float] = (0.05, 0.15)
    bank_size: int = 64

    def __post_init__(self) -> None:
        if not 0 <= self.probability <= 1:
            raise ValueError(f"reverb.probability must be in [0, 1], got {self.probability}")
        if len(self.rt60) != 2 or not 0.02 <= self.rt60[0] <= self.rt60[1] <= 2.0:
            raise ValueError(f"reverb.rt60 must be [min, max] within [0.02, 2.0] s, got {self.rt60}")
        if not 1 <= self.bank_size <= 10000:
            raise ValueError(f"reverb.bank_size must be in [1, 10000], got {self.bank_size}")


def _pyroomacoustics():  # type: ignore[no-untyped-def]
    require("augment", "reverberation")
    import pyroomacoustics

    return pyroomacoustics


def _shoebox_response(
    dims: np.ndarray, absorption: float, rate: int, talker: np.ndarray, microphone: np.ndarray
) -> np.ndarray:
    """(K,) image-source response of a shoebox room ``dims`` (m) with uniform ``absorption``;
    ``talker`` and ``microphone`` are positions relative to ``dims`` (in (0, 1))."""
    pra = _pyroomacoustics()
    sabine_rt60 = SABINE * np.prod(dims) / (2 * absorption * (dims[0] * dims[1] + dims[0] * dims[2] + dims[1] * dims[2]))
    _, max_order = pra.inverse_sabine(float(sabine_rt60), dims.tolist())
    room = pra.ShoeBox(dims.tolist(), fs=rate, materials=pra.Material(absorption), max_order=max_order)
    room.add_source((talker * dims).tolist())
    room.add_microphone((microphone * dims).tolist())
    room.compute_rir()
    rir = np.asarray(room.rir[0][0], np.float64)
    peak = int(np.argmax(np.abs(rir)))
    return (rir[max(0, peak - 40) :] / np.abs(rir[peak])).astype(np.float32)  # from the direct path


def room_impulse_response(rt60: float, rate: int, rng: random.Random) -> np.ndarray:
    """(K,) impulse response, peak-normalised to 1 at the direct path, whose measured RT60
    (:func:`measure_rt60`) is within 5 % of ``rt60`` seconds where a room can give it.

    The room's shape, wall absorption, talker and microphone are drawn from ``rng``; its size starts
    from Sabine's formula and is corrected from the measured decay (small rooms decay less
    exponentially than Sabine assumes, so their RT60 comes out longer), up to 6 times in each of up
    to 4 rooms.
    """
    best: tuple[float, np.ndarray] | None = None
    for _ in range(4):  # rooms drawn until one gives the RT60
        absorption = rng.uniform(0.4, 0.7)
        ratios = np.array([1.0, rng.uniform(0.6, 1.0), rng.uniform(0.5, 0.8)])  # length, width, height
        talker = np.array([rng.uniform(0.15, 0.85) for _ in range(3)])
        microphone = np.array([rng.uniform(0.15, 0.85) for _ in range(3)])
        shape = np.prod(ratios) / (2 * (ratios[0] * ratios[1] + ratios[0] * ratios[2] + ratios[1] * ratios[2]))
        size = rt60 * absorption / SABINE / shape  # V/S grows linearly with the room's size
        for _ in range(6):
            rir = _shoebox_response(ratios * size, absorption, rate, talker, microphone)
            measured = measure_rt60(rir, rate)
            error = abs(measured - rt60) / rt60 if np.isfinite(measured) else np.inf
            if best is None or error < best[0]:
                best = (error, rir)
            if error <= 0.05 or not np.isfinite(measured) or measured <= 0:
                break
            size *= (rt60 / measured) ** 1.5  # the decay reacts less than linearly in small rooms
        if best is not None and best[0] <= 0.05:
            break
    assert best is not None
    return best[1]


def measure_rt60(rir: np.ndarray, rate: int) -> float:
    """RT60 (s) of an impulse response by Schroeder backward integration (the -5 to -25 dB decay,
    extrapolated to 60 dB; pyroomacoustics' measurement)."""
    pra = _pyroomacoustics()
    return float(pra.experimental.measure_rt60(rir, fs=rate, decay_db=20))


def reverberate(x: np.ndarray, rir: np.ndarray) -> np.ndarray:
    """x (N,) convolved with ``rir`` (K,), cut to N samples (the direct path stays in place) and
    scaled to the input's power."""
    from scipy import signal

    if x.size == 0:
        return x
    y = signal.fftconvolve(x, rir)[: x.size]
    power_in = float(np.mean(x.astype(np.float64) ** 2))
    power_out = float(np.mean(y * y))
    if power_out > 0:
        y *= np.sqrt(power_in / power_out)
    return y.astype(np.float32)


class Reverb:
    """Reverberation drawn from a :class:`ReverbConfig` at ``rate``; the bank of rooms is computed
    on first use from ``seed``."""

    def __init__(self, cfg: ReverbConfig, rate: int, *, seed: int = 0) -> None:
        _pyroomacoustics()  # fail at once, not on the first utterance
        self.cfg = cfg
        self.rate = rate
        self.seed = seed
        self._bank: list[tuple[float, np.ndarray]] | None = None

    @property
    def bank(self) -> list[tuple[float, np.ndarray]]:
        """The (RT60, impulse response) pairs drawn from."""
        if self._bank is None:
            rng = random.Random(f"reverb:{self.seed}")
            self._bank = []
            for _ in range(self.cfg.bank_size):
                rt60 = rng.uniform(*self.cfg.rt60)
                self._bank.append((rt60, room_impulse_response(rt60, self.rate, rng)))
        return self._bank

    def apply(self, x: np.ndarray, rng: random.Random) -> tuple[np.ndarray, str | None]:
        """x (N,) through a room of the bank (or as it was), and a description such as
        ``rt60=0.12s`` (None: no reverb)."""
        if rng.random() >= self.cfg.probability or x.size == 0:
            return x, None
        rt60, rir = rng.choice(self.bank)
        return reverberate(x, rir), f"rt60={rt60:.2f}s"
