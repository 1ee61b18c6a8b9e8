"""The shard agent: owns some partitions of the shard topic, applies their items to the shards' state, and
publishes dead letters and partial ledgers.

On assignment a shard resumes from the state this worker holds for it (a standby replica, or the state it
had when the shard was last revoked from it), else from its latest snapshot (this worker's data dir, else the
snapshot topic), at the offset that state includes; with neither it replays its partition from the start.
Catching up writes no dead letter twice: the letters already on the dead-letter topic are read first.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.errors import ConsumerStoppedError
from mode import Service

from revpulse.agents.base import MAX_BATCH, BatchAgent, Batches, OutRecord, ProducerService, consumer, send_all
from revpulse.agents.letters import WrittenLetters
from revpulse.agents.local_path import LocalPath, Plan
from revpulse.agents.snapshots import SnapshotStore
from revpulse.agents.span_reader import REREAD_RECORDS, SpanReader
from revpulse.schemas.models import latest_occurred_at
from revpulse.settings import Settings
from revpulse.streams.engine import EngineConfig
from revpulse.streams.outputs import Outcomes, Outputs
from revpulse.streams.partition import DeadLetter, Shard, ShardOutput, ShardState, total_outcomes
from revpulse.streams.rollup import Rollup
from revpulse.streams.wire import Item, Points, Span, WireError, decode_items, decode_spans, is_spans, partial_records
from revpulse.topics import partials_topic, shard_group, shard_topic

log = logging.getLogger(__name__)

GATE_WAIT = 0.5  # seconds the router waits for an owned shard to reach its gate before sending past it


class ShardAgent(BatchAgent):
    def __init__(
        self,
        settings: Settings,
        config: EngineConfig,
        producer: ProducerService,
        snapshots: SnapshotStore,
        rollup: Rollup,
        outputs: Outputs,
        spans: SpanReader,
        **kwargs: Any,
    ) -> None:
        super().__init__(settings, [shard_topic(settings)], shard_group(settings), **kwargs)
        self.config = config
        self.spans = spans
        self.standby_spans = spans.twin()  # the standby follower's: it reads outside the lock, beside `handle`
        self.inputs = frozenset(settings.topics.inputs)
        self.io = producer
        self.snapshots = snapshots
        self.rollup = rollup
        self.outputs = outputs
        self.partials_topic = partials_topic(settings)
        self.shards: dict[int, Shard] = {}
        # Shard -> the offset it must reach before it serves: its committed offset, raised to the end of the shard
        # topic once a fetch shows it (`_end_unseen`), since a previous owner may have applied, on the local path,
        # items past its last commit.
        self.catching_up: dict[int, int] = {}
        self._end_unseen: set[int] = set()
        self._letters_unread = False  # a target was raised past a commit: letters of those items may be written
        self.letters_written: WrittenLetters | None = None
        self.standby: dict[int, Shard] = {}  # shards held but not owned: since a revocation, or as replicas
        self.standby_consumer: AIOKafkaConsumer | None = None
        # standby shard -> (last shard-topic offset of a batch, the dead letters its owner was to write)
        self.standby_letters: dict[int, list[tuple[int, list[DeadLetter]]]] = {}
        self._lock = asyncio.Lock()  # a rebalance waits for the batch in flight
        self._snapshotted: dict[int, int] = {}  # shard -> next_offset of its last snapshot
        self.local_path = LocalPath(settings.shards)  # the router tells it where its sends landed
        self._consumed = asyncio.Event()  # set whenever a batch of the shard topic was applied
        # partials partition -> the offset after the last partial this worker wrote to it (`RollupAgent` skips them)
        self.partials_written: dict[int, int] = {}

    @property
    def ready(self) -> bool:
        return self.assigned and not self.catching_up

    def _local_offset(self, shard_id: int) -> int | None:
        """The next offset of a shard that may take local items: one owned and caught up; else None."""
        shard = self.shards.get(shard_id)
        if shard is None or shard_id in self.catching_up:
            return None
        return shard.state.next_offset

    async def apply_routed(self, routed: dict[int, list[Item]]) -> Plan:
        """Apply at once the items of every shard open to it; returns per shard (epoch, applied here)."""
        await self._reach_gates(list(routed))
        async with self._lock:
            plan = self.local_path.plan({shard_id: self._local_offset(shard_id) for shard_id in routed})
            outputs: list[tuple[int, ShardOutput]] = []
            for shard_id, items in routed.items():
                _, applied = plan[shard_id]
                if applied:
                    shard = self.shards[shard_id]
                    outputs.append((shard_id, shard.apply(items, shard.state.next_offset, whole_points=True)))
                self.outputs.routed_items.labels("local" if applied else "shard_topic").inc(len(items))
            await self._publish(outputs)
            return plan

    async def _reach_gates(self, shard_ids: list[int]) -> None:
        """Wait a little for owned shards still short of their gate: a router outrunning its shards (a backfill)
        would otherwise move the gate on with every batch and never take the local path."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + GATE_WAIT
        while (
            any(self.local_path.reached_gate(k, self._local_offset(k)) is False for k in shard_ids)
            and (left := deadline - loop.time()) > 0
        ):
            self._consumed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._consumed.wait(), left)

    def outcomes(self) -> Outcomes:
        return total_outcomes(self.shards.values())

    async def on_assigned(self, partitions: set[TopicPartition]) -> None:
        assert self.consumer is not None
        async with self._lock:
            committed = {tp.partition: await self.consumer.committed(tp) or 0 for tp in partitions}
            # A shard held as a standby (or kept since its revocation) is exact as of its own offset, whatever
            # another owner did since: it resumes there. Others come from their latest snapshot.
            missing = {p: offset for p, offset in committed.items() if p not in self.shards and p not in self.standby}
            restored = await self.snapshots.load(missing) if missing else {}
            taken_over = {p: self.standby_letters.pop(p, []) for p in committed if p in self.standby}

            def start(p: int) -> int:
                held = self.shards.get(p, self.standby.get(p))
                state = held.state if held is not None else restored.get(p)
                return state.next_offset if state is not None else 0

            # The letters already written, read once: on the first assignment, before writing the letters a
            # standby owes, and when a shard catches up past its own offset (another worker may have written
            # the letters this catching up would write again).
            first = self.letters_written is None
            if first or any(taken_over.values()) or any(start(p) < committed[p] for p in committed):
                if self.letters_written is None:
                    self.letters_written = WrittenLetters()
                await self.letters_written.read(self.settings)
            for partition in committed:
                if partition not in self.shards:
                    self.local_path.close(partition)
                    held = self.standby.pop(partition, None)
                    shard = held or Shard(partition, self.config, restored.get(partition))
                    self.shards[partition] = shard
                    if held is None and restored.get(partition) is not None:
                        self._snapshotted[partition] = shard.state.next_offset
                    # Letters of items the standby applied past the owner's last commit may not be written.
                    owed = [
                        letter
                        for last, letters in taken_over.get(partition, [])
                        if last >= committed[partition]
                        for letter in letters
                    ]
                    points: Points = {}
                    partials = shard.all_partials(points)
                    await self._publish([(shard.id, ShardOutput(owed, partials, [], points))])
            for tp in partitions:
                shard = self.shards[tp.partition]
                self.consumer.seek(tp, shard.state.next_offset)
                self.catching_up[tp.partition] = committed[tp.partition]
                self._end_unseen.add(tp.partition)
            await self._follow_standbys(set(committed))
            log.info(
                "shards: own %s, catching up %s, standby %s",
                sorted(self.shards),
                sorted(self.catching_up),
                sorted(self.standby),
            )
            self.assigned = True

    async def on_revoked(self, partitions: set[TopicPartition]) -> None:
        """Waits for the batch in flight, then snapshots the shards that leave and keeps them as standbys."""
        async with self._lock:
            for tp in partitions:
                shard = self.shards.pop(tp.partition, None)
                self.catching_up.pop(tp.partition, None)
                self._end_unseen.discard(tp.partition)
                self.local_path.close(tp.partition)
                if shard is not None:
                    if self._snapshotted.get(shard.id) != shard.state.next_offset:
                        await self.snapshots.save(shard.id, shard.state)
                    self._snapshotted.pop(shard.id, None)
                    self.standby[shard.id] = shard

    async def _follow_standbys(self, owned: set[int]) -> None:
        """Without standby replicas, keep nothing else; with them, hold every other shard, kept current."""
        if self.settings.standby_replicas == 0 or self.standby_consumer is None:
            self.standby.clear()
            return
        others = [p for p in range(self.settings.shards) if p not in owned]
        for partition in others:
            # Letters of batches the owner has committed are written: only later ones can still be owed.
            assert self.consumer is not None
            committed = await self.consumer.committed(TopicPartition(self.topics[0], partition)) or 0
            kept = [(last, letters) for last, letters in self.standby_letters.get(partition, []) if last >= committed]
            self.standby_letters[partition] = kept
        unheld = {p: 0 for p in others if p not in self.standby}
        for partition, state in (await self.snapshots.load(unheld) if unheld else {}).items():
            self.standby[partition] = Shard(partition, self.config, state)
        tps = [TopicPartition(self.topics[0], p) for p in others]
        self.standby_consumer.assign(tps)
        for tp in tps:
            self.standby_consumer.seek(tp, self.standby[tp.partition].state.next_offset)

    async def on_start(self) -> None:
        if self.settings.standby_replicas > 0:
            self.standby_consumer = consumer(self.settings, None)
            await self.standby_consumer.start()
        await super().on_start()

    async def on_stop(self) -> None:
        async with self._lock:
            pass  # the batch in flight first: it may be reading spans with the reader stopped below
        await super().on_stop()
        if self.standby_consumer is not None:
            await self.standby_consumer.stop()
        await self.spans.stop()
        await self.standby_spans.stop()

    @Service.task
    async def _standby_follower(self) -> None:
        """Applies the shard topic to the standby shards, publishing nothing: a warm copy for a fast takeover."""
        follower = self.standby_consumer
        if follower is None:
            return
        while not self.should_stop:
            if not follower.assignment():
                await self.sleep(0.2)
                continue
            batches = await follower.getmany(timeout_ms=200, max_records=MAX_BATCH)
            for tp, records in batches.items():
                async with self._lock:
                    if self.should_stop:
                        return
                    shard = self.standby.get(tp.partition)
                    if shard is None:
                        continue
                    start = shard.state.next_offset
                    fresh = [record for record in records if record.offset >= start]
                    if fresh and fresh[0].offset != start:
                        follower.seek(tp, start)  # a gap: fetch again from where it is
                        continue
                if fresh:
                    try:
                        await self._follow(shard, start, fresh)
                    except ConsumerStoppedError:
                        if self.should_stop:
                            return  # `on_stop` stopped the reader under a reread
                        raise

    async def _follow(self, shard: Shard, start: int, records: list[ConsumerRecord]) -> None:
        """Apply to standby `shard`, at offset `start`, the shard-topic records from there. Spans are read again
        outside the lock, which the owned shards and the local path wait for; each list is applied under it, and
        only while the shard is still this standby at `start`: a takeover meanwhile finds it at `start` with a
        prefix of the items applied, which it skips as applied (by source position) when it reads them again."""
        end = records[-1].offset + 1

        def held() -> bool:  # still this standby, at `start`
            return self.standby.get(shard.id) is shard and shard.state.next_offset == start

        async with contextlib.aclosing(self._items(shard.id, records, self.standby_spans)) as lists:
            async for items in lists:
                async with self._lock:
                    if self.should_stop or not held():
                        return
                    output = shard.apply(items, start)
                    if output.dead:
                        # The owner writes these; kept in case it dies before it could.
                        self.standby_letters.setdefault(shard.id, []).append((end - 1, output.dead))
        async with self._lock:
            if held():
                shard.state.next_offset = end

    async def handle(self, batches: Batches) -> None:
        async with self._lock:
            if self.should_stop:
                return  # `on_stop` waited for the batch before; the span reader is gone
            self._settle_catching_up()  # the fetch of this batch may be the first to show a partition's end
            if self._letters_unread:
                assert self.letters_written is not None
                await self.letters_written.read(self.settings)
                self._letters_unread = False
            commits: dict[TopicPartition, int] = {}
            outputs: list[tuple[int, ShardOutput]] = []
            assert self.consumer is not None
            assignment = self.consumer.assignment()
            for tp, records in batches.items():
                shard = self.shards.get(tp.partition)
                # A batch fetched while `on_assigned` ran, before it moved the partition to its shard's offset,
                # is stale: the consumer's position (which only handing out a fetch or a seek moves) no longer
                # follows it. The partition is fetched again from the shard's offset.
                if shard is None or tp not in assignment or await self.consumer.position(tp) != records[-1].offset + 1:
                    continue
                unapplied = [r for r in records if not self.local_path.applied(shard.id, r.offset)]
                async for items in self._items(shard.id, unapplied, self.spans):
                    outputs.append((shard.id, shard.apply(items, records[-1].offset + 1, whole_points=True)))
                self.local_path.consumed(shard.id, shard.state.next_offset)
                commits[tp] = shard.state.next_offset
            await self._publish(outputs)
            self._settle_catching_up()
            await self.commit(commits)
        self._consumed.set()

    async def idle(self) -> None:
        self._settle_catching_up()  # a shard already at the end of its partition gets no batch to apply

    def _settle_catching_up(self) -> None:
        """Raise each catching-up shard's target to the end of its partition as first fetched; drop those that
        reached it."""
        assert self.consumer is not None
        for partition, until in list(self.catching_up.items()):
            if partition in self._end_unseen:
                highwater = self.consumer.highwater(TopicPartition(self.topics[0], partition))
                if highwater is None:
                    continue
                self._end_unseen.discard(partition)
                if highwater > until:
                    self._letters_unread = True
                until = self.catching_up[partition] = max(until, highwater)
            if self.shards[partition].state.next_offset >= until:
                del self.catching_up[partition]

    @Service.task
    async def _snapshot_periodically(self) -> None:
        """Snapshot, every interval, each owned shard that applied something since its last snapshot. A forked
        copy of the worker encodes the large ones (see `snapshots`): the batches go on meanwhile, and the shard
        lock is held only for the fork. The small ones are encoded here, one at a time under the lock, so the
        batches wait at most about `snapshots.INLINE_SECONDS` for each."""
        while not self.should_stop:
            await self.sleep(self.settings.snapshot_interval)
            await self._snapshot()

    def _due(self) -> dict[int, ShardState]:
        return {
            k: shard.state for k, shard in self.shards.items() if self._snapshotted.get(k) != shard.state.next_offset
        }

    async def _snapshot(self) -> None:
        async with self._lock:
            due = self._due()
            here = sorted(k for k in due if self.snapshots.policy.inline(k))
            aside = {k: state for k, state in due.items() if k not in here}
            offsets = {shard_id: state.next_offset for shard_id, state in aside.items()}
            try:
                encoding = self.snapshots.encode_aside(aside) if aside else None
            except OSError:  # no fork (out of memory or processes): the next turn tries again
                log.exception("could not fork a copy to encode snapshots of shards %s", sorted(aside))
                encoding, offsets = None, {}
            self._snapshotted.update(offsets)
        for shard_id in here:
            async with self._lock:
                state = self._due().get(shard_id)  # it may have changed hands meanwhile
                if state is None:
                    continue
                offset = state.next_offset
                try:
                    path = self.snapshots.encode_here(shard_id, state)
                except Exception:  # as when a forked copy fails: logged, and the next turn tries again
                    log.exception("snapshot of shard %d failed; the next turn retries", shard_id)
                    continue
                self._snapshotted[shard_id] = offset
            await self.snapshots.write(shard_id, offset, path)
        if encoding is None:
            return
        written = set()
        async for shard_id, blob in encoding.results():
            await self.snapshots.write(shard_id, offsets[shard_id], blob)
            written.add(shard_id)
        for shard_id in offsets.keys() - written:  # the copy failed: the next turn takes them again
            if self._snapshotted.get(shard_id) == offsets[shard_id]:
                del self._snapshotted[shard_id]

    async def _publish(self, outputs: list[tuple[int, ShardOutput]]) -> None:
        """This worker's rollup takes its own shards' partials at once (it ignores their echo on the topic), so
        the metrics, and the lag of the events behind them, do not wait for Kafka; then the dead letters not yet
        on the topic and the partials of every shard go out in one send: a round trip per shard would hold the
        batch (and the metrics of the next one) for as many round trips."""
        assert self.letters_written is not None
        partitions = sorted(await self.io.producer.partitions_for(self.partials_topic))
        deadletter = self.settings.topics.deadletter
        records: list[OutRecord] = []
        fresh: list[DeadLetter] = []
        for shard, output in outputs:
            self.rollup.update(shard, output.partials)
            self.outputs.pending_arrivals.extend(output.arrivals)
            letters = [letter for letter in output.dead if letter not in self.letters_written]
            records += [(deadletter, None, None, letter.payload, letter.headers) for letter in letters]
            fresh += letters
            # One partition per shard's partials: readers must see them in the order they were written.
            partition = partitions[shard % len(partitions)]
            records += [
                (self.partials_topic, partition, key, value, None)
                for key, value in partial_records(shard, output.partials, output.points or {})
            ]
        acked = await send_all(self.io.producer, records)
        for (topic, partition), ranges in acked.items():
            if topic == self.partials_topic and ranges:
                end = max(offsets.stop for offsets in ranges)
                self.partials_written[partition] = max(self.partials_written.get(partition, 0), end)
        for letter in fresh:
            self.letters_written.add(letter)

    async def _items(
        self, shard_id: int, records: list[ConsumerRecord], reader: SpanReader
    ) -> AsyncIterator[list[Item]]:
        """The items of shard-topic records, in order, in lists to apply one after the other; spans are read
        again from the input (`SpanReader`), at most `REREAD_RECORDS` input records at a time (a span names at
        most `SPAN_RECORDS`) however many a record names, and a list holds the items of at most the reader's
        budget of input bytes. The topic is input like any other: a record or item RevPulse did not write is
        logged, counted and skipped, and the rest goes on. Yields at least once, so every batch is applied, if
        only to move the shard's offset."""
        latest_us = latest_occurred_at(time.time())
        items: list[Item] = []
        spans: list[Span] = []
        size = 0
        yielded = False
        for record in [*records, None]:  # None: the end, where spans left are read too
            valid: list[Item] = []
            if record is not None:
                try:
                    if is_spans(record.value):
                        for span in decode_spans(record.value, self.inputs):
                            count = span[3] - span[2] + 1
                            if spans and size + count > REREAD_RECORDS:
                                async for chunk in self._reread(shard_id, spans, items, reader):
                                    yield chunk
                                items, spans, size, yielded = [], [], 0, True
                            spans.append(span)
                            size += count
                        continue
                    valid, invalid = decode_items(record.value, latest_us)
                except WireError as exc:
                    log.warning("shard topic partition %d offset %d skipped: %s", record.partition, record.offset, exc)
                    self.outputs.internal_skipped.labels("shards", "invalid_record").inc()
                    continue
                if invalid:
                    log.warning(
                        "shard topic partition %d offset %d: %d items skipped", record.partition, record.offset, invalid
                    )
                    self.outputs.internal_skipped.labels("shards", "invalid_item").inc(invalid)
            if spans:
                rereads, items = self._reread(shard_id, spans, items, reader), []
                async for chunk in rereads:  # all but the last applied now: one chunk (the usual) waits for more
                    if items:
                        yield items
                        yielded = True
                    items = chunk
                spans, size = [], 0
            items += valid
        if items or not yielded:
            yield items

    async def _reread(
        self, shard_id: int, spans: list[Span], before: list[Item], reader: SpanReader
    ) -> AsyncIterator[list[Item]]:
        """`before` then the items of `spans`, in the reader's lists (the first after `before`)."""
        async for chunk in reader.chunks(shard_id, spans):
            self.outputs.routed_items.labels("reread").inc(len(chunk))
            yield before + chunk
            before = []
