"""Fixtures of the server tests: the model's live servers."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from server_helpers import RIGHT_CONTEXT_SETTINGS, SETTINGS, LiveServer, run_server

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
def live_right(fixture_model: echostream.Model) -> Iterator[LiveServer]:
    """A server at 8/16/8: final frames wait for every layer's right context."""
    with run_server(fixture_model, ServerConfig(**RIGHT_CONTEXT_SETTINGS)) as server:
        yield server


@pytest.fixture(params=["right_0", "right_8"])
def served(request: pytest.FixtureRequest) -> tuple[LiveServer, dict[str, int]]:
    """Each of the two live servers with its settings."""
    if request.param == "right_0":
        return request.getfixturevalue("live"), SETTINGS
    return request.getfixturevalue("live_right"), RIGHT_CONTEXT_SETTINGS


@pytest.fixture(scope="session")
def start_server(fixture_model: echostream.Model) -> Callable[..., Any]:
    """``with start_server(max_connections=2) as server:`` a server with other limits."""

    def start(**overrides: Any) -> Any:
        return run_server(fixture_model, ServerConfig(**{**SETTINGS, **overrides}))

    return start
