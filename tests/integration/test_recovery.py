"""A restarted worker rebuilds its state from the input topics before it reports ready.

It replays each partition up to the group's committed offset without writing dead letters again, so after the
restart every series equals the one before and the dead-letter topic still holds each bad record once. The
log is 20k records in large batches: Tansu's ListOffsets answers short of the real end on such logs, and this
recovery never asks it.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from prometheus_client.parser import text_string_to_metric_families

from revpulse.agents.base import read_topic
from revpulse.local.processes import WorkerProcess
from revpulse.synth.bad_records import bad_record_cases
from revpulse.synth.config import SynthConfig
from revpulse.synth.delivery import generate
from revpulse.topics import partials_topic, route_line
from tests.support.deployment import deployment

pytestmark = pytest.mark.integration


async def _produce_log(bootstrap: str, env: dict[str, str], lines: list[bytes]) -> int:
    from revpulse.settings import Settings

    topics = Settings.from_env(env).topics
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=50, max_batch_size=1024 * 1024)
    await producer.start()
    try:
        futures = [
            await producer.send(record.topic, record.value, key=record.key)
            for line in lines
            for record in route_line(line, topics)
        ]
        events = len(lines)
        for topic, value, outcomes in bad_record_cases():
            futures.append(await producer.send(getattr(topics, topic.split(".")[0]), value))
            events += len(outcomes)
        await asyncio.gather(*futures)
        return events
    finally:
        await producer.stop()


def _wait_for_counts(worker: WorkerProcess, total: int) -> None:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if orjson.loads(worker.get("/healthz")[1])["events"] >= total:
            return
        time.sleep(0.3)
    raise TimeoutError(f"worker did not consume {total} records")


def test_restart_rebuilds_state_and_writes_no_dead_letter_twice(broker: str, tmp_path: Path) -> None:
    workers = deployment(broker, tmp_path)
    env = workers.env
    lines = [orjson.dumps(event) for _, event in generate(SynthConfig(accounts=200, days=40), events=20_000)]
    worker = workers.start("w1")
    try:
        sent = asyncio.run(_produce_log(broker, env, lines))
        _wait_for_counts(worker, sent)
        time.sleep(0.5)
        before = orjson.loads(worker.get("/api/metrics")[1])
    finally:
        workers.stop("w1")
    letters_before = asyncio.run(read_topic(worker.settings, worker.settings.topics.deadletter))

    worker = workers.start("w1")
    try:
        # ready means recovered: the very first answer already has every series as before the restart
        after = orjson.loads(worker.get("/api/metrics")[1])
        assert orjson.loads(worker.get("/healthz")[1])["events"] == sent
    finally:
        workers.stop("w1")
    assert len(before) > 1000 and after == before
    letters_after = asyncio.run(read_topic(worker.settings, worker.settings.topics.deadletter))
    assert len(letters_before) == len(letters_after) > 0


def _checkpoint_written(worker: WorkerProcess, since: float) -> Path:
    """The rollup checkpoint a stopped worker wrote (on stop) after `since`."""
    checkpoint = worker.settings.data_dir / worker.settings.app_id / "rollup.state"
    assert checkpoint.exists() and checkpoint.stat().st_mtime >= since, "no rollup checkpoint written on stop"
    return checkpoint


def test_a_restart_reads_the_partials_on_from_the_rollup_checkpoint(broker: str, tmp_path: Path) -> None:
    """The rollup checkpoints itself in the data dir as the worker stops; a restart takes it and reads only what
    the partials topic got since, and answers the same series and history. A damaged checkpoint is counted and
    read past: the rollup then reads the topic from its start, to the same answers."""
    workers = deployment(broker, tmp_path)
    # 200 days: history points become final (SPEC §5) and leave the shards, so only the rollup holds them.
    lines = [orjson.dumps(event) for _, event in generate(SynthConfig(accounts=60, days=200), events=6_000)]
    history = "/api/history?metric=mrr&segment=all"
    worker = workers.start("w1")
    try:
        sent = asyncio.run(_produce_log(broker, workers.env, lines))
        _wait_for_counts(worker, sent)
        counted = time.time()
        before = orjson.loads(worker.get("/api/metrics")[1]), orjson.loads(worker.get(history)[1])
    finally:
        workers.stop("w1")
    checkpoint = _checkpoint_written(worker, counted)
    assert len(before[1]["points"]) > 150

    for damage in (False, True):
        if damage:
            blob = checkpoint.read_bytes()
            checkpoint.write_bytes(blob[:100] + bytes([blob[100] ^ 1]) + blob[101:])
        log_start = worker.log.stat().st_size
        worker = workers.start("w1")
        try:
            after = orjson.loads(worker.get("/api/metrics")[1]), orjson.loads(worker.get(history)[1])
            exposition = worker.get("/metrics")[1].decode()
        finally:
            workers.stop("w1")
        assert after == before
        said = worker.log.read_text(errors="replace")[log_start:]
        skipped = 'revpulse_internal_records_skipped_total{reason="invalid_checkpoint",role="partials"} 1.0'
        assert ("rollup restored from its checkpoint" in said) is not damage
        assert (skipped in exposition) is damage


async def _delete_topic(bootstrap: str, topic: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.delete_topics([topic])
    finally:
        await admin.close()


def test_a_checkpoint_of_a_partials_topic_since_re_created_is_dropped(broker: str, tmp_path: Path) -> None:
    """The partials topic deleted (and re-created by the worker) while the data dir kept a checkpoint of it: the
    rollup starts over from the new topic's start instead of trusting offsets of another topic, and the live
    series come back whole from the shards."""
    workers = deployment(broker, tmp_path)
    lines = [orjson.dumps(event) for _, event in generate(SynthConfig(accounts=60, days=30), events=3_000)]
    worker = workers.start("w1")
    try:
        sent = asyncio.run(_produce_log(broker, workers.env, lines))
        _wait_for_counts(worker, sent)
        counted = time.time()
        before = orjson.loads(worker.get("/api/metrics")[1])
    finally:
        workers.stop("w1")
    _checkpoint_written(worker, counted)
    asyncio.run(_delete_topic(broker, partials_topic(worker.settings)))
    log_start = worker.log.stat().st_size
    worker = workers.start("w1")
    try:
        after = orjson.loads(worker.get("/api/metrics")[1])
    finally:
        workers.stop("w1")
    assert after == before
    said = worker.log.read_text(errors="replace")[log_start:]
    # decided before the shards start: what they feed the rollup directly is not thrown away with the checkpoint
    assert -1 < said.find("not the one the rollup checkpoint read") < said.find("shards: own")


def _routed(worker: WorkerProcess, path: str) -> float:
    """`revpulse_routed_items_total{path=...}` of a worker."""
    status, body = worker.get("/metrics")
    assert status == 200
    return sum(
        sample.value
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
        if sample.name == "revpulse_routed_items_total" and sample.labels["path"] == path
    )


def test_a_worker_killed_before_any_snapshot_reads_its_spans_again(broker: str, tmp_path: Path) -> None:
    """What a worker applied to its own shards as it routed went to the shard topic as spans only: killed with
    no snapshot written, its successor rebuilds from the shard topic, reads exactly those items again from the
    input topics, and serves the same metrics and dead letters."""
    workers = deployment(broker, tmp_path, REVPULSE_SNAPSHOT_INTERVAL="1h")
    env = workers.env
    lines = [orjson.dumps(event) for _, event in generate(SynthConfig(accounts=100, days=30), events=8_000)]
    worker = workers.start("w1")
    try:
        # Each shard takes the local path once it has consumed what it was sent before: the second half does.
        sent = asyncio.run(_produce_log(broker, env, lines[:4_000]))
        _wait_for_counts(worker, sent)
        sent += asyncio.run(_produce_log(broker, env, lines[4_000:]))
        _wait_for_counts(worker, sent)
        time.sleep(0.5)
        before = orjson.loads(worker.get("/api/metrics")[1])
        local = _routed(worker, "local")
    finally:
        workers.kill("w1")
    assert local > 0, "no item took the local path"
    letters_before = asyncio.run(read_topic(worker.settings, worker.settings.topics.deadletter))

    worker = workers.start("w1")
    try:
        assert orjson.loads(worker.get("/healthz")[1])["events"] == sent
        after = orjson.loads(worker.get("/api/metrics")[1])
        reread = _routed(worker, "reread")
    finally:
        workers.stop("w1")
    assert len(before) > 1000 and after == before
    assert reread == local
    letters_after = asyncio.run(read_topic(worker.settings, worker.settings.topics.deadletter))
    assert len(letters_before) == len(letters_after) > 0
