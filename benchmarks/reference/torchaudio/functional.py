"""``torchaudio.functional``: importable, with nothing in it (chunkformer imports it at load time
for forced alignment and the RNN-T loss, neither of which CTC decoding uses)."""


def __getattr__(name: str) -> object:
    raise AttributeError(f"torchaudio.functional.{name} is not provided by echostream's benchmark stub")
