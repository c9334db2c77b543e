"""Fixtures of the training tests: a tiny corpus cut from the fixture audio, its tokenizer, and
tiny training configs that run a few steps in about a second."""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from echostream.data.manifest import Utterance, write_manifest
from echostream.text.tokenizer import train_tokenizer

AUDIO = (
    Path(__file__).resolve().parents[2].parent
    / "shared"
    / "fixtures"
    / "chunkformer-tiny"
    / "audio"
)

# made-up transcripts: the point is a loss that can fall, not what the audio says
_WHOLE = [
    ("utt0", 3.4384, "Hello there, how are you?", "espeak:en-us"),
    ("utt1", 2.8589, "good morning", "espeak:en-gb+f2"),
    ("utt2", 0.7094, "yes", "flite:slt"),
    ("utt3", 4.2548, "see you later", "flite:kal"),
]
_SEGMENTS = [
    "one two three",
    "four five",
    "six seven eight",
    "nine ten",
    "a bee sea",
    "dog and cat",
]

TINY_MODEL: dict[str, Any] = {
    "encoder": {
        "input_dim": 20, "output_size": 32, "attention_heads": 4, "linear_units": 64, "num_blocks": 2,
        "type": "chunkformer", "cnn_module_kernel": 7, "dropout_rate": 0.1, "positional_dropout_rate": 0.1,
        "attention_dropout_rate": 0.1,
    },
    "decoder": {"attention_heads": 4, "linear_units": 64, "num_blocks": 1, "r_num_blocks": 1},
    "loss": {"ctc_weight": 0.3, "reverse_weight": 0.3},
    "fbank": {"num_mel_bins": 20},
}  # fmt: skip


@dataclass(frozen=True)
class Corpus:
    """Manifests (train: 4 files + 6 segments of long.wav; valid: 3 of them) and a char tokenizer."""

    folder: Path
    train: Path
    valid: Path
    tokenizer: Path
    rows: list[Utterance]


def deep_merge(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``changes`` applied; nested mappings merge, anything else replaces."""
    out = copy.deepcopy(base)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


@pytest.fixture(scope="session")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Corpus:
    if not (AUDIO / "long.wav").is_file():
        pytest.skip(f"fixture audio not found at {AUDIO}")
    folder = tmp_path_factory.mktemp("corpus")
    rows = [
        Utterance(
            id=name, audio=str(AUDIO / f"{name}.wav"), text=text, duration=duration, speaker=speaker
        )
        for name, duration, text, speaker in _WHOLE
    ]
    rows += [
        Utterance(
            id=f"long-{i}",
            audio=str(AUDIO / "long.wav"),
            text=text,
            duration=3.0,
            offset=3.0 * i,
            speaker="mbrola:mb-us1",
        )
        for i, text in enumerate(_SEGMENTS)
    ]
    write_manifest(folder / "train.jsonl", rows)
    write_manifest(folder / "valid.jsonl", [rows[0], rows[2], rows[5]])
    train_tokenizer([r.text for r in rows], folder / "tokenizer", kind="char", vocab_size=None)
    return Corpus(
        folder, folder / "train.jsonl", folder / "valid.jsonl", folder / "tokenizer", rows
    )


def write_config(
    folder: Path, corpus: Corpus, changes: dict[str, Any] | None = None, name: str = "train.yaml"
) -> Path:
    """A config file for a tiny new model (30 steps, validation every 10) with ``changes``
    deep-merged in."""
    cfg: dict[str, Any] = {
        "model": TINY_MODEL,
        "tokenizer": str(corpus.tokenizer),
        "data": {"train": [str(corpus.train)], "valid": [str(corpus.valid)]},
        "sampler": {"max_batch_seconds": 12.0, "max_batch_size": 4, "seed": 1},
        "context": {"chunk_sizes": [4, 8, None], "left_sizes": [4, 8], "right_sizes": [0, 2]},
        "schedule": {"lr": 0.003, "warmup_steps": 5, "decay": "constant"},
        "validation": {"every_steps": 10, "chunk_size": 8, "left_context": 16, "right_context": 4},
        "max_steps": 30,
        "log_every": 1,
    }
    if changes:
        cfg = deep_merge(cfg, changes)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def make_config(corpus: Corpus) -> Callable[..., Path]:
    """``make_config(folder, changes={...}, name="train.yaml")`` -> :func:`write_config`."""

    def write(
        folder: Path, changes: dict[str, Any] | None = None, name: str = "train.yaml"
    ) -> Path:
        return write_config(folder, corpus, changes, name)

    return write
