"""A real worker process on the embedded broker, with its own topics and consumer group per test module."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from streams.broker import free_port
from streams.settings import Settings


@dataclass
class RunningWorker:
    settings: Settings
    env: dict[str, str]
    base_url: str
    log: Path

    def get(self, path: str) -> tuple[int, bytes]:
        """Status and body of a GET on the worker's web port."""
        try:
            with urllib.request.urlopen(self.base_url + path, timeout=10) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as error:
            return error.code, error.read()


def worker_env(bootstrap: str, data_dir: Path, **extra: str) -> dict[str, str]:
    suffix = uuid.uuid4().hex[:8]
    env = {
        "REVPULSE_BROKER": f"kafka://{bootstrap}",
        "REVPULSE_WEB_PORT": str(free_port()),
        "REVPULSE_CLOCK": "event",
        "REVPULSE_FX_RATES": '{"EUR": 1.08}',
        "REVPULSE_DATA_DIR": str(data_dir),
        "REVPULSE_PUBLISH_INTERVAL": "0.2s",
        "REVPULSE_SESSION_TIMEOUT": "6s",
        "REVPULSE_APP_ID": f"revpulse-test-{suffix}",
    }
    for name in ("CRM", "BILLING", "PRODUCT", "MARKETING", "METRICS", "DEADLETTER"):
        env[f"REVPULSE_TOPIC_{name}"] = f"t{suffix}.{name.lower()}"
    env.update(extra)
    return env


def start_worker(
    env: dict[str, str], log: Path, *, ready_within: float = 60
) -> tuple[subprocess.Popen[bytes], RunningWorker]:
    settings = Settings.from_env(env)
    handle = log.open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "streams.cli", "worker"],
        env=os.environ | env,
        stdout=handle,
        stderr=subprocess.STDOUT,
    )
    worker = RunningWorker(settings, env, f"http://127.0.0.1:{settings.web_port}", log)
    deadline = time.monotonic() + ready_within
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"worker exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if worker.get("/readyz")[0] == 200:
                return process, worker
        except OSError:
            pass
        time.sleep(0.3)
    process.kill()
    raise TimeoutError(f"worker not ready within {ready_within}s:\n{log.read_text()[-3000:]}")


def stop_worker(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@pytest.fixture(scope="module")
def worker(broker: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningWorker]:
    workdir = tmp_path_factory.mktemp("worker")
    process, running = start_worker(worker_env(broker, workdir / "data"), workdir / "worker.log")
    try:
        yield running
    finally:
        stop_worker(process)
