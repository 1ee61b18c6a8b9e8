"""Snapshots on the snapshot topic: never replaced by an older one."""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson

from revpulse.agents.base import ProducerService, read_topic
from revpulse.agents.snapshots import SnapshotStore
from revpulse.streams.engine import EngineConfig
from tests.support.deployment import settings_for


def test_an_encoding_that_finishes_late_does_not_replace_a_newer_snapshot(broker: str, tmp_path: Path) -> None:
    settings = settings_for(tmp_path, broker)

    async def write_both() -> dict[bytes, bytes | None]:
        producer = ProducerService(settings)
        await producer.start()
        try:
            store = SnapshotStore(settings, EngineConfig(), producer)
            await store.write(3, 20, b"newer")
            await store.write(3, 10, b"older")
        finally:
            await producer.stop()
        return {record.key: record.value for record in await read_topic(settings, store.topic)}

    values = asyncio.run(write_both())
    assert (tmp_path / settings.app_id / "shard-3.state").read_bytes() == b"newer"
    assert (tmp_path / settings.app_id / "shard-3.state").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / settings.app_id).stat().st_mode & 0o777 == 0o700
    assert orjson.loads(values[b"3"] or b"")["next_offset"] == 20
    assert values[b"3/20/0"] == b"newer" and b"3/10/0" not in values
