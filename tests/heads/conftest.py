"""Fixtures of the head tests: tiny random ASR models with an attention decoder."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import pytest
import torch

from echostream.heads.attention_decoder import AttentionDecoderConfig
from echostream.heads.losses import LossConfig
from echostream.models.asr import ASRModel
from echostream.models.build import build_model
from echostream.models.checkpoint import ModelBundle

# a decoder as small as the tiny encoder (d=32); no dropout, so outputs are deterministic
TINY_DECODER: dict[str, Any] = {
    "attention_heads": 4,
    "linear_units": 64,
    "num_blocks": 2,
    "dropout_rate": 0.0,
    "positional_dropout_rate": 0.0,
    "self_attention_dropout_rate": 0.0,
    "src_attention_dropout_rate": 0.0,
}


@pytest.fixture
def make_tiny_asr(make_tiny_bundle: Callable[..., ModelBundle]) -> Callable[..., ASRModel]:
    """``make_tiny_asr(seed=0, bidirectional=True, loss=LossConfig(...), **encoder_overrides)``
    -> a random encoder + CTC + attention decoder (r_num_blocks 1 when bidirectional), eval mode."""

    def build(
        seed: int = 0,
        *,
        bidirectional: bool = True,
        loss: LossConfig | None = None,
        **overrides: Any,
    ) -> ASRModel:
        base = make_tiny_bundle(seed, **overrides).model.cfg
        decoder = AttentionDecoderConfig(
            bidirectional=bidirectional, r_num_blocks=1 if bidirectional else 0, **TINY_DECODER
        )
        loss = loss or LossConfig(ctc_weight=0.3, reverse_weight=0.3 if bidirectional else 0.0)
        cfg = dataclasses.replace(base, decoder=decoder, loss=loss)
        torch.manual_seed(seed)
        return build_model(cfg).eval()

    return build
