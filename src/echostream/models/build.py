"""Config -> model: the one registry of encoders.

An encoder plugs in here: its config class (with its ``TYPE``) and its module class. Nothing
outside ``encoders/<name>.py`` and this table names an encoder.
"""

from __future__ import annotations

from torch import nn

from echostream.encoders.base import EncoderConfig
from echostream.encoders.chunkformer import ChunkFormerConfig, ChunkFormerEncoder
from echostream.encoders.emformer import EmformerConfig, EmformerEncoder
from echostream.encoders.zipformer import ZipformerConfig, ZipformerEncoder
from echostream.models.asr import ASRModel, ASRModelConfig

ENCODERS: dict[str, tuple[type[EncoderConfig], type[nn.Module]]] = {
    ChunkFormerConfig.TYPE: (ChunkFormerConfig, ChunkFormerEncoder),
    EmformerConfig.TYPE: (EmformerConfig, EmformerEncoder),
    ZipformerConfig.TYPE: (ZipformerConfig, ZipformerEncoder),
}


def build_encoder(cfg: EncoderConfig) -> nn.Module:
    """The encoder a config describes."""
    entry = ENCODERS.get(cfg.type)
    if entry is None or not isinstance(cfg, entry[0]):
        raise ValueError(f"no encoder is registered for {type(cfg).__name__} (type {cfg.type!r})")
    return entry[1](cfg)


def build_model(cfg: ASRModelConfig) -> ASRModel:
    """An untrained model shaped as ``cfg`` says."""
    return ASRModel(cfg, build_encoder(cfg.encoder))
