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
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from revpulse.agents.base import read_topic
from revpulse.local.broker import EmbeddedBroker
from revpulse.local.processes import LocalWorkers
from revpulse.settings import Settings, Topics
from revpulse.streams.partition import InputRecord
from revpulse.streams.pipeline import Pipeline
from revpulse.synth.bad_records import bad_record_cases
from revpulse.synth.config import SynthConfig
from revpulse.synth.delivery import generate
from revpulse.topics import route_line
from tests.support.deployment import worker_env

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


class Cluster(LocalWorkers):
    """Workers of one deployment on a broker of their own (so that it can be frozen)."""

    def __init__(self, broker: EmbeddedBroker, env: dict[str, str], root: Path) -> None:
        super().__init__(env, root)
        self.broker = broker

    @property
    def topics(self) -> Topics:
        return Settings.from_env(self.env).topics

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
            counted = sum(orjson.loads(w.get("/healthz")[1])["events"] for w in self.running.values())
            if counted == log.events:
                break
            time.sleep(0.5)
        assert counted == log.events, f"workers counted {counted} of {log.events} events"
        for name, worker in self.running.items():
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
        env = worker_env(broker.bootstrap, REVPULSE_SESSION_TIMEOUT="3s", REVPULSE_SNAPSHOT_INTERVAL="2s")
        running = Cluster(broker, env, tmp_path)
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
    third_worker = cluster.start("w3", wait=False)
    cluster.produce(second)
    third_worker.wait_ready()
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


def test_a_standby_replica_takes_over_without_a_restore(tmp_path: Path, fault_log: Log) -> None:
    with EmbeddedBroker() as broker:
        env = worker_env(
            broker.bootstrap,
            REVPULSE_SESSION_TIMEOUT="3s",
            REVPULSE_SNAPSHOT_INTERVAL="2s",
            REVPULSE_STANDBY_REPLICAS="1",
        )
        cluster = Cluster(broker, env, tmp_path)
        try:
            first, second = chunks(fault_log.records, 2)
            survivor = cluster.start("w1")
            doomed = cluster.start("w2")
            cluster.produce(first)

            # each holds the other's shards, applied as far as their owner once the first half is in
            deadline = time.monotonic() + 60
            while True:
                health = [orjson.loads(worker.get("/healthz")[1]) for worker in (survivor, doomed)]
                pairs = [(h["standby_events"], other["events"]) for h, other in zip(health, health[::-1], strict=True)]
                if all(owned > 0 and standby == owned for standby, owned in pairs):
                    break
                assert time.monotonic() < deadline, f"standby replicas behind their owners: {pairs}"
                time.sleep(0.5)
            restores_before = survivor.log.read_text().count("restored at offset")
            cluster.kill("w2")
            cluster.produce(second)
            cluster.verify(fault_log)
            # the dead worker's shards were taken over from the warm replicas: nothing was read back
            assert survivor.log.read_text().count("restored at offset") == restores_before
        finally:
            cluster.stop_all()
