"""Workers of a test deployment on the embedded broker, each module with its own topics and consumer groups."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from streams.local import LocalWorkers, WorkerProcess


def worker_env(bootstrap: str, **extra: str) -> dict[str, str]:
    """Settings of a fresh deployment: its own app id and topics, event clock, fast publishing and joins."""
    suffix = uuid.uuid4().hex[:8]
    env = {
        "REVPULSE_BROKER": f"kafka://{bootstrap}",
        "REVPULSE_CLOCK": "event",
        "REVPULSE_FX_RATES": '{"EUR": 1.08}',
        "REVPULSE_PUBLISH_INTERVAL": "0.2s",
        "REVPULSE_SESSION_TIMEOUT": "6s",
        "REVPULSE_APP_ID": f"revpulse-test-{suffix}",
    }
    for name in ("CRM", "BILLING", "PRODUCT", "MARKETING", "METRICS", "DEADLETTER"):
        env[f"REVPULSE_TOPIC_{name}"] = f"t{suffix}.{name.lower()}"
    env["REVPULSE_TOPIC_INGEST_RAW"] = f"t{suffix}.raw"
    env["REVPULSE_TOPIC_SALESFORCE_CDC"] = f"t{suffix}.salesforce"
    env.update(extra)
    return env


def deployment(bootstrap: str, root: Path, **extra: str) -> LocalWorkers:
    return LocalWorkers(worker_env(bootstrap, **extra), root)


@pytest.fixture(scope="module")
def worker(broker: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerProcess]:
    workers = deployment(broker, tmp_path_factory.mktemp("worker"))
    try:
        yield workers.start("w1")
    finally:
        workers.stop_all()
