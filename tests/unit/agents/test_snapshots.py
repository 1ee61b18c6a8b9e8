"""Snapshots: encoded by a forked copy as the state was at the fork, never replaced by an older one, data only; a
snapshot this worker cannot trust (crafted, altered, another key's, an earlier version's pickle) is not read: the
shard comes from the other copy or is rebuilt."""

from __future__ import annotations

import asyncio
import logging
import os
import pickle
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import orjson
import pytest

from revpulse.agents.base import ProducerService
from revpulse.agents.snapshots import (
    INLINE_BYTES,
    INLINE_SECONDS,
    Encoding,
    InlinePolicy,
    Manifest,
    SnapshotStore,
    SpilledValues,
    copy_running,
    parse_manifest,
    parse_timings,
    private_file,
)
from revpulse.settings import Settings, SettingsError
from revpulse.streams.engine import EngineConfig
from revpulse.streams.partition import InputRecord, Router, Shard, ShardState
from revpulse.streams.pipeline import decoder
from revpulse.streams.state_codec import FORMAT, SnapshotError
from tests.support.deployment import settings_for
from tests.support.harness import Harness
from tests.support.paths import FIXTURES

KEY = "0123456789abcdef" * 4


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
    """(shard, snapshot bytes) of what the copy encoded, read from each file before it is deleted."""

    async def collect() -> list[tuple[int, bytes]]:
        return [(shard, path.read_bytes()) async for shard, path in encoding.results()]

    return asyncio.run(collect())


class _Skips(list[tuple[str, str]]):
    def __call__(self, role: str, reason: str) -> None:
        self.append((role, reason))


def _store(tmp_path: Path, key: str | None = None) -> tuple[SnapshotStore, _Skips]:
    settings = settings_for(tmp_path)
    if key is not None:
        settings = replace(settings, state_key=key)
    skips = _Skips()
    return SnapshotStore(settings, EngineConfig(), ProducerService(settings), skips), skips


def _shard_with_signups() -> Shard:
    shard = Shard(0, EngineConfig())
    signups(shard, Router(decoder(Settings()), shards=1), 0, 3)
    return shard


def _restore(store: SnapshotStore, topic: dict[bytes, bytes | None], committed: int = 1) -> ShardState | None:
    """What `load` restores for shard 0 with the snapshot topic holding `topic`."""

    async def values(name: str) -> SpilledValues:
        assert name == store.topic
        store._make_directory()
        spilled = SpilledValues(store.directory)
        for key, value in topic.items():
            spilled.put(key, value)
        return spilled

    store._topic_values = values  # type: ignore[method-assign]
    return asyncio.run(store.load({0: committed}))[0]


def _on_topic(state: ShardState, store: SnapshotStore, blob: bytes | None = None) -> dict[bytes, bytes | None]:
    """The snapshot topic's records of one snapshot of shard 0 (its manifest, one chunk)."""
    manifest = {"snapshot": f"0/{state.next_offset}", "chunks": 1, "next_offset": state.next_offset, "format": FORMAT}
    chunk = blob if blob is not None else store.encode(0, state)
    return {b"0": orjson.dumps(manifest), f"0/{state.next_offset}/0".encode(): chunk}


def test_a_forked_encoding_holds_the_state_as_it_was_at_the_fork(tmp_path: Path) -> None:
    store, _ = _store(tmp_path)
    router = Router(decoder(Settings()), shards=1)
    shard = Shard(0, EngineConfig())
    signups(shard, router, 0, 3)
    before = (shard.state.next_offset, shard.state.engine.ledger.items())
    encoding = store.encode_aside({0: shard.state})
    signups(shard, router, 3, 2)  # the worker goes on while the copy encodes

    assert shard.state.engine.accounts.holds == 1  # freed slots wait while the copy reads the arena
    assert copy_running()  # the worker's full collections wait for it
    blobs = dict(results(encoding))

    assert blobs.keys() == {0} and not encoding.paths[0].exists()
    assert shard.state.engine.accounts.holds == 0
    assert not copy_running()
    restored = store.decode(0, blobs[0])
    assert (restored.next_offset, restored.engine.ledger.items()) == before
    assert restored.next_offset == 1
    assert restored.engine.ledger.get(("signups", "all", 1_700_000_000 // 3600)) == 1
    assert shard.state.engine.ledger.items() != before[1]


def test_a_failed_encoding_yields_nothing_and_leaves_no_file(tmp_path: Path) -> None:
    store, _ = _store(tmp_path)
    shard = Shard(0, EngineConfig())
    shard.state.outcomes[("topic", "type", lambda: None)] = 1  # type: ignore[index]
    encoding = store.encode_aside({0: shard.state})

    assert results(encoding) == []
    assert not encoding.paths[0].exists()
    assert not copy_running()


def test_a_shard_is_encoded_in_the_worker_once_its_size_at_its_measured_speed_fits_the_budget() -> None:
    policy = InlinePolicy(budget=0.05, first_guess=0.05 / 1_000_000)
    assert not policy.inline(0), "no snapshot yet: its size is unknown, so a copy encodes it"
    policy.written(0, 1_000_000)
    policy.written(1, 1_000_001)
    assert policy.inline(0) and not policy.inline(1), "at the first guess, 1 MB takes the whole budget"
    policy.encoded(0, 1_000_000, 0.08)  # slower than guessed: 0.08 µs a byte
    assert not policy.inline(0)
    policy.written(0, 625_000)  # 0.05 s at that speed
    assert policy.inline(0)
    policy.encoded(0, 625_000, 0.01)
    policy.written(0, 3_000_000)  # 0.048 s at the new speed
    assert policy.inline(0)
    assert not policy.inline(2)
    assert InlinePolicy().first_guess == INLINE_SECONDS / INLINE_BYTES


def test_encoding_in_the_worker_writes_the_snapshot_and_measures_it(tmp_path: Path) -> None:
    store, _ = _store(tmp_path)
    shard = _shard_with_signups()
    path = store.encode_here(0, shard.state)

    assert path.read_bytes() == store.encode(0, shard.state)
    assert store.policy.sizes == {0: path.stat().st_size}
    assert 0 < store.policy.speeds[0] * path.stat().st_size < 5  # seconds: measured, not guessed
    assert store.policy.inline(0)  # a few hundred bytes


def test_a_forked_encoding_measures_each_shard_for_the_policy(tmp_path: Path) -> None:
    """A shard whose one encoding in the worker came out slow goes aside; the copy's own measure of it brings it
    back, instead of every later snapshot of it paying for a copy."""
    store, _ = _store(tmp_path)
    shard = _shard_with_signups()
    store.policy.encoded(0, 1_000, 10.0)  # as if the worker had been held off the CPU for 10 s
    assert not store.policy.inline(0)

    blobs = dict(results(store.encode_aside({0: shard.state})))

    assert store.policy.sizes[0] == len(blobs[0])
    assert 0 < store.policy.speeds[0] * len(blobs[0]) < 1  # CPU seconds: a few hundred bytes encoded
    assert store.policy.inline(0)


def test_a_fork_that_fails_leaves_no_pipe_open_and_the_arena_free(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, _ = _store(tmp_path)
    shard = _shard_with_signups()
    descriptors = len(os.listdir("/proc/self/fd"))

    def no_memory() -> int:
        raise OSError(12, "Cannot allocate memory")

    monkeypatch.setattr(os, "fork", no_memory)
    with pytest.raises(OSError):
        store.encode_aside({0: shard.state})
    assert len(os.listdir("/proc/self/fd")) == descriptors
    assert shard.state.engine.accounts.holds == 0


def test_timings_a_copy_did_not_write_as_agreed_are_ignored() -> None:
    paths = {0: Path("a"), 1: Path("b"), 2: Path("c")}
    assert parse_timings(b'{"0": [120, 0.002], "1": [-1, 0.1], "2": [5, "fast"], "9": [1, 0.1]}', paths) == {
        0: (120, 0.002)
    }
    assert parse_timings(b'{"0": [120, 0.0', paths) == {}  # cut short
    assert parse_timings(b"[1, 2]", paths) == {}
    assert parse_timings(b"", paths) == {}


def test_files_an_earlier_process_was_encoding_into_are_deleted_once(tmp_path: Path) -> None:
    store, _ = _store(tmp_path)
    store.directory.mkdir(parents=True)
    stale = [store.directory / "shard-0.saving", store.directory / "shard-1.1.0.saving"]
    for path in stale:
        path.write_bytes(b"half a snapshot")
    first = store.encode_here(0, _shard_with_signups().state)
    second = store.encode_here(0, _shard_with_signups().state)

    assert first != second and first.exists() and second.exists()
    assert not any(path.exists() for path in stale)


def test_spilled_values_keep_the_latest_value_of_each_key_in_a_file(tmp_path: Path) -> None:
    values = SpilledValues(tmp_path)
    for key, value in ((b"a", b"1"), (b"b", b"22"), (b"a", b"333"), (b"b", None), (b"c", b"")):
        values.put(key, value)
    assert dict(values) == {b"a": b"333", b"c": b""} and values.get(b"b") is None
    values.close()


def test_a_snapshot_written_and_read_back_restores_the_same_state(tmp_path: Path) -> None:
    store, skips = _store(tmp_path, KEY)
    shard = _shard_with_signups()
    store._make_directory()
    (store.directory / "shard-0.state").write_bytes(store.encode(0, shard.state))
    restored = _restore(store, {})
    assert restored is not None and restored.engine.ledger.items() == shard.state.engine.ledger.items()
    assert skips == []


def test_a_snapshot_of_the_previous_version_is_not_read_and_the_shard_rebuilds(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """tests/fixtures/snapshots/shard-0.v1.pickle was written by an earlier version (a pickle); the .json beside
    it holds its events and the series they gave then. It is deleted unread, not counted (RevPulse wrote it), and
    the shard rebuilt from its events serves the series the snapshot did."""
    store, skips = _store(tmp_path)
    store._make_directory()
    legacy = store.directory / "shard-0.pickle"
    legacy.write_bytes((FIXTURES / "snapshots" / "shard-0.v1.pickle").read_bytes())
    expected = orjson.loads((FIXTURES / "snapshots" / "shard-0.v1.json").read_bytes())

    with caplog.at_level(logging.WARNING):
        restored = _restore(store, {}, committed=len(expected["events"]))

    assert restored is None and not legacy.exists() and skips == []
    assert "earlier version (a pickle): deleted, not read" in caplog.text
    harness = Harness(Settings(clock="event", shards=1, hot_accounts=2))
    harness.send(*expected["events"])  # what the shard topic replays to a shard restored from nothing
    assert harness.values() == expected["values"]


def test_a_pickle_of_the_previous_version_on_the_topic_is_not_read(tmp_path: Path) -> None:
    store, skips = _store(tmp_path)
    legacy_manifest = b'{"snapshot": "0/8", "chunks": 1, "next_offset": 8}'  # no format: an earlier version's
    pickled = (FIXTURES / "snapshots" / "shard-0.v1.pickle").read_bytes()
    assert _restore(store, {b"0": legacy_manifest, b"0/8/0": pickled}) is None
    assert skips == [] and store._topic_chunks[0] == [b"0/8/0"]  # tombstoned by the next snapshot written


class _Shell:
    """Unpickled, this would run a shell command creating the file `marker`."""

    marker: Path

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


def test_a_forged_snapshot_cannot_run_code(tmp_path: Path) -> None:
    """The attack of issue 14: a pickle that runs a command, as the data dir's snapshot and on the topic under a
    manifest of the current format. Neither runs; both are counted; the shard rebuilds."""
    _Shell.marker = tmp_path / "marker"
    forged = pickle.dumps(_Shell())
    store, skips = _store(tmp_path)
    store._make_directory()
    (store.directory / "shard-0.state").write_bytes(forged)
    (store.directory / "shard-0.pickle").write_bytes(forged)
    state = _shard_with_signups().state
    assert _restore(store, _on_topic(state, store, forged)) is None
    assert not _Shell.marker.exists()
    assert skips == [("snapshots", "invalid_file"), ("snapshots", "invalid_snapshot")]


def test_a_tampered_file_is_rejected_and_the_topic_copy_restores(tmp_path: Path) -> None:
    store, skips = _store(tmp_path)
    state = _shard_with_signups().state
    blob = bytearray(store.encode(0, state))
    blob[40] ^= 1
    store._make_directory()
    (store.directory / "shard-0.state").write_bytes(bytes(blob))

    restored = _restore(store, _on_topic(state, store))

    assert restored is not None and restored.engine.ledger.items() == state.engine.ledger.items()
    assert skips == [("snapshots", "invalid_file")]


def test_with_a_key_only_snapshots_signed_with_it_are_read(tmp_path: Path) -> None:
    state = _shard_with_signups().state
    signer, _ = _store(tmp_path / "a", KEY)
    other, _ = _store(tmp_path / "b", "f" * 32)
    unsigned, _ = _store(tmp_path / "c")
    assert signer.decode(0, signer.encode(0, state)).engine.ledger.items() == state.engine.ledger.items()
    for writer, reader in [(other, signer), (unsigned, signer), (signer, unsigned)]:
        with pytest.raises(SnapshotError):
            reader.decode(0, writer.encode(0, state))

    store, skips = _store(tmp_path / "d", KEY)
    assert _restore(store, _on_topic(state, unsigned)) is None  # a forged, well-formed, unsigned snapshot
    assert skips == [("snapshots", "invalid_snapshot")]


def test_a_topic_snapshot_of_another_shard_or_offset_is_refused(tmp_path: Path) -> None:
    store, skips = _store(tmp_path)
    state = _shard_with_signups().state
    topic = _on_topic(state, store)
    other_shard = {**topic, f"0/{state.next_offset}/0".encode(): store.encode(1, state)}
    assert _restore(store, other_shard) is None
    state.next_offset = 7
    other_offset = {**topic, f"0/{1}/0".encode(): store.encode(0, state)}
    assert _restore(store, other_offset) is None
    assert skips == [("snapshots", "invalid_snapshot")] * 2


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (b'{"snapshot": "3/20", "chunks": 2, "next_offset": 20, "format": 2}', Manifest("3/20", 2, 20, 2)),
        (b'{"snapshot": "3/20", "chunks": 2, "next_offset": 20}', Manifest("3/20", 2, 20, 1)),  # a pickle's
        (b'{"snapshot": "4/20", "chunks": 2, "next_offset": 20}', None),  # another shard's name
        (b'{"snapshot": "3/20", "chunks": 0, "next_offset": 20}', None),
        (b'{"snapshot": "3/20", "chunks": 100001, "next_offset": 20}', None),
        (b'{"snapshot": "3/20", "chunks": true, "next_offset": 20}', None),
        (b'{"snapshot": "3/-1", "chunks": 1, "next_offset": -1}', None),
        (b'{"snapshot": "3/20", "chunks": "2", "next_offset": 20}', None),
        (b'{"snapshot": "3/20", "chunks": 2, "next_offset": 20, "format": "2"}', None),
        (b'{"snapshot": "3/20", "chunks": 2, "next_offset": 20, "format": 0}', None),
        (b"[1, 2]", None),
        (b"\xff", None),
    ],
)
def test_only_a_manifest_of_ours_is_taken(value: bytes, expected: Manifest | None) -> None:
    assert parse_manifest(value, 3) == expected


def test_snapshots_are_private_to_the_workers_user(tmp_path: Path) -> None:
    store, _ = _store(tmp_path)
    shard = Shard(0, EngineConfig())
    encoding = store.encode_aside({0: shard.state})
    assert [s for s, _ in results(encoding)] == [0]
    store.directory.chmod(0o755)
    path = store.directory / "shard-0.state"
    path.write_bytes(b"old")
    path.chmod(0o644)
    store._make_directory()
    with private_file(path) as handle:
        handle.write(b"new")
    assert (store.directory.stat().st_mode & 0o777, path.stat().st_mode & 0o777) == (0o700, 0o600)
    assert path.read_bytes() == b"new"


def test_the_state_key_is_a_setting_kept_out_of_reprs() -> None:
    settings = Settings.from_env({"REVPULSE_STATE_KEY": KEY})
    assert settings.state_key == KEY and KEY not in repr(settings)
    assert Settings.from_env({}).state_key is None
    with pytest.raises(SettingsError, match="REVPULSE_STATE_KEY: must be at least 32 characters") as raised:
        Settings.from_env({"REVPULSE_STATE_KEY": "short-secret"})
    assert "short-secret" not in str(raised.value)


_COPY = """
import os, time
from revpulse.agents.snapshots import _die_with
worker = os.getpid()
pid = os.fork()
if pid == 0:
    _die_with(worker)
    time.sleep(60)
    os._exit(0)
print(pid, flush=True)
time.sleep(60)
"""


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def test_a_forked_copy_dies_with_its_worker() -> None:
    """A worker killed (-9) takes its snapshot copy with it: no copy goes on writing into its data dir."""
    worker = subprocess.Popen([sys.executable, "-c", _COPY], stdout=subprocess.PIPE)
    assert worker.stdout is not None
    copy = int(worker.stdout.readline())
    assert _alive(copy)
    worker.kill()
    worker.wait()
    deadline = time.monotonic() + 5
    while _alive(copy):
        assert time.monotonic() < deadline, "the copy outlived its worker"
        time.sleep(0.05)


def test_a_restored_shard_is_sized_by_the_snapshot_it_came_from(tmp_path: Path) -> None:
    store, _ = _store(tmp_path)
    state = _shard_with_signups().state
    blob = store.encode(0, state)
    store._make_directory()
    (store.directory / "shard-0.state").write_bytes(blob)
    assert _restore(store, {}) is not None
    assert store.policy.sizes == {0: len(blob)}
    assert store.policy.inline(0), "a small restored shard's first snapshot is encoded in the worker"

    from_topic, _ = _store(tmp_path / "elsewhere")
    assert _restore(from_topic, _on_topic(state, from_topic)) is not None
    assert from_topic.policy.sizes == {0: len(blob)}
