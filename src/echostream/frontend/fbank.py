"""Kaldi log-mel filterbank features, offline and streaming with explicit state.

Shape legend:
    N  samples of a mono float waveform in [-1, 1] at ``FbankConfig.sample_rate``
    T  feature frames; frame ``i`` covers samples ``[i * shift, i * shift + window)``
       (Kaldi ``snip_edges``: a frame exists only when its whole window does)
    F  mel bins (``FbankConfig.num_mel_bins``)

Like the reference ChunkFormer (which hands int16 values, as floats, to a Kaldi fbank), the
waveform is scaled to the 16-bit integer range, ``x * 32768``, before the filterbank; the features
therefore match models trained on that scale.

With ``dither == 0`` a Kaldi frame depends only on the samples of its own window (DC removal and
pre-emphasis are applied per window), so :func:`fbank_step` over any split of a signal gives exactly
the frames of :func:`compute_fbank` on the whole signal.
"""

from __future__ import annotations

from dataclasses import dataclass

import kaldi_native_fbank as knf
import numpy as np

from echostream.audio import SAMPLE_RATE, ms_to_samples, num_frames

INT16_SCALE = 32768.0
"""Factor taking float samples in [-1, 1] to the 16-bit integer range the features expect."""


@dataclass(frozen=True, kw_only=True)
class FbankConfig:
    """Options of the log-mel filterbank; everything not listed keeps Kaldi's default
    (povey window, pre-emphasis 0.97, DC removal, no energy coefficient, snip_edges)."""

    num_mel_bins: int = 80
    frame_length_ms: float = 25.0
    frame_shift_ms: float = 10.0
    dither: float = 0.0  # > 0 makes features random and breaks streaming == offline
    energy_floor: float = 0.0
    sample_rate: int = SAMPLE_RATE

    def __post_init__(self) -> None:
        for name in ("num_mel_bins", "sample_rate"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"FbankConfig.{name} must be a positive int, got {value!r}")
        for name in ("frame_length_ms", "frame_shift_ms"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ValueError(f"FbankConfig.{name} must be a positive number, got {value!r}")
        for name in ("dither", "energy_floor"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
                raise ValueError(f"FbankConfig.{name} must be a number >= 0, got {value!r}")
        if self.window_size < 1 or self.window_shift < 1:
            raise ValueError(
                f"FbankConfig.frame_length_ms/frame_shift_ms give windows of "
                f"{self.window_size}/{self.window_shift} samples at {self.sample_rate} Hz; "
                "both must be at least one sample"
            )
        if self.window_shift > self.window_size:
            raise ValueError(
                f"FbankConfig.frame_shift_ms ({self.frame_shift_ms}) must not exceed "
                f"frame_length_ms ({self.frame_length_ms})"
            )

    @property
    def window_size(self) -> int:
        """Samples in one analysis window (400 at the defaults)."""
        return ms_to_samples(self.frame_length_ms, self.sample_rate)

    @property
    def window_shift(self) -> int:
        """Samples between the starts of consecutive frames (160 at the defaults)."""
        return ms_to_samples(self.frame_shift_ms, self.sample_rate)


def _knf_options(cfg: FbankConfig) -> knf.FbankOptions:
    opts = knf.FbankOptions()
    opts.frame_opts.samp_freq = float(cfg.sample_rate)
    opts.frame_opts.frame_length_ms = float(cfg.frame_length_ms)
    opts.frame_opts.frame_shift_ms = float(cfg.frame_shift_ms)
    opts.frame_opts.dither = float(cfg.dither)  # knf's own default is 3e-5, not 0
    opts.frame_opts.snip_edges = True
    opts.mel_opts.num_bins = cfg.num_mel_bins
    opts.energy_floor = float(cfg.energy_floor)
    return opts


def compute_fbank(samples: np.ndarray, cfg: FbankConfig) -> np.ndarray:
    """Log-mel filterbank of a whole waveform.

    Args:
        samples: (N,) float waveform in [-1, 1] at ``cfg.sample_rate``.
        cfg: filterbank options.

    Returns:
        (T, F) float32 with ``T = 1 + (N - window) // shift`` (0 when ``N < window``).
    """
    samples = np.asarray(samples)
    if samples.ndim != 1 or not np.issubdtype(samples.dtype, np.floating):
        raise ValueError(
            f"samples must be a 1-D float waveform, got shape {samples.shape} of {samples.dtype}"
        )
    expected = num_frames(samples.size, cfg.window_size, cfg.window_shift)
    if expected == 0:
        return np.zeros((0, cfg.num_mel_bins), dtype=np.float32)
    scaled = samples.astype(np.float32) * np.float32(INT16_SCALE)  # (N,) exact: power of two
    extractor = knf.OnlineFbank(_knf_options(cfg))
    extractor.accept_waveform(float(cfg.sample_rate), scaled)
    extractor.input_finished()
    count = extractor.num_frames_ready
    if count != expected:  # our frame arithmetic must be Kaldi's, or streaming would drift
        raise RuntimeError(f"kaldi_native_fbank gave {count} frames where {expected} were expected")
    # knf 1.22.5 has no bulk accessor; get_frame returns a fresh (F,) float32 array per frame.
    return np.stack([extractor.get_frame(i) for i in range(count)])  # (T, F)


@dataclass(frozen=True, kw_only=True)
class FbankState:
    """What a streaming fbank carries between calls; never modified, only replaced."""

    pending: (
        np.ndarray
    )  # (P,) float32 samples not yet covered by an emitted frame, P < window + shift
    frames_emitted: int  # frames produced so far; the next frame starts at sample shift * this


def init_fbank_state() -> FbankState:
    """The state before the first sample."""
    return FbankState(pending=np.zeros(0, dtype=np.float32), frames_emitted=0)


def fbank_step(
    samples_chunk: np.ndarray, state: FbankState, cfg: FbankConfig
) -> tuple[np.ndarray, FbankState]:
    """Feed the next piece of a waveform; get every frame whose window is now complete.

    Args:
        samples_chunk: (N,) float waveform in [-1, 1], the samples following those already fed
            (any length, including 0).
        state: from :func:`init_fbank_state` or the previous call; left untouched.
        cfg: filterbank options, the same for every call of one stream.

    Returns:
        frames: (T_new, F) float32, the next frames of :func:`compute_fbank` of the whole signal.
        state: the new state; its ``pending`` starts at sample ``shift * T_new`` of
            ``state.pending ++ samples_chunk``.

    There is no flush: trailing samples that never fill a window give no frame, as offline.
    """
    samples_chunk = np.asarray(samples_chunk)
    if samples_chunk.ndim != 1 or not np.issubdtype(samples_chunk.dtype, np.floating):
        raise ValueError(
            "samples_chunk must be a 1-D float waveform, "
            f"got shape {samples_chunk.shape} of {samples_chunk.dtype}"
        )
    available = np.concatenate([state.pending, samples_chunk.astype(np.float32)])  # (P + N,)
    new_frames = num_frames(available.size, cfg.window_size, cfg.window_shift)
    if new_frames == 0:
        return (
            np.zeros((0, cfg.num_mel_bins), dtype=np.float32),
            FbankState(pending=available, frames_emitted=state.frames_emitted),
        )
    used = cfg.window_size + cfg.window_shift * (new_frames - 1)
    frames = compute_fbank(available[:used], cfg)  # (T_new, F)
    pending = available[cfg.window_shift * new_frames :].copy()  # (P',) drop the parent buffer
    return frames, FbankState(pending=pending, frames_emitted=state.frames_emitted + new_frames)
