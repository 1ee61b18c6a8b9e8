"""What the benchmark runs over a loaded data set: the bare-consumer ceiling, the per-event Faust baseline, and
real `revpulse worker` processes (one deployment = one app id, so its consumer groups start from the earliest
offsets and its internal topics are its own)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from bench.datasets import FX_RATES, PARTITIONS, topics_env
from revpulse.local.broker import free_port
from revpulse.local.processes import LocalWorkers, WorkerProcess, terminate
from revpulse.settings import Settings, Topics
from revpulse.topics import router_group

POLL_SECONDS = 0.05


@dataclass(frozen=True)
class Rate:
    events: int
    seconds: float

    @property
    def eps(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict[str, float]:
        return {"events": self.events, "seconds": round(self.seconds, 3), "events_per_second": round(self.eps)}


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS, VmHWM… of a process from /proc/<pid>/status, in bytes."""
    values: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, rest = line.partition(":")
        if rest.strip().endswith(" kB"):
            values[name] = int(rest.split()[0]) * 1024
    return values


SNAPSHOT_SUFFIXES = (".state", ".pickle")  # the data dir's `shard-N.state` (`shard-N.pickle` before format 2)


def snapshot_files(directory: Path) -> list[Path]:
    """The shards' snapshot files in a worker's data dir (not those being written or encoded)."""
    return sorted(path for path in directory.glob("shard-*") if path.suffix in SNAPSHOT_SUFFIXES)


def wait_for_snapshots(directory: Path, shards: int, interval: float, timeout: float = 600) -> int:
    """Bytes of the shards' snapshot files once each is there, none is being written and none changed over a
    snapshot interval (at least two intervals after the last event: each shard's final state is in it)."""
    time.sleep(2 * interval)
    previous: list[tuple[str, int, int]] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        files = snapshot_files(directory)
        current = [(path.name, path.stat().st_size, path.stat().st_mtime_ns) for path in files]
        if len(files) == shards and not any(directory.glob("*.tmp")) and current == previous:
            return sum(size for _, size, _ in current)
        previous = current
        time.sleep(interval)
    raise TimeoutError(f"snapshots in {directory} not settled within {timeout:.0f}s: {[p.name for p in files]}")


def wait_until(done: Callable[[], bool], what: str, timeout: float, poll: float = POLL_SECONDS) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not done within {timeout:.0f}s")
        time.sleep(poll)


# ------------------------------------------------------------------------------------------------- the ceiling


async def _ceiling(bootstrap: str, topics: Topics, total: int) -> Rate:
    consumer = AIOKafkaConsumer(
        *topics.inputs,
        bootstrap_servers=bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=4 * 1024 * 1024,
    )
    await consumer.start()
    try:
        seen = 0
        started = time.perf_counter()
        while seen < total:
            batches = await consumer.getmany(timeout_ms=500, max_records=10_000)
            for batch in batches.values():
                for record in batch:
                    orjson.loads(record.value)
                seen += len(batch)
        return Rate(seen, time.perf_counter() - started)
    finally:
        await consumer.stop()


def ceiling(bootstrap: str, topics: Topics, total: int) -> Rate:
    """A bare aiokafka consumer (no group): `getmany` + `orjson.loads` of every record, nothing else."""
    return asyncio.run(_ceiling(bootstrap, topics, total))


# ------------------------------------------------------------------------------------------ the Faust baseline


def faust_baseline(broker_url: str, topics: Topics, total: int, root: Path, timeout: float) -> dict[str, Any]:
    """A plain Faust agent decoding one event at a time (bench.faust_baseline), from its first event to its
    last. Stops at `timeout` seconds after the first event: then the rate covers the events decoded so far."""
    port = free_port()
    log = root / "faust-baseline.log"
    env = {
        "BENCH_BROKER": broker_url,
        "BENCH_TOPICS": ",".join(topics.inputs),
        "BENCH_APP_ID": f"bench-faust-{port}",
        "BENCH_WEB_PORT": str(port),
        "BENCH_DATA_DIR": str(root / "faust-baseline-data"),
    }
    with log.open("ab") as handle:
        process = subprocess.Popen(
            [sys.executable, "-m", "bench.faust_baseline"], env=os.environ | env, stdout=handle, stderr=handle
        )
    try:

        def progress() -> dict[str, Any]:
            if process.poll() is not None:
                raise RuntimeError(f"the Faust baseline exited with {process.returncode}: {log}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/progress", timeout=10) as response:
                    return dict(orjson.loads(response.read()))
            except OSError:
                return {"events": 0, "first": None}

        wait_until(lambda: progress()["events"] > 0, "Faust baseline: first event", 120, poll=0.2)
        stop_at = time.monotonic() + timeout
        wait_until(lambda: progress()["events"] >= total or time.monotonic() > stop_at, "Faust baseline", timeout + 60)
        last = progress()
        rate = Rate(last["events"], last["last"] - last["first"])
        return rate.as_dict() | {"complete": last["events"] >= total}
    finally:
        terminate(process)


# ------------------------------------------------------------------------------------------ RevPulse workers


@dataclass
class Deployment:
    """RevPulse workers of one app id over `topics`; `env` adds or overrides settings."""

    bootstrap: str
    topics: Topics
    app_id: str
    root: Path
    env: dict[str, str] = field(default_factory=dict)
    workers: LocalWorkers = field(init=False)

    def __post_init__(self) -> None:
        settings = {
            "REVPULSE_BROKER": f"kafka://{self.bootstrap}",
            "REVPULSE_CLOCK": "event",
            "REVPULSE_FX_RATES": orjson.dumps(FX_RATES).decode(),
            "REVPULSE_SESSION_TIMEOUT": "6s",
            "REVPULSE_APP_ID": self.app_id,
            **topics_env(self.topics),
        }
        root = self.root / self.app_id
        root.mkdir(parents=True, exist_ok=True)
        self.workers = LocalWorkers(settings | self.env, root)

    def start(self, count: int, *, wait: bool) -> list[WorkerProcess]:
        return [self.workers.start(f"w{i + 1}", wait=wait) for i in range(count)]

    def stop(self) -> None:
        self.workers.stop_all()

    @property
    def running(self) -> list[WorkerProcess]:
        return list(self.workers.running.values())

    def events_counted(self) -> int:
        """Σ `/healthz` events over the workers (each counts the shards it owns)."""
        total = 0
        for worker in self.running:
            if worker.process.poll() is not None:
                raise RuntimeError(f"worker {worker.name} exited:\n{worker.tail()}")
            try:
                total += int(orjson.loads(worker.get("/healthz")[1])["events"])
            except (OSError, ValueError, KeyError):
                return 0
        return total

    def wait_counted(self, total: int, timeout: float) -> None:
        wait_until(lambda: self.events_counted() >= total, f"{self.app_id}: {total:,} events counted", timeout)

    def timed_read(self, workers: int, total: int, timeout: float) -> Rate:
        """Start `workers` fresh workers over already loaded topics. The rate: the events after the router
        group's first commit over the time from that commit until the events counted over all workers reach
        `total`."""
        self.start(workers, wait=False)
        first = self.wait_first_commit()
        started = time.perf_counter()
        self.wait_counted(total, timeout)
        return Rate(total - first, time.perf_counter() - started)

    def wait_first_commit(self, timeout: float = 120) -> int:
        """Until the router group committed input offsets (consumption has begun); the records committed then."""
        return asyncio.run(
            _first_commit(
                self.bootstrap, router_group(Settings(app_id=self.app_id)), self.topics, self.running, timeout
            )
        )

    def status(self, key: str) -> list[int]:
        return [proc_status(worker.process.pid)[key] for worker in self.running]

    def settled_api(self, settle: float = 2.5, timeout: float = 60) -> list[dict[str, Any]]:
        """`/api/metrics` of the first worker once two answers `settle` seconds apart are equal (the rollup and
        the publisher have caught up with the counted events)."""
        worker = self.running[0]
        previous = worker.get("/api/metrics")[1]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            time.sleep(settle)
            current = worker.get("/api/metrics")[1]
            if current == previous:
                return list(orjson.loads(current))
            previous = current
        raise TimeoutError(f"{self.app_id}: /api/metrics still changing after {timeout:.0f}s")


async def _first_commit(
    bootstrap: str, group: str, topics: Topics, workers: list[WorkerProcess], timeout: float
) -> int:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await consumer.start()
    partitions = [TopicPartition(topic, p) for topic in topics.inputs for p in range(PARTITIONS)]
    deadline = time.monotonic() + timeout
    try:
        while True:
            committed = sum([await consumer.committed(partition) or 0 for partition in partitions])
            if committed:
                return committed
            for worker in workers:
                if worker.process.poll() is not None:
                    raise RuntimeError(f"worker {worker.name} exited:\n{worker.tail()}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{group}: no commit within {timeout:.0f}s")
            await asyncio.sleep(POLL_SECONDS)
    finally:
        await consumer.stop()


@dataclass
class WorkerRun:
    workers: int
    rate: Rate
    peak_rss_bytes: list[int]
    api: list[dict[str, Any]] | None = None

    def as_dict(self) -> dict[str, Any]:
        return self.rate.as_dict() | {
            "workers": self.workers,
            "peak_rss_mb": [round(b / 2**20, 1) for b in self.peak_rss_bytes],
        }


def timed_run(deployment: Deployment, workers: int, total: int, *, api: bool, timeout: float = 1800) -> WorkerRun:
    """`workers` fresh workers over already loaded topics (`Deployment.timed_read`); then each worker's peak RSS
    (VmHWM) and, with `api`, the settled `/api/metrics`."""
    try:
        rate = deployment.timed_read(workers, total, timeout)
        settled = deployment.settled_api() if api else None
        return WorkerRun(workers, rate, deployment.status("VmHWM"), settled)
    finally:
        deployment.stop()
