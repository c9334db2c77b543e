"""Config -> model: the one registry of encoders."""

from __future__ import annotations

from echostream.encoders.chunkformer import ChunkFormerConfig, ChunkFormerEncoder
from echostream.models.asr import ASRModel, ASRModelConfig

ENCODERS: dict[type, type] = {ChunkFormerConfig: ChunkFormerEncoder}


def build_encoder(cfg: ChunkFormerConfig) -> ChunkFormerEncoder:
    """The encoder a config describes."""
    encoder_type = ENCODERS.get(type(cfg))
    if encoder_type is None:
        raise ValueError(f"no encoder is registered for {type(cfg).__name__}")
    return encoder_type(cfg)


def build_model(cfg: ASRModelConfig) -> ASRModel:
    """An untrained model shaped as ``cfg`` says."""
    return ASRModel(cfg, build_encoder(cfg.encoder))
