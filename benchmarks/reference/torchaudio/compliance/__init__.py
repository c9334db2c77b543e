"""``torchaudio.compliance``: only ``kaldi.fbank`` (see the stub's package docstring)."""

from torchaudio.compliance import kaldi

__all__ = ["kaldi"]
