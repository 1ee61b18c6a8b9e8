"""The shard agent: owns some partitions of the shard topic, applies their items to the shards' state, and
publishes dead letters and partial ledgers.

On assignment a shard is restored from its latest snapshot (this worker's data dir, else the snapshot topic)
and resumes at the offset the snapshot includes; with no snapshot it replays its partition from the start.
A replay writes no dead letter twice: the letters already on the dead-letter topic are read first.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from typing import Any

from aiokafka import TopicPartition
from mode import Service

from agents.base import BatchAgent, Batches, ProducerService, send_all
from agents.snapshots import SnapshotStore
from streams.engine import EngineConfig
from streams.outputs import Outcomes, Outputs
from streams.rollup import Rollup
from streams.settings import Settings
from streams.shards import DeadLetter, Shard, ShardState, decode_items

log = logging.getLogger(__name__)


class ShardAgent(BatchAgent):
    def __init__(
        self,
        settings: Settings,
        config: EngineConfig,
        producer: ProducerService,
        snapshots: SnapshotStore,
        rollup: Rollup,
        outputs: Outputs,
        **kwargs: Any,
    ) -> None:
        super().__init__(settings, [f"{settings.app_id}-shards"], f"{settings.app_id}-shards", **kwargs)
        self.config = config
        self.io = producer
        self.snapshots = snapshots
        self.rollup = rollup
        self.outputs = outputs
        self.partials_topic = f"{settings.app_id}-partials"
        self.shards: dict[int, Shard] = {}
        self.catching_up: dict[int, int] = {}  # shard -> committed offset it has not reached yet
        self.letters_written: set[tuple[str, int, int, bytes]] | None = None
        self._parked: dict[int, ShardState] = {}
        self._lock = asyncio.Lock()  # a rebalance waits for the batch in flight
        self._snapshotted: dict[int, int] = {}  # shard -> next_offset of its last snapshot

    @property
    def ready(self) -> bool:
        return self.assigned and not self.catching_up

    def outcomes(self) -> Outcomes:
        return sum((shard.state.outcomes for shard in self.shards.values()), Counter())

    async def on_assigned(self, partitions: set[TopicPartition]) -> None:
        assert self.consumer is not None
        async with self._lock:
            committed = {tp.partition: await self.consumer.committed(tp) or 0 for tp in partitions}
            # A shard parked at the last revocation is still exact if nobody committed past it since.
            reused = {
                shard: state
                for shard, state in self._parked.items()
                if shard in committed and committed[shard] <= state.next_offset
            }
            self._parked.clear()
            missing = {p: offset for p, offset in committed.items() if p not in self.shards and p not in reused}
            restored = await self.snapshots.load(missing) if missing else {}
            if missing or self.letters_written is None:
                # Another worker may have written letters this replay would write again.
                self.letters_written = await self.snapshots.dead_letters_written()
            for tp in partitions:
                shard = self.shards.get(tp.partition)
                if shard is None:
                    state = reused.get(tp.partition) or restored.get(tp.partition)
                    shard = self.shards[tp.partition] = Shard(tp.partition, self.config, state)
                    if state is not None:
                        self._snapshotted[shard.id] = state.next_offset
                    await self._publish([], shard.id, shard.all_partials())
                self.consumer.seek(tp, shard.state.next_offset)
                if committed[tp.partition] > shard.state.next_offset:
                    self.catching_up[tp.partition] = committed[tp.partition]
            log.info("shards: own %s, catching up %s", sorted(self.shards), sorted(self.catching_up))
            self.assigned = True

    async def on_revoked(self, partitions: set[TopicPartition]) -> None:
        """Waits for the batch in flight, then snapshots and parks the shards that leave."""
        async with self._lock:
            for tp in partitions:
                shard = self.shards.pop(tp.partition, None)
                self.catching_up.pop(tp.partition, None)
                if shard is not None:
                    if self._snapshotted.get(shard.id) != shard.state.next_offset:
                        await self.snapshots.save(shard.id, shard.state)
                    self._snapshotted.pop(shard.id, None)
                    self._parked[shard.id] = shard.state

    async def handle(self, batches: Batches) -> None:
        async with self._lock:
            commits: dict[TopicPartition, int] = {}
            for tp, records in batches.items():
                shard = self.shards.get(tp.partition)
                if shard is None:
                    continue
                items = [item for record in records for item in decode_items(record.value)]
                output = shard.apply(items, records[-1].offset + 1)
                self.outputs.pending_arrivals.extend(output.arrivals)
                await self._publish(output.dead, shard.id, output.partials)
                commits[tp] = shard.state.next_offset
                until = self.catching_up.get(shard.id)
                if until is not None and shard.state.next_offset >= until:
                    del self.catching_up[shard.id]
            await self.commit(commits)

    @Service.task
    async def _snapshot_periodically(self) -> None:
        """Snapshot, every interval, each owned shard that applied something since its last snapshot."""
        while not self.should_stop:
            await self.sleep(self.settings.snapshot_interval)
            async with self._lock:
                for shard in list(self.shards.values()):
                    if self._snapshotted.get(shard.id) != shard.state.next_offset:
                        await self.snapshots.save(shard.id, shard.state)
                        self._snapshotted[shard.id] = shard.state.next_offset

    async def _publish(self, dead: list[DeadLetter], shard: int, partials: dict[tuple[str, str, int], int]) -> None:
        """Dead letters not yet on the topic, then the partials; the rollup of this worker takes them at once."""
        assert self.letters_written is not None
        fresh = [letter for letter in dead if letter.identity not in self.letters_written]
        records: list[tuple[str, int | None, bytes | None, bytes | None, Any]] = [
            (self.settings.topics.deadletter, None, None, letter.payload, letter.headers) for letter in fresh
        ]
        records += [
            (self.partials_topic, None, partial_key(shard, key), str(value).encode() if value else None, None)
            for key, value in partials.items()
        ]
        await send_all(self.io.producer, records)
        self.letters_written.update(letter.identity for letter in fresh)
        # This worker's rollup takes its own shards' partials directly (and ignores their echo on the topic).
        self.rollup.update(shard, partials)


def partial_key(shard: int, key: tuple[str, str, int]) -> bytes:
    quantity, segment, hour = key
    return f"{shard}|{quantity}|{segment}|{hour}".encode()


def parse_partial(key: bytes, value: bytes | None) -> tuple[int, tuple[str, str, int], int]:
    shard, quantity, segment, hour = key.decode().split("|")
    return int(shard), (quantity, segment, int(hour)), int(value) if value else 0
