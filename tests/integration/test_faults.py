"""Faults survived, on the real embedded broker: each test ends with every series of every live worker equal to
an uninterrupted single-process run of the same 50k-event log, the metric topic's final records equal to
`/api/metrics`, `revpulse_events_total` (summed over workers) accounting for every event, and every bad record
on the dead-letter topic exactly once."""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from agents.base import read_topic
from streams.broker import EmbeddedBroker, free_port
from streams.pipeline import Pipeline
from streams.replay import route_line
from streams.settings import Settings, Topics
from streams.shards import InputRecord
from streams.synth import SynthConfig, bad_record_cases, generate
from tests.integration.conftest import RunningWorker, worker_env

pytestmark = pytest.mark.integration

EVENTS = 50_000


@dataclass(frozen=True)
class Log:
    records: list[tuple[str, bytes | None, bytes]]  # (topic, key, value) in production order
    expected: dict[str, Any]  # series key -> value, from one uninterrupted in-process run
    events: int  # outcomes the run counted
    dead_letters: int


@pytest.fixture(scope="module")
def fault_log() -> Log:
    topics = Topics()
    lines = [orjson.dumps(event) for _, event in generate(SynthConfig(accounts=800, days=60), events=EVENTS)]
    records: list[tuple[str, bytes | None, bytes]] = [
        (record.topic, record.key, record.value) for line in lines for record in route_line(line, topics)
    ]
    for i, (topic, value, _) in enumerate(bad_record_cases()):
        records.insert(len(records) * (i + 1) // 20, (topic, None, value))
    pipeline = Pipeline(Settings(clock="event", fx_rates={"EUR": 1.08}))
    dead = pipeline.process(InputRecord(topic, 0, i, value, 0.0) for i, (topic, _, value) in enumerate(records))
    expected = {s.key: s.value for s in pipeline.refresh()}
    return Log(records, expected, sum(pipeline.outcomes().values()), len(dead))


@dataclass
class Cluster:
    """Workers of one deployment (same app id and topics) on a broker of their own."""

    broker: EmbeddedBroker
    root: Path
    env: dict[str, str]
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    workers: dict[str, RunningWorker] = field(default_factory=dict)

    @property
    def topics(self) -> Topics:
        return Settings.from_env(self.env).topics

    def start(self, name: str, *, wait: bool = True) -> None:
        env = self.env | {"REVPULSE_WEB_PORT": str(free_port()), "REVPULSE_DATA_DIR": str(self.data_dir(name))}
        log = (self.root / f"{name}.log").open("ab")
        self.processes[name] = subprocess.Popen(
            [sys.executable, "-m", "streams.cli", "worker"], env=os.environ | env, stdout=log, stderr=log
        )
        settings = Settings.from_env(env)
        self.workers[name] = RunningWorker(settings, env, f"http://127.0.0.1:{settings.web_port}", self.root / name)
        if wait:
            self.wait_ready(name)

    def data_dir(self, name: str) -> Path:
        return self.root / f"data-{name}"

    def wait_ready(self, name: str, timeout: float = 90) -> float:
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            assert self.processes[name].poll() is None, (self.root / f"{name}.log").read_text()[-3000:]
            try:
                if self.workers[name].get("/readyz")[0] == 200:
                    return time.monotonic() - started
            except OSError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"{name} not ready in {timeout}s")

    def kill(self, name: str) -> None:
        process = self.processes.pop(name)
        process.send_signal(signal.SIGKILL)
        process.wait()
        del self.workers[name]

    def stop_all(self) -> None:
        for name in list(self.processes):
            process = self.processes.pop(name)
            process.terminate()
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()

    def produce(self, records: list[tuple[str, bytes | None, bytes]]) -> None:
        topics = self.topics

        async def send() -> None:
            producer = AIOKafkaProducer(
                bootstrap_servers=self.broker.bootstrap, linger_ms=20, request_timeout_ms=120_000
            )
            await producer.start()
            try:
                futures = [
                    await producer.send(getattr(topics, topic.split(".")[0]), value, key=key)
                    for topic, key, value in records
                ]
                await asyncio.gather(*futures)
            finally:
                await producer.stop()

        asyncio.run(send())

    def verify(self, log: Log, timeout: float = 120) -> None:
        """Every live worker converges on the expected numbers; outputs and counters agree."""
        deadline = time.monotonic() + timeout
        counted = -1
        while time.monotonic() < deadline:
            counted = sum(orjson.loads(w.get("/healthz")[1])["events"] for w in self.workers.values())
            if counted == log.events:
                break
            time.sleep(0.5)
        assert counted == log.events, f"workers counted {counted} of {log.events} events"
        for name, worker in self.workers.items():
            while True:
                api = {_key(r): r["value"] for r in orjson.loads(worker.get("/api/metrics")[1])}
                if api == log.expected or time.monotonic() > deadline:
                    break
                time.sleep(0.5)
            wrong = {k: (api.get(k), v) for k, v in log.expected.items() if api.get(k) != v}
            assert not wrong and api.keys() == log.expected.keys(), (
                f"{name}: {len(wrong)} differ: {list(wrong.items())[:3]}"
            )
        settings = Settings.from_env(self.env)
        time.sleep(3 * settings.publish_interval + 0.5)
        final = {
            record.key.decode(): orjson.loads(record.value)["value"]
            for record in asyncio.run(read_topic(settings, settings.topics.metrics))
        }
        assert final == log.expected
        letters = asyncio.run(read_topic(settings, settings.topics.deadletter))
        identities = [
            (dict(r.headers)["revpulse.source.topic"], dict(r.headers)["revpulse.source.offset"], r.value)
            for r in letters
        ]
        assert len(identities) == len(set(identities)) == log.dead_letters


def _key(record: dict[str, Any]) -> str:
    labels = ",".join(f'{k}="{v}"' for k, v in sorted(record["labels"].items()))
    return f"{record['metric']}{{{labels}}}"


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    with EmbeddedBroker() as broker:
        env = worker_env(broker.bootstrap, tmp_path / "unused") | {
            "REVPULSE_SESSION_TIMEOUT": "3s",
            "REVPULSE_SNAPSHOT_INTERVAL": "2s",
        }
        running = Cluster(broker, tmp_path, env)
        try:
            yield running
        finally:
            running.stop_all()


def chunks(records: list[Any], parts: int) -> list[list[Any]]:
    size = -(-len(records) // parts)
    return [records[i : i + size] for i in range(0, len(records), size)]


def test_kill_9_five_times_during_the_replay(cluster: Cluster, fault_log: Log) -> None:
    rng = random.Random(5)
    cluster.start("w1")
    for part in chunks(fault_log.records, 6)[:-1]:
        cluster.produce(part)
        time.sleep(rng.uniform(0.2, 2.0))  # a random moment: mid-batch, mid-snapshot, or idle
        cluster.kill("w1")
        cluster.start("w1")
    cluster.produce(chunks(fault_log.records, 6)[-1])
    cluster.verify(fault_log)


def test_workers_join_and_die_mid_stream(cluster: Cluster, fault_log: Log) -> None:
    first, second, third = chunks(fault_log.records, 3)
    cluster.start("w1")
    cluster.start("w2")
    cluster.produce(first)
    cluster.start("w3", wait=False)
    cluster.produce(second)
    cluster.wait_ready("w3")
    cluster.kill("w2")
    cluster.produce(third)
    cluster.verify(fault_log)


def test_broker_frozen_for_20_seconds(cluster: Cluster, fault_log: Log) -> None:
    first, second = chunks(fault_log.records, 2)
    cluster.start("w1")
    cluster.start("w2")
    cluster.produce(first)
    assert cluster.broker.pid is not None
    os.kill(cluster.broker.pid, signal.SIGSTOP)
    time.sleep(20)
    os.kill(cluster.broker.pid, signal.SIGCONT)
    cluster.produce(second)
    cluster.verify(fault_log)


def test_data_dir_deleted_while_the_worker_is_down(cluster: Cluster, fault_log: Log) -> None:
    first, second = chunks(fault_log.records, 2)
    cluster.start("w1")
    cluster.produce(first)
    time.sleep(3)  # long enough for a snapshot
    cluster.kill("w1")
    shutil.rmtree(cluster.data_dir("w1"))
    cluster.start("w1")
    cluster.produce(second)
    cluster.verify(fault_log)
