"""The rollup agent: reads every shard's partials (all partitions, no consumer group) into the global ledger,
so this worker serves global values. Partials of shards this worker owns arrive directly from its shard agent;
their echo on the topic is older or equal, so it is skipped: a partition written only by shards owned here is
not even fetched (paused) until one of them goes to another worker, and then read on from after the last
partial this worker wrote to it.

Once caught up it checkpoints the rollup in the data dir (`rollup_codec`), with the offsets it covers, every
snapshot interval but at most once a minute (encoding it holds the loop: 0.3 s for 400 days of history), and
when the worker stops; a restart takes the checkpoint and reads on from there. A topic that ends before a
checkpoint's offset, or delivers a record from before it, is not the one it read (re-created): the rollup starts
over. It decides that as it starts, before this worker's shards start: they feed the rollup directly, and what
they gave it must not be thrown away with the checkpoint."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from revpulse.agents.base import BatchAgent, Batches, topic_partitions
from revpulse.agents.snapshots import private_file
from revpulse.settings import Settings
from revpulse.streams.rollup import Pending, Rollup
from revpulse.streams.rollup_codec import decode_rollup, encode_rollup
from revpulse.streams.state_codec import SnapshotError
from revpulse.streams.wire import WireError, parse_partial
from revpulse.topics import partials_topic

log = logging.getLogger(__name__)

CHECKPOINT_EVERY = 60.0  # seconds, at least
CHECK_TIMEOUT = 30.0  # seconds to learn whether the topic reaches a checkpoint's offsets


class RollupAgent(BatchAgent):
    def __init__(
        self,
        settings: Settings,
        rollup: Rollup,
        owned: Callable[[int], bool],
        on_skip: Callable[[str, str], None] = lambda role, reason: None,
        written: Callable[[int], int] = lambda partition: 0,
        **kwargs: Any,
    ) -> None:
        super().__init__(settings, [partials_topic(settings)], None, **kwargs)
        self.rollup = rollup
        self.owned = owned
        self.written = written  # partition -> the offset after the last partial this worker's shards wrote to it
        self.on_skip = on_skip  # (topic role, reason) of a record skipped as invalid
        self.max_batch = 50_000
        self.caught_up = False
        self.path = Path(settings.data_dir) / settings.app_id / "rollup.state"
        self.key = settings.state_key.encode() if settings.state_key else None
        self._saved_at = time.monotonic()
        self._applied: dict[int, int] = {}  # partition -> the offset after the last record applied (or skipped)

    async def on_start(self) -> None:
        await super().on_start()
        assert self.consumer is not None
        tps = await topic_partitions(self.consumer, self.topics[0])
        positions = self._restore(len(tps))
        if positions and not await self._reaches(positions):
            log.warning("the partials topic is not the one the rollup checkpoint read: reading it from the start")
            self.path.unlink(missing_ok=True)
            vars(self.rollup).update(vars(Rollup()))
            await self.consumer.seek_to_beginning(*tps)
            positions = None
        if positions:
            for tp in tps:
                self.consumer.seek(tp, positions[tp.partition])
            self._applied = dict(positions)

    async def on_stop(self) -> None:
        if self.caught_up and self.consumer is not None:
            await self._checkpoint()
        await super().on_stop()

    def _restore(self, partitions: int) -> dict[int, int] | None:
        """Fill the (empty) rollup from the checkpoint, if there is one to trust; the offsets it covers."""
        try:
            blob = self.path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            log.warning("rollup checkpoint %s unreadable (%r): reading the partials from the start", self.path, exc)
            return None
        try:
            restored, positions = decode_rollup(blob, self.settings.shards, partitions, self.key)
        except SnapshotError as exc:
            log.warning("rollup checkpoint %s refused (%s): reading the partials from the start", self.path, exc)
            self.on_skip("partials", "invalid_checkpoint")
            return None
        vars(self.rollup).update(vars(restored))
        log.info("rollup restored from its checkpoint; reading the partials on from %s", positions)
        return positions

    async def _reaches(self, positions: dict[int, int]) -> bool:
        """Whether every partition reaches the checkpoint's offset of it, as a fetch there shows: one that ends
        before it, or is read from before it (the consumer's reset when the offset is past the end), is of
        another topic. Undecided in CHECK_TIMEOUT counts as another: reading from the start is only slower."""
        assert self.consumer is not None
        waiting = {tp for tp in self.consumer.assignment() if positions.get(tp.partition, 0) > 0}
        for tp in waiting:
            self.consumer.seek(tp, positions[tp.partition])
        deadline = time.monotonic() + CHECK_TIMEOUT
        while waiting and time.monotonic() < deadline:
            batches = await self.consumer.getmany(*waiting, timeout_ms=200, max_records=1)
            if any(records and records[0].offset < positions[tp.partition] for tp, records in batches.items()):
                return False
            for tp in list(waiting):
                highwater = self.consumer.highwater(tp)
                if highwater is not None:
                    if highwater < positions[tp.partition]:
                        return False
                    waiting.discard(tp)
        return not waiting

    async def handle(self, batches: Batches) -> None:
        """Apply a batch of partials (called with empty batches too, until the reader has caught up)."""
        pending = Pending(self.rollup)
        for tp, records in batches.items():
            if records:
                self._applied[tp.partition] = records[-1].offset + 1
            if self._all_owned(tp.partition):
                continue  # only echoes: not worth decoding
            for record in records:
                try:
                    parsed = parse_partial(record.key, record.value, self.settings.shards)
                except WireError as exc:
                    # Every worker re-reads this topic from its start: a record that stopped the rollup once
                    # would stop it on every restart.
                    log.warning("partials partition %d offset %d skipped: %s", tp.partition, record.offset, exc)
                    self.on_skip("partials", "invalid_record")
                    continue
                if not self.owned(parsed[0]):
                    pending.add_record(parsed)
        pending.apply()
        self._follow_ownership()
        if not self.caught_up:
            self.caught_up = await self._at_end()
        elif time.monotonic() - self._saved_at >= max(self.settings.snapshot_interval, CHECKPOINT_EVERY):
            await self._checkpoint()

    def _follow_ownership(self) -> None:
        """Pause the partitions whose every shard is owned here (only echoes on them); resume one that no longer
        is, after this worker's own partials on it."""
        assert self.consumer is not None
        paused = self.consumer.paused()
        for tp in self.consumer.assignment():
            if self._all_owned(tp.partition):
                if tp not in paused:
                    self.consumer.pause(tp)
            elif tp in paused:
                self._applied[tp.partition] = self._position(tp.partition)
                self.consumer.seek(tp, self._applied[tp.partition])
                self.consumer.resume(tp)

    def _position(self, partition: int) -> int:
        """The offset after what was applied from a partition; for a paused one, after this worker's own writes,
        the echoes it would skip."""
        assert self.consumer is not None
        applied = self._applied.get(partition, 0)
        paused = any(tp.partition == partition for tp in self.consumer.paused())
        return max(applied, self.written(partition)) if paused else applied

    async def _checkpoint(self) -> None:
        assert self.consumer is not None
        self._saved_at = time.monotonic()
        # What was applied, not the consumer's position: a stop may come between a fetch and its handling.
        positions = {tp.partition: self._position(tp.partition) for tp in self.consumer.assignment()}
        blob = encode_rollup(self.rollup, positions, self.key)
        try:
            await asyncio.to_thread(_write, self.path, blob)
        except OSError as exc:
            log.warning("rollup checkpoint not written (%r); the next turn retries", exc)

    def _all_owned(self, partition: int) -> bool:
        """Whether every shard writing to this partition of the partials topic is owned here (the shard agent
        writes shard k's partials to partition k mod the partition count)."""
        assert self.consumer is not None
        partitions = len(self.consumer.assignment())
        return all(self.owned(shard) for shard in range(partition, self.settings.shards, partitions))

    async def _at_end(self) -> bool:
        assert self.consumer is not None
        paused = self.consumer.paused()  # only echoes of this worker's partials: nothing to catch up on
        for tp in self.consumer.assignment() - paused:
            highwater = self.consumer.highwater(tp)
            if highwater is None or await self.consumer.position(tp) < highwater:
                return False
        return True


def _write(path: Path, blob: bytes) -> None:
    """`blob` in `path`, whole or not at all, for the worker's user only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    saving = path.with_suffix(".saving")
    with private_file(saving) as handle:
        handle.write(blob)
        handle.flush()
        os.fsync(handle.fileno())
    saving.replace(path)
