"""Durable shard state: snapshots in the data dir and on a snapshot topic, each with the offset it includes.

A snapshot is the whole `ShardState` (engine, applied source positions, outcome counts, next offset), taken
between batches, so it is exactly the state after its offset: restoring it and resuming there applies every
later item once. The data-dir copy makes a restart cheap; the topic copy (chunked, under a manifest written
last) lets a worker on a new machine, or one whose data dir was lost, rebuild without replaying from zero.

Anybody who can write to the snapshot topic or the data dir can put bytes there, so a snapshot is data only
(`revpulse.streams.state_codec`: versioned JSON, checksummed, signed with REVPULSE_STATE_KEY when it is set) and
is checked throughout when read; nothing in it can run code. One that fails (a crafted record on the topic, an
altered file) is logged, counted in revpulse_internal_records_skipped_total{role="snapshots"} and ignored: the
shard comes from the other copy, else is rebuilt from the shard topic. Snapshots of versions before format 2
were pickles: they are never read (a pickle can run code), the shard rebuilds instead, and the data dir's old
`shard-N.pickle` is deleted.

The topic copy stays bounded. On a broker that compacts (REVPULSE_INTERNAL_RETENTION=compact, the default: Apache
Kafka, managed Kafka), one topic holds them and each new snapshot tombstones the previous one's chunks. On a
broker that compacts nothing (`rotate`, the embedded broker: every record stays in its memory), each snapshot is
written to a topic of its own (`topics.snapshot_generation`) and the shard's older ones are deleted once it is
complete, so the broker holds about one snapshot per shard however long the deployment runs.

A large shard's periodic snapshots are encoded by a forked copy of the worker (`encode_aside`): the copy sees
the state as it was at the fork, copy-on-write, while the worker goes on with its batches. Encoding a shard of
100k events' state takes about a third of a second, and in the worker itself that was a third of a second of
every event's metrics waiting (the latency p99). But a copy costs memory: every page either process writes
while it runs is paid twice, and reading a Python object writes to its page (its reference count). A copy
that read a few MiB of state spread over the heap copied about half the worker's memory. So a shard whose
snapshot is expected to take at most `INLINE_SECONDS` to encode is encoded in the worker, under its lock
(`InlinePolicy`, `encode_here`).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
import itertools
import logging
import os
import signal
import tempfile
import time
import traceback
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Final, NamedTuple

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from revpulse.agents.base import ProducerService, scan_topic, send_all
from revpulse.kafka_security import client_options, producer_options
from revpulse.settings import Settings
from revpulse.streams.engine import AccountStore, EngineConfig
from revpulse.streams.partition import ShardState
from revpulse.streams.state_codec import FORMAT, SnapshotError, decode_state, encode_state, read_state, write_state
from revpulse.topics import snapshot_generation, snapshot_generations, snapshot_topic

log = logging.getLogger(__name__)

LEGACY_FORMAT = 1  # the pickles of versions before `state_codec`: a manifest without "format" names one

CHUNK_BYTES = 512 * 1024
CHUNKS_IN_FLIGHT = 16  # chunks read and sent at a time
ENCODING_POLL = 0.01  # seconds between checks whether a forked encoding has finished
# The copy yields the CPU to the worker it was forked from: the worker's batches are what the latency waits on.
ENCODING_NICENESS = 19


@dataclass(frozen=True)
class Encoding:
    """Snapshots being encoded by a forked copy of the worker, one file per shard."""

    pid: int
    paths: dict[int, Path]  # shard -> the file its snapshot is encoded into
    stores: list[AccountStore]  # whose arenas the copy reads (see `AccountStore.holds`)
    timings: int  # the read end of a pipe (non-blocking): the copy writes {shard: [bytes, CPU seconds]} to it
    policy: InlinePolicy  # learns how long each shard took
    received: bytearray = field(default_factory=bytearray)  # read from `timings` so far

    async def results(self) -> AsyncIterator[tuple[int, Path]]:
        """(shard, file of its snapshot) once the copy is done; nothing, logged, if the copy failed. A file not
        taken away (`SnapshotStore.write` moves it) is deleted after."""
        try:
            while True:
                self._drain()  # a copy of many shards writes more than a pipe holds: it would wait for this
                pid, status = os.waitpid(self.pid, os.WNOHANG)
                if pid:
                    break
                await asyncio.sleep(ENCODING_POLL)
            self._drain()
            _copies.discard(self.pid)
            for store in self.stores:
                store.holds -= 1
            code = os.waitstatus_to_exitcode(status)
            if code != 0:
                log.error("snapshot encoding process %d failed (exit status %d); the next turn retries", pid, code)
                return
            for shard, (size, seconds) in parse_timings(bytes(self.received), self.paths).items():
                self.policy.encoded(shard, size, seconds)
            for shard, path in self.paths.items():
                yield shard, path
        finally:
            os.close(self.timings)
            for path in self.paths.values():
                path.unlink(missing_ok=True)

    def _drain(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while part := os.read(self.timings, 1 << 16):
                self.received.extend(part)


def parse_timings(data: bytes, paths: Mapping[int, Path]) -> dict[int, tuple[int, float]]:
    """(bytes, CPU seconds) by shard, of the shards in `paths`, from what a copy wrote to its timings pipe."""
    try:
        timings = orjson.loads(data)
    except orjson.JSONDecodeError:
        return {}
    out = {}
    for shard in paths:
        timing = timings.get(str(shard)) if isinstance(timings, dict) else None
        if not (isinstance(timing, list) and len(timing) == 2):
            continue
        size, seconds = timing
        if _count(size, 0, 2**63 - 1) and isinstance(seconds, float) and 0 <= seconds < 1e9:
            out[shard] = (size, seconds)
    return out


# The longest a shard's batches may wait for its snapshot to be encoded in the worker, and the snapshot size first
# assumed to take that long (about the speed of an account-heavy shard here); longer ones are encoded aside. At
# 50 ms the growth book's 0.9 MB shards (30-46 ms each) went to a copy in the machine's slower hours, and the copy
# cost about 70 MiB at the peak of its 720-day read; a tenth of a second once an interval is far inside the p99.
INLINE_SECONDS: Final = 0.1
INLINE_BYTES: Final = 2 << 20


@dataclass
class InlinePolicy:
    """Decides, per shard, whether its next snapshot is encoded in the worker: when its last snapshot's size at
    the speed its last encoding went (INLINE_BYTES per INLINE_SECONDS before one) would take at most
    INLINE_SECONDS. A shard with no snapshot yet is encoded aside: its size is unknown. A restored shard's size
    is that of the snapshot it came from (which may hold a million accounts).

    Speeds are CPU seconds of the encoding thread, in the worker or in a copy alike: a wall-clock time would
    count the broker's and the copy's turns on the CPU as the snapshot's, and one encoding that came out slow
    would have sent its shard aside for good (a copy's wall time, at niceness 19, says nothing), with the copy's
    memory paid at every snapshot after."""

    budget: float = INLINE_SECONDS
    first_guess: float = INLINE_SECONDS / INLINE_BYTES  # seconds a byte, until measured
    sizes: dict[int, int] = field(default_factory=dict)  # shard -> bytes of its last snapshot
    speeds: dict[int, float] = field(default_factory=dict)  # shard -> seconds a byte, its last encoding

    def inline(self, shard: int) -> bool:
        size = self.sizes.get(shard)
        return size is not None and size * self.speeds.get(shard, self.first_guess) <= self.budget

    def written(self, shard: int, size: int) -> None:
        self.sizes[shard] = size

    def encoded(self, shard: int, size: int, seconds: float) -> None:
        self.sizes[shard] = size
        self.speeds[shard] = seconds / max(size, 1)


_PR_SET_PDEATHSIG: Final = 1
_copies: set[int] = set()  # the pids of this worker's copies still encoding


def copy_running() -> bool:
    """Whether a forked copy is encoding: what the worker writes meanwhile is paid twice (copy-on-write)."""
    return bool(_copies)


def _die_with(parent: int) -> None:
    """Have this forked copy killed when the worker dies (Linux), so that no copy outlives a killed worker,
    writing into a data dir that may be wiped or taken by a new worker meanwhile."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the worker died before the request took effect
        os._exit(1)


def private_file(path: Path) -> BinaryIO:
    """`path` opened for writing from empty, readable and writable by the worker's user only."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(descriptor, 0o600)  # an existing file keeps its mode through O_CREAT
    return os.fdopen(descriptor, "wb")


# More chunks than this in a manifest is not one of ours (at CHUNK_BYTES each, a 50 GB snapshot).
MAX_CHUNKS = 100_000


class Restored(NamedTuple):
    """A shard's state as a snapshot held it, and the snapshot's size in bytes (for `InlinePolicy`)."""

    state: ShardState
    size: int


class Manifest(NamedTuple):
    snapshot: str  # "<shard>/<next offset>", the prefix of its chunks' keys
    chunks: int
    next_offset: int
    format: int  # state_codec.FORMAT, or another version's (LEGACY_FORMAT: a pickle), which is never read


def _count(value: object, low: int, high: int) -> bool:
    return type(value) is int and low <= value <= high


def parse_manifest(value: bytes, shard: int) -> Manifest | None:
    """The manifest written for `shard` in `value`; None for anything else."""
    try:
        manifest = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(manifest, dict):
        return None
    snapshot, chunks, next_offset = manifest.get("snapshot"), manifest.get("chunks"), manifest.get("next_offset")
    version = manifest.get("format", LEGACY_FORMAT)
    if not (
        _count(chunks, 1, MAX_CHUNKS)
        and _count(next_offset, 0, 2**63 - 1)
        and _count(version, 1, 2**16 - 1)
        and snapshot == f"{shard}/{next_offset}"
    ):
        return None
    return Manifest(snapshot, chunks, next_offset, version)


class SpilledValues(Mapping[bytes, bytes]):
    """The latest value of every key of a topic, the values in a temporary file: a snapshot topic holds whole
    snapshots, which in memory would cost their size again beside the state restored from them."""

    def __init__(self, directory: Path) -> None:
        self._file = tempfile.TemporaryFile(dir=directory)  # noqa: SIM115 (closed by `close`, which owners call)
        self._where: dict[bytes, tuple[int, int]] = {}  # key -> (offset, length) of its value in the file

    def put(self, key: bytes, value: bytes | None) -> None:
        """A record of the topic, in order: a tombstone (None) drops the key."""
        if value is None:
            self._where.pop(key, None)
            return
        offset = self._file.seek(0, os.SEEK_END)
        self._file.write(value)
        self._where[key] = (offset, len(value))

    def __getitem__(self, key: bytes) -> bytes:
        offset, length = self._where[key]
        self._file.seek(offset)
        return self._file.read(length)

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._where)

    def __len__(self) -> int:
        return len(self._where)

    def close(self) -> None:
        self._file.close()


class SnapshotStore:
    def __init__(
        self,
        settings: Settings,
        config: EngineConfig,
        producer: ProducerService,
        on_skip: Callable[[str, str], None] = lambda role, reason: None,
    ) -> None:
        self.settings = settings
        # (topic role, reason) of an internal record skipped as invalid; a data-dir file counts as role snapshots
        self.on_skip = on_skip
        self.key = settings.state_key.encode() if settings.state_key else None
        self.config = config
        self.io = producer
        self.directory = Path(settings.data_dir) / settings.app_id
        self.topic = snapshot_topic(settings)
        self._topic_chunks: dict[int, list[bytes]] = {}  # shard -> chunk keys of its latest snapshot on the topic
        self._writing = asyncio.Lock()
        self._written: dict[int, int] = {}  # shard -> next_offset of its newest snapshot written
        self.policy = InlinePolicy()
        self._saving = itertools.count()  # numbers the files snapshots are encoded into in this process
        self._swept = False

    def _path(self, shard: int) -> Path:
        return self.directory / f"shard-{shard}.state"

    def _legacy_path(self, shard: int) -> Path:
        return self.directory / f"shard-{shard}.pickle"

    async def save(self, shard: int, state: ShardState) -> None:
        """Snapshot `state` now, in this process (while nothing changes it: under the shard lock)."""
        await self.write(shard, state.next_offset, self.encode_here(shard, state))

    def encode_here(self, shard: int, state: ShardState) -> Path:
        """Encode a snapshot of `state` in this process, into a file for `write` (call it while nothing changes
        the state: under the shard lock); the CPU time it took goes to the policy."""
        self._make_directory()
        # A name of its own: a handover's snapshot can be encoded while a periodic one waits to be written.
        path = self.directory / f"shard-{shard}.{os.getpid()}.{next(self._saving)}.saving"
        started = time.thread_time()
        try:
            with private_file(path) as handle:
                write_state(handle, state, shard, self.key)
                size = handle.tell()
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        self.policy.encoded(shard, size, time.thread_time() - started)
        return path

    def encode(self, shard: int, state: ShardState) -> bytes:
        """A snapshot's bytes, taken while nothing changes the state."""
        return encode_state(state, shard, self.key)

    def decode(self, shard: int, blob: bytes) -> ShardState:
        """The state in a snapshot of `shard`, with this worker's engine settings; SnapshotError if it is not one
        this worker wrote (or, with a key, one signed with it)."""
        return decode_state(blob, shard, self.config, self.key)

    def encode_aside(self, states: dict[int, ShardState]) -> Encoding:
        """Start encoding snapshots of `states` (by shard) in a forked copy of this process; it encodes them as
        they are now, whatever the worker changes after this returns (the caller holds the shard lock only for
        the fork). One copy for all shards: each fork costs the worker copy-on-write faults for a while."""
        self._make_directory()
        paths = {shard: self.directory / f"shard-{shard}.encoding" for shard in states}
        stores = [state.engine.accounts for state in states.values()]
        worker = os.getpid()
        timings, report = os.pipe()
        try:
            pid = os.fork()
        except OSError:
            os.close(timings)
            os.close(report)
            raise
        if pid == 0:
            status = 1
            try:
                _die_with(worker)
                gc.disable()  # a collection would touch, and so copy, pages of the whole heap
                os.close(timings)
                os.nice(ENCODING_NICENESS)
                took = {}
                for shard, state in states.items():
                    started = time.thread_time()
                    with private_file(paths[shard]) as handle:
                        write_state(handle, state, shard, self.key)
                        took[shard] = (handle.tell(), time.thread_time() - started)
                        # Synced here, off the worker's loop: `_write` syncs it again, then with nothing to write.
                        handle.flush()
                        os.fsync(handle.fileno())
                with os.fdopen(report, "wb") as out:  # the worker reads it as it waits (`Encoding.results`)
                    out.write(orjson.dumps(took, option=orjson.OPT_NON_STR_KEYS))
                status = 0
            except BaseException:
                traceback.print_exc()
            finally:
                os._exit(status)  # none of the worker's exit handlers, buffers or connections are the copy's
        os.close(report)
        os.set_blocking(timings, False)
        # Held from the fork on (nothing wrote the arena in between): the copy reads the arena as it was then.
        for store in stores:
            store.holds += 1
        _copies.add(pid)
        return Encoding(pid, paths, stores, timings, self.policy)

    def _make_directory(self) -> None:
        """The data dir holds the revenue state: only the worker's user may read it. Snapshots an earlier process
        was encoding when it stopped are deleted, once."""
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.directory.chmod(0o700)
        if not self._swept:
            mine = f".{os.getpid()}."
            for stale in self.directory.glob("shard-*.saving"):
                if mine not in stale.name:
                    stale.unlink(missing_ok=True)
            self._swept = True

    async def write(self, shard: int, next_offset: int, path: Path) -> None:
        """Store the snapshot in file `path` (written and synced; it is moved, or deleted) as the data dir's copy
        and on the topic; writes go one at a time, in the order asked, and one older than a snapshot already
        written (an encoding that finished late) is dropped."""
        try:
            async with self._writing:
                if next_offset < self._written.get(shard, -1):
                    return
                await self._write(shard, next_offset, path)
                self._written[shard] = next_offset
        finally:
            path.unlink(missing_ok=True)

    async def _write(self, shard: int, next_offset: int, path: Path) -> None:
        self._make_directory()
        final = self._path(shard)
        with path.open("rb") as handle:
            os.fchmod(handle.fileno(), 0o600)  # the revenue state: the worker's user only
            os.fsync(handle.fileno())
        path.replace(final)
        snapshot = f"{shard}/{next_offset}"
        size = final.stat().st_size
        self.policy.written(shard, size)
        count = max(1, -(-size // CHUNK_BYTES))
        keys = [f"{snapshot}/{i}".encode() for i in range(count)]
        manifest = orjson.dumps({"snapshot": snapshot, "chunks": count, "next_offset": next_offset, "format": FORMAT})
        if self.settings.internal_retention == "rotate":
            await self._write_generation(shard, next_offset, keys, final, manifest)
            return
        await self._send_chunks(self.io.producer, self.topic, keys, final)
        await send_all(self.io.producer, [(self.topic, 0, f"{shard}".encode(), manifest, None)])
        # The previous snapshot's chunks are dead now: tombstones let a compacting broker drop them.
        stale = [key for key in self._topic_chunks.get(shard, []) if key not in keys]
        await send_all(self.io.producer, [(self.topic, 0, key, None, None) for key in stale])
        self._topic_chunks[shard] = keys

    @staticmethod
    async def _send_chunks(producer: AIOKafkaProducer, topic: str, keys: list[bytes], path: Path) -> None:
        """The file's chunks under `keys`, read and sent a few at a time: a snapshot is never held whole."""
        with path.open("rb") as handle:
            for start in range(0, len(keys), CHUNKS_IN_FLIGHT):
                group = keys[start : start + CHUNKS_IN_FLIGHT]
                await send_all(producer, [(topic, 0, key, handle.read(CHUNK_BYTES), None) for key in group])

    async def _write_generation(
        self, shard: int, next_offset: int, keys: list[bytes], path: Path, manifest: bytes
    ) -> None:
        """The snapshot into a topic of its own, then the shard's older generations deleted: a reader finds this
        one complete or an older one (deleted only after this one is written), never neither."""
        topic = snapshot_generation(self.settings, shard, next_offset)
        admin = AIOKafkaAdminClient(**client_options(self.settings))
        await admin.start()
        try:
            # Already there: the same snapshot written again (its offset names it), with the same records.
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics([NewTopic(topic, 1, self.settings.replication_factor)])
            # A producer of its own: a producer keeps asking for the metadata of every topic it has sent to, and
            # a broker that creates topics on demand would bring a deleted generation back.
            producer = AIOKafkaProducer(**producer_options(self.settings), max_batch_size=CHUNK_BYTES * 2, acks="all")
            await producer.start()
            try:
                await self._send_chunks(producer, topic, keys, path)
                await send_all(producer, [(topic, 0, f"{shard}".encode(), manifest, None)])
            finally:
                await producer.stop()
            generations = snapshot_generations(self.settings, await admin.list_topics()).get(shard, [])
            stale = [name for offset, name in generations if offset < next_offset]
            if stale:
                await admin.delete_topics(stale)
        finally:
            await admin.close()

    async def load(self, committed: dict[int, int]) -> dict[int, ShardState | None]:
        """The newest snapshot of each shard (given the offset committed for it): the data dir's when it is at
        least as far as the commit, else whichever of the data dir and the snapshot topic includes more."""
        local = {shard: self._load_local(shard) for shard in committed}
        behind = [s for s, found in local.items() if found is None or found.state.next_offset < committed[s]]
        rotated = self.settings.internal_retention == "rotate"
        topic = await self._topic_values(self.topic) if behind and not rotated else None
        generations = await self._generations() if behind and rotated else {}
        restored: dict[int, ShardState | None] = {}
        try:
            for shard, found in local.items():
                after = found.state.next_offset if found else -1
                remote = None
                if shard in behind and rotated:
                    remote = await self._from_generations(generations.get(shard, []), shard, after=after)
                elif shard in behind and topic is not None:
                    remote = self._from_topic(topic, shard, after=after)
                chosen = remote if remote is not None else found
                if chosen is not None:
                    source = "snapshot topic" if remote is not None else "data dir"
                    log.info("shard %d: restored at offset %d from the %s", shard, chosen.state.next_offset, source)
                    # Sized now, a small restored shard's first snapshot is encoded in the worker, not in a copy.
                    self.policy.written(shard, chosen.size)
                else:
                    log.info("shard %d: no snapshot to restore, rebuilt from the shard topic", shard)
                restored[shard] = chosen.state if chosen is not None else None
        finally:
            if topic is not None:
                topic.close()
        return restored

    def _load_local(self, shard: int) -> Restored | None:
        legacy = self._legacy_path(shard)
        if legacy.is_file():
            # Rebuilding is exact and a pickle can run code: it is not read, whoever wrote it.
            log.warning("shard %d: %s is a snapshot of an earlier version (a pickle): deleted, not read", shard, legacy)
            legacy.unlink(missing_ok=True)
        path = self._path(shard)
        if not path.is_file():
            return None
        try:
            with path.open("rb") as handle:
                return self._read(handle, shard)
        except SnapshotError as exc:
            self.on_skip("snapshots", "invalid_file")
            log.warning("shard %d: snapshot %s rejected, ignored: %s", shard, path, exc)
        except Exception:
            self.on_skip("snapshots", "invalid_file")
            log.exception("shard %d: unreadable snapshot %s, ignored", shard, path)
        return None

    def _read(self, handle: BinaryIO, shard: int) -> Restored:
        """The snapshot `handle` holds (a file), read from its start, and its size."""
        state = read_state(handle, shard, self.config, self.key)
        return Restored(state, handle.seek(0, os.SEEK_END))

    async def _generations(self) -> dict[int, list[tuple[int, str]]]:
        admin = AIOKafkaAdminClient(**client_options(self.settings))
        await admin.start()
        try:
            return snapshot_generations(self.settings, await admin.list_topics())
        finally:
            await admin.close()

    async def _from_generations(self, generations: list[tuple[int, str]], shard: int, *, after: int) -> Restored | None:
        """The newest snapshot generation of `shard` that is complete and valid, if it includes more than `after`.
        A topic named like a generation is anybody's: one whose snapshot is not ours is skipped, counted."""
        for offset, topic in generations:
            if offset <= after:
                break
            values = await self._topic_values(topic)
            try:
                found = self._from_topic(values, shard, after=after)
            finally:
                values.close()
            if found is not None and found.state.next_offset == offset:
                return found
            if found is not None:
                self.on_skip("snapshots", "invalid_snapshot")
                log.warning("shard %d: snapshot topic %s holds offset %d", shard, topic, found.state.next_offset)
        return None

    async def _topic_values(self, topic: str) -> SpilledValues:
        """The latest value of every key on a snapshot topic (the caller closes it). Read as a stream: where the
        broker does not compact, the topic holds every snapshot ever written, but a chunk replaced by a tombstone
        is dropped as soon as the tombstone is read, so the spill holds the live snapshots only."""
        self._make_directory()
        values = SpilledValues(self.directory)
        try:
            async for record in scan_topic(self.settings, topic):
                if record.key is None:
                    self.on_skip("snapshots", "invalid_record")
                    continue
                values.put(record.key, record.value)
        except BaseException:
            values.close()
            raise
        return values

    def _from_topic(self, values: Mapping[bytes, bytes | None], shard: int, *, after: int) -> Restored | None:
        """The topic's latest complete snapshot of `shard`, if it includes more than offset `after`. Anybody who
        can write to the topic can write there: a record that is not a manifest of ours is skipped, counted."""
        manifest_value = values.get(f"{shard}".encode())
        if manifest_value is None:
            return None
        manifest = parse_manifest(manifest_value, shard)
        if manifest is None:
            self.on_skip("snapshots", "invalid_manifest")
            log.warning(
                "shard %d: the snapshot topic's manifest is not valid, ignored: %r", shard, manifest_value[:200]
            )
            return None
        snapshot, chunk_count, next_offset, version = manifest
        if next_offset <= after:
            return None
        keys = [f"{snapshot}/{i}".encode() for i in range(chunk_count)]
        # Read or not, these chunks are the topic's latest of the shard: the next snapshot written tombstones them.
        self._topic_chunks[shard] = [key for key in keys if key in values]
        if version != FORMAT:
            log.warning(
                "shard %d: snapshot %s on the topic is of format %d (%s), not read",
                shard,
                snapshot,
                version,
                "a pickle of an earlier version" if version == LEGACY_FORMAT else f"this version reads {FORMAT}",
            )
            return None
        if any(key not in values for key in keys):
            log.warning("shard %d: snapshot %s on the topic is incomplete, ignored", shard, snapshot)
            return None
        self._make_directory()
        try:
            # Put together in a file, a chunk at a time, and read from there: never whole in memory.
            with tempfile.TemporaryFile(dir=self.directory) as assembled:
                for key in keys:
                    assembled.write(values.get(key) or b"")
                assembled.seek(0)
                found = self._read(assembled, shard)
        except SnapshotError as exc:
            self.on_skip("snapshots", "invalid_snapshot")
            log.warning("shard %d: snapshot %s on the topic rejected, ignored: %s", shard, snapshot, exc)
            return None
        except Exception:
            self.on_skip("snapshots", "invalid_snapshot")
            log.exception("shard %d: unreadable snapshot %s on the topic, ignored", shard, snapshot)
            return None
        if found.state.next_offset != next_offset:
            self.on_skip("snapshots", "invalid_snapshot")
            log.warning(
                "shard %d: snapshot %s holds offset %d, not its manifest's", shard, snapshot, found.state.next_offset
            )
            return None
        return found
