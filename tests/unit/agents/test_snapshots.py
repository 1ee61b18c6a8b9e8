"""Snapshots: encoded by a forked copy as the state was at the fork, and never replaced by an older one."""

from __future__ import annotations

import asyncio
import pickle
from pathlib import Path

import orjson
import pytest

from revpulse.agents.base import ProducerService
from revpulse.agents.snapshots import Encoding, SnapshotStore, _private, decode_snapshot, parse_manifest
from revpulse.settings import Settings
from revpulse.streams.engine import EngineConfig
from revpulse.streams.partition import InputRecord, Router, Shard
from revpulse.streams.pipeline import decoder
from tests.support.deployment import settings_for
from tests.support.harness import Harness
from tests.support.paths import FIXTURES


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


def test_a_failed_encoding_yields_nothing_and_leaves_no_file(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    store = SnapshotStore(settings, EngineConfig(), ProducerService(settings))
    shard = Shard(0, EngineConfig())
    shard.state.outcomes["unpicklable"] = lambda: None  # type: ignore[assignment,index]
    encoding = store.encode_aside({0: shard.state})

    assert results(encoding) == []
    assert not encoding.paths[0].exists()


def test_a_snapshot_written_before_the_revpulse_package_restores_to_the_same_metrics(tmp_path: Path) -> None:
    """tests/fixtures/snapshots/shard-0.v1.pickle was written by the layout with top-level `streams` and
    `schemas` packages; the .json beside it holds its events and the series they gave then."""
    settings = settings_for(tmp_path)
    store = SnapshotStore(settings, EngineConfig(hot_accounts=2), ProducerService(settings))
    store.directory.mkdir(parents=True)
    (store.directory / "shard-0.pickle").write_bytes((FIXTURES / "snapshots" / "shard-0.v1.pickle").read_bytes())
    expected = orjson.loads((FIXTURES / "snapshots" / "shard-0.v1.json").read_bytes())

    restored = store._load_local(0)

    assert restored is not None and restored.next_offset == len(expected["events"])
    harness = Harness(Settings(clock="event", shards=1, hot_accounts=2))
    shard = Shard(0, EngineConfig(hot_accounts=2), restored)
    harness.pipeline.shards[0] = shard
    harness.pipeline.rollup.update(0, shard.all_partials())
    assert harness.values() == expected["values"]


class _Shell:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        import os

        return (os.system, ("true",))


@pytest.mark.parametrize(
    "blob",
    [pickle.dumps(_Shell()), pickle.dumps({"not": "a state"}), b"\x80\x05garbage"],
    ids=["a-function-call", "another-type", "garbage"],
)
def test_a_snapshot_that_is_not_a_shard_state_is_refused(tmp_path: Path, blob: bytes) -> None:
    with pytest.raises(pickle.UnpicklingError if blob[:3] != b"\x80\x05g" else Exception):
        decode_snapshot(blob)
    settings = settings_for(tmp_path)
    store = SnapshotStore(settings, EngineConfig(), ProducerService(settings))
    store.directory.mkdir(parents=True)
    (store.directory / "shard-0.pickle").write_bytes(blob)
    assert store._load_local(0) is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (b'{"snapshot": "3/20", "chunks": 2, "next_offset": 20}', ("3/20", 2, 20)),
        (b'{"snapshot": "4/20", "chunks": 2, "next_offset": 20}', None),  # another shard's name
        (b'{"snapshot": "3/20", "chunks": 0, "next_offset": 20}', None),
        (b'{"snapshot": "3/20", "chunks": 100001, "next_offset": 20}', None),
        (b'{"snapshot": "3/20", "chunks": true, "next_offset": 20}', None),
        (b'{"snapshot": "3/-1", "chunks": 1, "next_offset": -1}', None),
        (b'{"snapshot": "3/20", "chunks": "2", "next_offset": 20}', None),
        (b"[1, 2]", None),
        (b"\xff", None),
    ],
)
def test_only_a_manifest_of_ours_is_taken(value: bytes, expected: tuple[str, int, int] | None) -> None:
    assert parse_manifest(value, 3) == expected


def test_snapshots_are_private_to_the_workers_user(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    store = SnapshotStore(settings, EngineConfig(), ProducerService(settings))
    shard = Shard(0, EngineConfig())
    encoding = store.encode_aside({0: shard.state})
    assert [s for s, _ in results(encoding)] == [0]
    store.directory.chmod(0o755)
    path = store.directory / "shard-0.pickle"
    path.write_bytes(b"old")
    path.chmod(0o644)
    store._make_directory()
    with _private(path) as handle:
        handle.write(b"new")
    assert (store.directory.stat().st_mode & 0o777, path.stat().st_mode & 0o777) == (0o700, 0o600)
    assert path.read_bytes() == b"new"
