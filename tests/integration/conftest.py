"""Integration fixtures: one embedded Tansu broker per test session, and a worker per module."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from revpulse.local.broker import EmbeddedBroker
from revpulse.local.processes import WorkerProcess
from tests.support.deployment import deployment


@pytest.fixture(scope="session")
def broker() -> Iterator[str]:
    """Bootstrap string ``127.0.0.1:PORT`` of a fresh, memory-only embedded broker (stopped at session end)."""
    with EmbeddedBroker("127.0.0.1") as embedded:
        yield embedded.bootstrap


@pytest.fixture(scope="module")
def worker(broker: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerProcess]:
    workers = deployment(broker, tmp_path_factory.mktemp("worker"))
    try:
        yield workers.start("w1")
    finally:
        workers.stop_all()
