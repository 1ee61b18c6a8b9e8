"""Snapshots on the snapshot topic: never replaced by an older one."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path

import orjson
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from revpulse.agents.base import ProducerService, read_topic
from revpulse.agents.snapshots import SnapshotStore
from revpulse.schemas.models import Event
from revpulse.streams.engine import Engine, EngineConfig
from revpulse.streams.partition import ShardState
from tests.support.deployment import settings_for


def test_an_encoding_that_finishes_late_does_not_replace_a_newer_snapshot(broker: str, tmp_path: Path) -> None:
    settings = settings_for(tmp_path, broker)

    async def write_both() -> dict[bytes, bytes | None]:
        producer = ProducerService(settings)
        await producer.start()
        try:
            store = SnapshotStore(settings, EngineConfig(), producer)
            for offset, blob in ((20, b"newer"), (10, b"older")):
                path = tmp_path / f"{offset}.snapshot"
                path.write_bytes(blob)
                await store.write(3, offset, path)
        finally:
            await producer.stop()
        return {record.key: record.value for record in await read_topic(settings, store.topic)}

    values = asyncio.run(write_both())
    assert (tmp_path / settings.app_id / "shard-3.state").read_bytes() == b"newer"
    assert (tmp_path / settings.app_id / "shard-3.state").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / settings.app_id).stat().st_mode & 0o777 == 0o700
    assert orjson.loads(values[b"3"] or b"")["next_offset"] == 20
    assert values[b"3/20/0"] == b"newer" and b"3/10/0" not in values


def _state(next_offset: int, signups: int) -> ShardState:
    """A shard state holding `signups` accepted product signups of one account, at `next_offset`."""
    engine = Engine(EngineConfig())
    for i in range(signups):
        event = Event(f"e{i}", "product.signup", (1_700_000_000 + i * 3600) * 1_000_000, "acc-0", None)
        assert engine.accept("product", event) == "accepted"
    engine.end_batch()
    return ShardState(engine, next_offset=next_offset)


def test_rotated_snapshots_keep_one_topic_a_shard_and_restore_past_a_forged_one(broker: str, tmp_path: Path) -> None:
    settings = replace(settings_for(tmp_path / "a", broker), internal_retention="rotate")
    prefix = f"{settings.app_id}-snapshots."
    skipped: list[tuple[str, str]] = []

    async def run() -> tuple[list[str], list[str], ShardState | None]:
        producer = ProducerService(settings)
        await producer.start()
        admin = AIOKafkaAdminClient(bootstrap_servers=broker)
        await admin.start()
        try:
            store = SnapshotStore(settings, EngineConfig(), producer)
            for offset, signups in ((10, 1), (20, 2), (30, 3)):
                await store.save(0, _state(offset, signups))
            await store.save(1, _state(5, 1))
            kept = sorted(name for name in await admin.list_topics() if name.startswith(prefix))
            # Anybody can create a topic named like a newer generation: it is skipped, counted.
            forged = f"{prefix}0.99"
            await admin.create_topics([NewTopic(forged, 1, 1)])
            await producer.producer.send_and_wait(forged, key=b"0", value=b'{"snapshot": "0/99", "chunks": 1}')
            after_forgery = sorted(name for name in await admin.list_topics() if name.startswith(prefix))
            # A worker whose data dir is empty restores from the topics.
            fresh = replace(settings, data_dir=tmp_path / "b")
            restorer = SnapshotStore(fresh, EngineConfig(), producer, lambda *skip: skipped.append(skip))
            restored = (await restorer.load({0: 30}))[0]
        finally:
            await admin.close()
            await producer.stop()
        return kept, after_forgery, restored

    kept, after_forgery, restored = asyncio.run(run())
    assert kept == [f"{prefix}0.30", f"{prefix}1.5"]
    assert after_forgery == [f"{prefix}0.30", f"{prefix}0.99", f"{prefix}1.5"]
    assert restored is not None and restored.next_offset == 30
    assert restored.engine.ledger.items() == _state(30, 3).engine.ledger.items()
    assert skipped == [("snapshots", "invalid_manifest")]
