"""``torchaudio.compliance.kaldi.fbank`` on kaldi-native-fbank, for the options chunkformer passes."""

from __future__ import annotations

import kaldi_native_fbank as knf
import numpy as np
import torch


def fbank(
    waveform: torch.Tensor,
    *,
    num_mel_bins: int = 23,
    frame_length: float = 25.0,
    frame_shift: float = 10.0,
    dither: float = 0.0,
    energy_floor: float = 1.0,
    sample_frequency: float = 16000.0,
    **unsupported: object,
) -> torch.Tensor:
    """Kaldi log-mel filterbank of channel 0 of ``waveform`` (C, N), as (T, num_mel_bins) float32.

    Samples are taken as they are (chunkformer passes 16-bit integer-scaled floats); windows
    follow Kaldi's defaults (povey window, snip edges, pre-emphasis 0.97, DC removal).
    """
    if unsupported:
        raise TypeError(f"fbank option(s) {sorted(unsupported)} are not provided by the stub")
    opts = knf.FbankOptions()
    opts.frame_opts.samp_freq = float(sample_frequency)
    opts.frame_opts.frame_length_ms = float(frame_length)
    opts.frame_opts.frame_shift_ms = float(frame_shift)
    opts.frame_opts.dither = float(dither)
    opts.frame_opts.snip_edges = True
    opts.mel_opts.num_bins = int(num_mel_bins)
    opts.energy_floor = float(energy_floor)
    samples = waveform[0].detach().to("cpu", torch.float32).numpy()  # (N,)
    extractor = knf.OnlineFbank(opts)
    extractor.accept_waveform(float(sample_frequency), samples)
    extractor.input_finished()
    frames = [extractor.get_frame(i) for i in range(extractor.num_frames_ready)]
    if not frames:
        return torch.zeros(0, int(num_mel_bins), device=waveform.device)
    return torch.from_numpy(np.stack(frames)).to(waveform.device)  # (T, F)
