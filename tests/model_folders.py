"""Helpers for tests that edit copies of the released-layout fixture model folder."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from echostream.models.checkpoint import CheckpointError

FIXTURE_MODEL = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures" / "chunkformer-tiny" / "model"
"""The released-layout fixture model folder (../shared beside the repository)."""


def copy_model(fixture_dir: Path, tmp_path: Path) -> Path:
    """A writable copy of the fixture's model folder (the fixture itself is read-only)."""
    folder = tmp_path / "model"
    folder.mkdir()
    for item in (fixture_dir / "model").iterdir():
        shutil.copyfile(item, folder / item.name)
    return folder


def edit_config(folder: Path, edit: Callable[[dict[str, Any]], None]) -> None:
    """Apply ``edit`` to the folder's config.yaml."""
    path = folder / "config.yaml"
    conf = yaml.safe_load(path.read_text(encoding="utf-8"))
    edit(conf)
    path.write_text(yaml.safe_dump(conf, sort_keys=False), encoding="utf-8")


def checkpoint_error(call: Callable[[], object]) -> str:
    """The message of the CheckpointError ``call`` raises; it must be one line."""
    with pytest.raises(CheckpointError) as info:
        call()
    message = str(info.value)
    assert "\n" not in message, message
    return message
