"""echostream: streaming and long-form speech recognition with swappable streaming encoders.

>>> import echostream
>>> model = echostream.load_model("path/to/model_dir")                       # doctest: +SKIP
>>> result = model.transcribe("call.wav", chunk_size=64, left_context=128, right_context=128)[0]  # doctest: +SKIP
"""

from echostream.audio import AudioError
from echostream.encoders.base import ChunkContext, EncoderConfig, EncoderState
from echostream.encoders.chunkformer import ChunkFormerConfig
from echostream.frontend.fbank import FbankConfig
from echostream.model import Model, TranscribeOptions, load_model
from echostream.models.asr import ASRModelConfig
from echostream.models.checkpoint import CheckpointError
from echostream.streaming.recognizer import EndpointConfig, Recognizer, Stream, StreamResult
from echostream.transcript import Segment, Token, Transcript

__all__ = [
    "ASRModelConfig",
    "AudioError",
    "CheckpointError",
    "ChunkContext",
    "ChunkFormerConfig",
    "EncoderConfig",
    "EncoderState",
    "EndpointConfig",
    "FbankConfig",
    "Model",
    "Recognizer",
    "Segment",
    "Stream",
    "StreamResult",
    "Token",
    "TranscribeOptions",
    "Transcript",
    "load_model",
]
