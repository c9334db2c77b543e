"""Fixtures of the server tests: the model's live servers."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from server_helpers import SETTINGS, LiveServer, run_server

import echostream
from echostream.server import ServerConfig


@pytest.fixture(scope="session")
def audio_dir(fixture_dir: Path) -> Path:
    return fixture_dir / "audio"


@pytest.fixture(scope="session")
def live(fixture_model: echostream.Model) -> Iterator[LiveServer]:
    """A server with the default limits and the 8/32/0 streaming settings."""
    with run_server(fixture_model, ServerConfig(**SETTINGS)) as server:
        yield server


@pytest.fixture(scope="session")
def start_server(fixture_model: echostream.Model) -> Callable[..., Any]:
    """``with start_server(max_connections=2) as server:`` a server with other limits."""

    def start(**overrides: Any) -> Any:
        return run_server(fixture_model, ServerConfig(**{**SETTINGS, **overrides}))

    return start
