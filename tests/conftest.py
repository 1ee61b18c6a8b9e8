"""Shared fixtures: one embedded Tansu broker per test session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from streams.broker import EmbeddedBroker


@pytest.fixture(scope="session")
def broker() -> Iterator[str]:
    """Bootstrap string ``127.0.0.1:PORT`` of a fresh, memory-only embedded broker (stopped at session end)."""
    with EmbeddedBroker("127.0.0.1") as embedded:
        yield embedded.bootstrap
