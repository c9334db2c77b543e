"""A stand-in for torchaudio, just enough to import and run the reference ``chunkformer`` package.

torchaudio from the registry is a CUDA build that will not import next to the CPU torch pinned
here, yet ``chunkformer`` imports it at load time. This stub provides what its inference path
uses: ``torchaudio.compliance.kaldi.fbank`` (computed with kaldi-native-fbank, the front end
echostream itself uses) and an importable ``torchaudio.functional``. Anything else raises a
clear error naming the missing function. Benchmark and parity use only; never installed.
"""

from __future__ import annotations

from torchaudio import compliance, functional

__version__ = "0.0+echostream-stub"
__all__ = ["compliance", "functional"]


def __getattr__(name: str) -> object:
    raise AttributeError(f"torchaudio.{name} is not provided by echostream's benchmark stub")
