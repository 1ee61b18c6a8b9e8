"""No record can stop a worker (SPEC §1), on the real embedded broker: one worker consumes a valid event mix with
poison records on its input topics and foreign records on its internal topics in the middle. It stays up and
ready, serves exactly the metrics of an in-process run of the valid events alone, dead-letters each poison input
record once, counts the foreign internal records as skipped; and after a restart, which reads all of it again,
it is ready again with the same metrics."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer
from prometheus_client.parser import text_string_to_metric_families

from revpulse.agents.app import PARTIALS_PARTITIONS
from revpulse.agents.base import read_topic
from revpulse.local.processes import LocalWorkers, WorkerProcess
from revpulse.settings import Settings
from revpulse.topics import partials_topic, shard_topic, snapshot_topic, topic_of
from tests.support.deployment import deployment
from tests.support.harness import Harness
from tests.support.poison import (
    FOREIGN_ITEMS,
    FOREIGN_MANIFESTS,
    FOREIGN_PARTIALS,
    FOREIGN_RECORDS,
    FOREIGN_SHARD_RECORDS,
    POISON,
    Poison,
    big_amount_events,
    foreign_spans,
    valid_events,
)

pytestmark = pytest.mark.integration

VALID = [*valid_events(), *big_amount_events()]
TIMEOUT = 60  # seconds for the worker to count every event, and to serve the expected series
MAX_RECORD = 4 * 1024 * 1024  # the poison holds a 2 MiB record


@dataclass(frozen=True)
class Sent:
    poison: Poison
    topic: str
    partition: int
    offset: int


@dataclass
class Run:
    workers: LocalWorkers
    expected: dict[str, float | None]  # every series of an in-process run of the valid events alone
    as_of: str
    sent: list[Sent]  # the poison input records, where they landed
    letters_seen: list[Any] = field(repr=False)  # the dead-letter topic after the first run


def _key(record: dict[str, Any]) -> str:
    labels = ",".join(f'{k}="{v}"' for k, v in sorted(record["labels"].items()))
    return f"{record['metric']}{{{labels}}}"


def _api(worker: WorkerProcess) -> tuple[dict[str, float | None], set[str]]:
    status, body = worker.get("/api/metrics")
    assert status == 200, body[:500]
    records = orjson.loads(body)
    return {_key(r): r["value"] for r in records}, {r["as_of"] for r in records}


def _matches(got: dict[str, float | None], expected: dict[str, float | None]) -> bool:
    if got.keys() != expected.keys():
        return False
    return all(
        (value is None) == (got[key] is None) and (value is None or got[key] == pytest.approx(value, rel=1e-9))
        for key, value in expected.items()
    )


def _samples(worker: WorkerProcess, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    status, body = worker.get("/metrics")
    assert status == 200
    return {
        tuple(sorted(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
        if sample.name == name
    }


def _events_counted(worker: WorkerProcess) -> int:
    return int(orjson.loads(worker.get("/healthz")[1])["events"])


def _wait_for(worker: WorkerProcess, events: int, expected: dict[str, float | None]) -> None:
    """Until the worker counted `events` events and serves `expected` (it must stay alive meanwhile)."""
    deadline = time.monotonic() + TIMEOUT
    while True:
        assert worker.process.poll() is None, f"the worker died:\n{worker.tail()}"
        counted = _events_counted(worker)
        served = _api(worker)[0]
        if counted == events and _matches(served, expected):
            return
        if time.monotonic() > deadline:
            wrong = [
                (key, served.get(key), value)
                for key, value in expected.items()
                if not _matches({key: served.get(key)}, {key: value})
            ]
            raise AssertionError(
                f"counted {counted} of {events} events; {len(wrong)} series differ (key, got, expected), e.g. "
                f"{wrong[:3]}; extra series {sorted(served.keys() - expected.keys())[:3]}; log:\n{worker.tail()}"
            )
        time.sleep(0.3)


async def _produce(settings: Settings, sent: list[Sent]) -> None:
    """Half the valid events, the poison input records, the foreign internal records, the other half."""
    topics = settings.topics
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.bootstrap_servers, max_request_size=MAX_RECORD, max_batch_size=MAX_RECORD
    )
    await producer.start()

    async def valid(events: list[dict[str, Any]]) -> None:
        for event in events:
            topic = topic_of(event["type"], topics)
            assert topic is not None
            key = (event.get("channel") if event["type"] == "marketing.spend" else event["account_id"]).encode()
            await producer.send(topic, orjson.dumps(event), key=key)
        await producer.flush()

    try:
        half = len(VALID) // 2
        await valid(VALID[:half])
        for poison in POISON:
            topic = getattr(topics, poison.topic)
            metadata = await producer.send_and_wait(topic, poison.value)
            sent.append(Sent(poison, topic, metadata.partition, metadata.offset))
        for shard in range(settings.shards):
            for value in (*FOREIGN_SHARD_RECORDS, *foreign_spans(topics.billing)):
                key = None if value is not None else b"tombstone"  # a client sends no record without either
                await producer.send_and_wait(shard_topic(settings), value, key=key, partition=shard)
        for partition in range(PARTIALS_PARTITIONS):
            for key, value, _ in FOREIGN_PARTIALS:
                await producer.send_and_wait(partials_topic(settings), value, key=key, partition=partition)
        for key, value in FOREIGN_MANIFESTS:
            await producer.send_and_wait(snapshot_topic(settings), value, key=key, partition=0)
        await valid(VALID[half:])
    finally:
        await producer.stop()


@pytest.fixture(scope="module")
def run(broker: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    harness = Harness(Settings(clock="event", fx_rates={"EUR": 1.08}))
    harness.send(*VALID)
    assert harness.dead == []
    expected = harness.values()
    assert harness.pipeline.as_of_text is not None
    workers = deployment(broker, Path(tmp_path_factory.mktemp("poison")), REVPULSE_SNAPSHOT_INTERVAL="2s")
    try:
        worker = workers.start("w1")
        sent: list[Sent] = []
        asyncio.run(_produce(worker.settings, sent))
        _wait_for(worker, len(VALID) + len(POISON), expected)
        letters = asyncio.run(read_topic(worker.settings, worker.settings.topics.deadletter))
        yield Run(workers, expected, harness.pipeline.as_of_text, sent, letters)
    finally:
        workers.stop_all()


def test_the_worker_stays_up_and_ready(run: Run) -> None:
    worker = run.workers.running["w1"]
    time.sleep(1)
    assert worker.process.poll() is None, worker.tail()
    assert worker.get("/readyz")[0] == 200


def test_the_metrics_equal_those_of_the_valid_events_alone(run: Run) -> None:
    worker = run.workers.running["w1"]
    values, as_of = _api(worker)
    assert as_of == {run.as_of}
    assert values.keys() == run.expected.keys()
    for key, value in run.expected.items():
        if value is None:
            assert values[key] is None, key
        else:
            assert values[key] == pytest.approx(value, rel=1e-9), key
    rejected = sum(
        v for labels, v in _samples(worker, "revpulse_events_total").items() if ("outcome", "rejected") in labels
    )
    assert rejected == len(POISON)


def test_each_poison_record_has_exactly_one_dead_letter(run: Run) -> None:
    letters: dict[tuple[str, int, int], list[tuple[bytes, dict[str, str]]]] = {}
    for record in run.letters_seen:
        headers = {k: v.decode() for k, v in record.headers}
        source = (
            headers["revpulse.source.topic"],
            int(headers["revpulse.source.partition"]),
            int(headers["revpulse.source.offset"]),
        )
        letters.setdefault(source, []).append((record.value, headers))
    for sent in run.sent:
        found = letters.pop((sent.topic, sent.partition, sent.offset), [])
        assert len(found) == 1, f"{sent.poison.name}: {len(found)} dead letters"
        ((payload, headers),) = found
        assert headers["revpulse.reason"] == sent.poison.reason, sent.poison.name
        assert sent.poison.detail in headers["revpulse.detail"], sent.poison.name
        assert payload == sent.poison.value, sent.poison.name
    assert letters == {}, "dead letters of no poison record"


def test_the_foreign_internal_records_are_counted_as_skipped(run: Run) -> None:
    """The shard topic's junk is counted exactly. A lone worker owns every shard, so its rollup does not decode the
    partials topic at all (only its own echoes could be there): the junk there changes nothing, which the
    metrics check shows; the partials decoder's verdicts are unit-tested (tests/unit/test_poison.py)."""
    worker = run.workers.running["w1"]
    skipped = {
        (dict(labels)["role"], dict(labels)["reason"]): value
        for labels, value in _samples(worker, "revpulse_internal_records_skipped_total").items()
    }
    shards = worker.settings.shards
    assert skipped.get(("shards", "invalid_record")) == FOREIGN_RECORDS * shards, skipped
    assert skipped.get(("shards", "invalid_item")) == FOREIGN_ITEMS * shards, skipped
    assert skipped.get(("shards", "unknown_partition")) == shards, skipped
    assert skipped.get(("shards", "input_gone")) == shards, skipped


def test_a_restart_reads_the_poison_again_and_serves_the_same_metrics(run: Run) -> None:
    run.workers.stop("w1")
    worker = run.workers.start("w1")  # the same name: the same data dir
    _wait_for(worker, len(VALID) + len(POISON), run.expected)
    assert _api(worker)[1] == {run.as_of}
    time.sleep(2)  # a few snapshot and publish intervals after the poison was read again
    assert worker.process.poll() is None, worker.tail()
    assert worker.get("/readyz")[0] == 200
    assert _matches(_api(worker)[0], run.expected)
    letters = asyncio.run(read_topic(worker.settings, worker.settings.topics.deadletter))
    assert len(letters) == len(run.letters_seen) == len(POISON), "a dead letter was written again"
