"""Shared fixtures: the reference fixture folder, its loaded model, and tiny random models.

Tests that measure a numerical agreement record it with ``record_property("max_abs_diff", value)``;
the values are listed at the end of the run (``max |diff| seen``) so that drift shows before it
crosses a tolerance.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

import echostream
from echostream.encoders.chunkformer import ChunkFormerConfig, ChunkFormerEncoder
from echostream.frontend import FbankConfig
from echostream.models.asr import ASRModelConfig
from echostream.models.build import build_model
from echostream.models.checkpoint import ModelBundle
from echostream.text.vocab import Vocabulary

REPO_DIR = Path(__file__).resolve().parents[1]
SHARED_DIR = REPO_DIR.parent / "shared"
FIXTURE_DIR = SHARED_DIR / "fixtures" / "chunkformer-tiny"

# A ChunkFormer small enough to run hundreds of streaming calls in a second; no dropout.
TINY_ENCODER = {
    "input_dim": 20,
    "output_size": 32,
    "attention_heads": 4,
    "linear_units": 64,
    "num_blocks": 2,
    "cnn_module_kernel": 7,
    "dropout_rate": 0.0,
    "positional_dropout_rate": 0.0,
    "attention_dropout_rate": 0.0,
}
TINY_VOCAB = ("<blank>", "<unk>", "\u2581a", "b", "\u2581c", "d", "e", "<sos/eos>")


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The ``shared`` directory next to the repository (fixtures, data)."""
    return SHARED_DIR


@pytest.fixture(scope="session")
def fixture_dir() -> Path:
    """The chunkformer-tiny reference fixture (model/, audio/, expected.npz, expected.json)."""
    if not (FIXTURE_DIR / "model" / "config.yaml").is_file():
        pytest.skip(f"reference fixture not found at {FIXTURE_DIR}")
    return FIXTURE_DIR


@pytest.fixture(scope="session")
def fixture_model(fixture_dir: Path) -> echostream.Model:
    """The fixture's released-layout model, loaded once. Tests must not modify it."""
    return echostream.load_model(fixture_dir / "model")


@pytest.fixture(scope="session")
def default_model() -> echostream.Model:
    """The bundled default model, loaded once. Tests must not modify it."""
    return echostream.load_model("default")


def tiny_encoder_config(**overrides: Any) -> ChunkFormerConfig:
    """The tiny encoder shape, with some fields changed."""
    return ChunkFormerConfig(**{**TINY_ENCODER, **overrides})


@pytest.fixture
def make_tiny_encoder() -> Callable[..., ChunkFormerEncoder]:
    """``make_tiny_encoder(seed=0, **config_overrides)`` -> a random ChunkFormer in eval mode."""

    def build(seed: int = 0, **overrides: Any) -> ChunkFormerEncoder:
        torch.manual_seed(seed)
        return ChunkFormerEncoder(tiny_encoder_config(**overrides)).eval()

    return build


@pytest.fixture
def make_tiny_bundle() -> Callable[..., ModelBundle]:
    """``make_tiny_bundle(seed=0, **encoder_overrides)`` -> a random model + vocab + 20-bin fbank."""

    def build(seed: int = 0, **overrides: Any) -> ModelBundle:
        torch.manual_seed(seed)
        cfg = ASRModelConfig(encoder=tiny_encoder_config(**overrides), vocab_size=len(TINY_VOCAB))
        model = build_model(cfg).eval()
        with torch.no_grad():  # a non-trivial CMVN, so that losing it would show
            model.cmvn.mean.uniform_(-1.0, 1.0)
            model.cmvn.istd.uniform_(0.5, 2.0)
        fbank = FbankConfig(num_mel_bins=cfg.encoder.input_dim)
        return ModelBundle(model=model, vocab=Vocabulary(TINY_VOCAB), fbank=fbank)

    return build


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """In CI (``CI=true``) a test skipped because ``../shared`` data is missing fails instead:
    CI always has the shared fixtures, so their absence is a broken checkout, not a reason."""
    outcome = yield
    report = outcome.get_result()
    if os.environ.get("CI", "").lower() != "true" or not report.skipped:
        return
    reason = str(report.longrepr[2]) if isinstance(report.longrepr, tuple) else str(report.longrepr)
    if str(SHARED_DIR) in reason or "/shared/" in reason or "fixture" in reason:
        report.outcome = "failed"
        report.longrepr = f"CI=true and the shared data is missing: {reason}"


def pytest_terminal_summary(terminalreporter: Any) -> None:
    rows = [
        (report.nodeid, value)
        for report in terminalreporter.stats.get("passed", [])
        if report.when == "call"
        for name, value in report.user_properties
        if name == "max_abs_diff"
    ]
    if rows:
        terminalreporter.section("max |diff| seen")
        width = max(len(nodeid) for nodeid, _ in rows)
        for nodeid, value in rows:
            terminalreporter.write_line(f"{nodeid:<{width}}  {value:.3g}")


@pytest.fixture(scope="session")
def exported_default(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundled default model exported to ONNX at the default contexts (long-form, streaming)."""
    pytest.importorskip("onnxruntime", reason="the 'onnx' extra (onnx, onnxruntime) is not installed")
    from echostream.export.onnx import export_onnx
    from echostream.model import bundled_models
    from echostream.models.checkpoint import load_checkpoint

    bundle = load_checkpoint(bundled_models()["default"] / "model.pt")
    return export_onnx(bundle, tmp_path_factory.mktemp("onnx_default") / "export")
