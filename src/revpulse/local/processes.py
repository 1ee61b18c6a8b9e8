"""Worker processes on this machine, for tests, benchmarks and trying things out: start, wait, kill, ask."""

from __future__ import annotations

import os
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from revpulse.local.broker import free_port
from revpulse.settings import Settings


@dataclass
class WorkerProcess:
    name: str
    process: subprocess.Popen[bytes]
    settings: Settings
    env: dict[str, str]
    log: Path
    # What a client trusts when the web port serves TLS (REVPULSE_WEB_CERTFILE); None: the system's CAs.
    client_ssl: ssl.SSLContext | None = None

    @property
    def base_url(self) -> str:
        scheme = "https" if self.settings.web.tls else "http"
        return f"{scheme}://127.0.0.1:{self.settings.web_port}"

    def get(self, path: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        """Status and body of a GET on the worker's web port."""
        request = urllib.request.Request(self.base_url + path, headers=headers or {})
        try:
            with urllib.request.urlopen(request, timeout=10, context=self.client_ssl) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as error:
            return error.code, error.read()

    def wait_ready(self, timeout: float = 90) -> float:
        """Seconds until `/readyz` answered 200; fails early, with the log's tail, if the process died."""
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            if self.process.poll() is not None:
                raise RuntimeError(f"worker {self.name} exited with {self.process.returncode}:\n{self.tail()}")
            try:
                if self.get("/readyz")[0] == 200:
                    return time.monotonic() - started
            except OSError:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"worker {self.name} not ready within {timeout}s:\n{self.tail()}")

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""


@dataclass
class LocalWorkers:
    """Workers of one deployment: they share `env` (broker, app id, topics); each gets a port and a data dir."""

    env: dict[str, str]
    root: Path
    running: dict[str, WorkerProcess] = field(default_factory=dict)

    def data_dir(self, name: str) -> Path:
        return self.root / f"data-{name}"

    def start(self, name: str, *, wait: bool = True, client_ssl: ssl.SSLContext | None = None) -> WorkerProcess:
        env = self.env | {"REVPULSE_WEB_PORT": str(free_port()), "REVPULSE_DATA_DIR": str(self.data_dir(name))}
        log = self.root / f"{name}.log"
        with log.open("ab") as handle:
            process = subprocess.Popen(
                [sys.executable, "-m", "revpulse.cli", "worker"],
                env=os.environ | env,
                stdout=handle,
                stderr=subprocess.STDOUT,
            )
        worker = self.running[name] = WorkerProcess(name, process, Settings.from_env(env), env, log, client_ssl)
        if wait:
            worker.wait_ready()
        return worker

    def kill(self, name: str) -> None:
        """SIGKILL: no goodbye to the group, no last snapshot."""
        worker = self.running.pop(name)
        worker.process.send_signal(signal.SIGKILL)
        worker.process.wait()

    def stop(self, name: str) -> None:
        terminate(self.running.pop(name).process)

    def stop_all(self) -> None:
        for name in list(self.running):
            self.stop(name)


def terminate(process: subprocess.Popen[bytes], grace: float = 15) -> None:
    """SIGTERM, then SIGKILL if the process has not exited within `grace` seconds."""
    process.terminate()
    try:
        process.wait(grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
