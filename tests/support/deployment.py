"""A test deployment on the embedded broker: its own app id, topics and consumer groups, on the event clock."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import orjson

from revpulse.local.processes import LocalWorkers, WorkerProcess
from revpulse.settings import Settings


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


def settings_for(tmp_path: Path, bootstrap: str = "127.0.0.1:9") -> Settings:
    return Settings.from_env(
        {
            "REVPULSE_BROKER": f"kafka://{bootstrap}",
            "REVPULSE_DATA_DIR": str(tmp_path),
            "REVPULSE_APP_ID": f"snapshots-{uuid.uuid4().hex[:8]}",
        }
    )


def replay_events(worker: WorkerProcess, path: Path, events: list[dict[str, Any]], timeout: float = 120) -> None:
    """`revpulse replay` the events, written one per line to `path`, into the worker's topics."""
    path.write_bytes(b"".join(orjson.dumps(event) + b"\n" for event in events))
    subprocess.run(
        [sys.executable, "-m", "revpulse.cli", "replay", str(path)],
        env=os.environ | worker.env,
        capture_output=True,
        timeout=timeout,
        check=True,
    )
