"""Snapshots: encoded by a forked copy as the state was at the fork, and never replaced by an older one."""

from __future__ import annotations

import asyncio
import pickle
import uuid
from pathlib import Path

import orjson
import pytest

from agents.base import ProducerService, read_topic
from agents.snapshots import Encoding, SnapshotStore
from streams.engine import EngineConfig
from streams.pipeline import decoder
from streams.settings import Settings
from streams.shards import InputRecord, Router, Shard


def settings_for(tmp_path: Path, bootstrap: str = "127.0.0.1:9") -> Settings:
    return Settings.from_env(
        {
            "REVPULSE_BROKER": f"kafka://{bootstrap}",
            "REVPULSE_DATA_DIR": str(tmp_path),
            "REVPULSE_APP_ID": f"snapshots-{uuid.uuid4().hex[:8]}",
        }
    )


def signups(shard: Shard, router: Router, first: int, count: int) -> None:
    """`count` product signups of account `acc-0`, one per hour from hour `first`, applied to `shard`."""
    records = [
        InputRecord(
            "product",
            0,
            offset,
            orjson.dumps(
                {
                    "event_id": f"e{offset}",
                    "type": "product.signup",
                    "occurred_at": (1_700_000_000 + offset * 3600) * 1000,
                    "account_id": "acc-0",
                }
            ),
            0.0,
        )
        for offset in range(first, first + count)
    ]
    items = [item for batch in router.route(records).values() for item in batch]
    shard.apply(items, shard.state.next_offset + 1)


def results(encoding: Encoding) -> list[tuple[int, bytes]]:
    async def collect() -> list[tuple[int, bytes]]:
        return [result async for result in encoding.results()]

    return asyncio.run(collect())


def test_a_forked_encoding_holds_the_state_as_it_was_at_the_fork(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    store = SnapshotStore(settings, EngineConfig(), ProducerService(settings))
    router = Router(decoder(settings), shards=1)
    shard = Shard(0, EngineConfig())
    signups(shard, router, 0, 3)
    before = (shard.state.next_offset, shard.state.engine.ledger.items())
    encoding = store.encode_aside({0: shard.state})
    signups(shard, router, 3, 2)  # the worker goes on while the copy encodes

    blobs = dict(results(encoding))

    assert blobs.keys() == {0} and not encoding.paths[0].exists()
    restored = pickle.loads(blobs[0])
    assert (restored.next_offset, restored.engine.ledger.items()) == before
    assert restored.next_offset == 1
    assert restored.engine.ledger.get(("signups", "all", 1_700_000_000 // 3600)) == 1
    assert shard.state.engine.ledger.items() != before[1]


@pytest.mark.integration
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
    assert (tmp_path / settings.app_id / "shard-3.pickle").read_bytes() == b"newer"
    assert orjson.loads(values[b"3"] or b"")["next_offset"] == 20
    assert values[b"3/20/0"] == b"newer" and b"3/10/0" not in values


def test_a_failed_encoding_yields_nothing_and_leaves_no_file(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    store = SnapshotStore(settings, EngineConfig(), ProducerService(settings))
    shard = Shard(0, EngineConfig())
    shard.state.outcomes["unpicklable"] = lambda: None  # type: ignore[assignment,index]
    encoding = store.encode_aside({0: shard.state})

    assert results(encoding) == []
    assert not encoding.paths[0].exists()
