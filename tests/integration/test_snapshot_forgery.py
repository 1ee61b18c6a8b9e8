"""A worker whose snapshots were altered in its data dir, and whose snapshot topic holds a forged snapshot (a pickle
that would run a command, under a manifest of the current format), restarts to the same metrics: it reads none of
them, logs and counts each, restores the shard with a valid copy on the topic from there, and rebuilds the other
from the shard topic. Nothing in the forged record runs."""

from __future__ import annotations

import asyncio
import os
import pickle
import time
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaProducer
from prometheus_client.parser import text_string_to_metric_families

from revpulse.local.processes import WorkerProcess
from revpulse.settings import Settings
from revpulse.streams.state_codec import FORMAT
from revpulse.synth.config import SynthConfig
from revpulse.synth.delivery import generate
from revpulse.topics import route_line, snapshot_topic
from tests.support.deployment import deployment

pytestmark = pytest.mark.integration


class _Shell:
    """Unpickled, this would run a shell command creating `marker`."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


async def _send(settings: Settings, records: list[tuple[str, bytes | None, bytes]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers, linger_ms=20)
    await producer.start()
    try:
        await asyncio.gather(*[await producer.send(topic, value, key=key) for topic, key, value in records])
    finally:
        await producer.stop()


def _skipped(worker: WorkerProcess) -> dict[tuple[str, str], float]:
    body = worker.get("/metrics")[1].decode()
    return {
        (sample.labels["role"], sample.labels["reason"]): sample.value
        for family in text_string_to_metric_families(body)
        for sample in family.samples
        if sample.name == "revpulse_internal_records_skipped_total"
    }


def _events(worker: WorkerProcess) -> int:
    return int(orjson.loads(worker.get("/healthz")[1])["events"])


def test_forged_and_altered_snapshots_are_not_read_and_the_shards_rebuild(broker: str, tmp_path: Path) -> None:
    workers = deployment(broker, tmp_path, REVPULSE_SHARDS="2", REVPULSE_SNAPSHOT_INTERVAL="1s")
    lines = [orjson.dumps(event) for _, event in generate(SynthConfig(accounts=60, days=30), events=3_000)]
    worker = workers.start("w1")
    settings = worker.settings
    try:
        records = [(r.topic, r.key, r.value) for line in lines for r in route_line(line, settings.topics)]
        asyncio.run(_send(settings, records))
        deadline = time.monotonic() + 90
        while _events(worker) < len(lines) and time.monotonic() < deadline:
            time.sleep(0.3)
        time.sleep(3)  # a few snapshot intervals: each shard's final state is in the data dir and on the topic
        before = orjson.loads(worker.get("/api/metrics")[1])
    finally:
        workers.stop("w1")

    directory = workers.data_dir("w1") / settings.app_id
    files = sorted(directory.glob("shard-*.state"))
    assert [path.name for path in files] == ["shard-0.state", "shard-1.state"]
    for path in files:
        blob = bytearray(path.read_bytes())
        blob[len(blob) // 2] ^= 0x01  # one bit of the body: the checksum catches it
        path.write_bytes(bytes(blob))
    marker = tmp_path / "marker"
    manifest = {"snapshot": "0/1000000", "chunks": 1, "next_offset": 1_000_000, "format": FORMAT}
    forged = [
        (snapshot_topic(settings), b"0/1000000/0", pickle.dumps(_Shell(marker))),
        (snapshot_topic(settings), b"0", orjson.dumps(manifest)),
    ]
    asyncio.run(_send(settings, forged))

    worker = workers.start("w1")
    try:
        after = orjson.loads(worker.get("/api/metrics")[1])  # ready means restored or rebuilt
        assert _events(worker) == len(lines)
        skipped = _skipped(worker)
        log = worker.tail()
    finally:
        workers.stop("w1")
    assert not marker.exists(), "the forged snapshot ran its command"
    assert len(before) > 100 and after == before
    assert skipped.get(("snapshots", "invalid_file")) == 2, skipped
    assert skipped.get(("snapshots", "invalid_snapshot")) == 1, skipped
    assert "rejected" in (tmp_path / "w1.log").read_text(), log
