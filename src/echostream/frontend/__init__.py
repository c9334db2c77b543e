"""Waveform -> features."""

from echostream.frontend.fbank import (
    INT16_SCALE,
    FbankConfig,
    FbankState,
    compute_fbank,
    fbank_step,
    init_fbank_state,
)

__all__ = [
    "INT16_SCALE",
    "FbankConfig",
    "FbankState",
    "compute_fbank",
    "fbank_step",
    "init_fbank_state",
]
