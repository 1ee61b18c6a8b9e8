"""The router agent: consumes the four input topics and sends each event to the shard owning its key.

Input offsets are committed once the shard records of what was routed are acknowledged; a crash in between
re-sends them, and the shards skip what they already applied (see `revpulse.streams.partition`). Items for shards
this worker owns are applied locally first (see `ShardAgent.apply_routed` and `revpulse.agents.local_path`): metrics
then follow one hop sooner, and the shard topic gets only spans naming their input records, which the input topics
hold (`revpulse.agents.span_reader`), not a copy of every event. Fetched records wait in event-time alignment
(`revpulse.streams.pacing`) until the partitions behind them catch up; they are only held, never committed, so a
restart or rebalance fetches them again.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from aiokafka import TopicPartition
from aiokafka.errors import IllegalStateError

from revpulse.agents.base import BatchAgent, Batches, ProducerService, send_all
from revpulse.agents.shard_agent import ShardAgent
from revpulse.schemas.models import Decoded, Event, latest_occurred_at
from revpulse.settings import Settings
from revpulse.streams.held import pack
from revpulse.streams.outputs import Outputs
from revpulse.streams.pacing import Merge
from revpulse.streams.partition import InputRecord, Router, spans_of
from revpulse.streams.windows import US_PER_SECOND
from revpulse.streams.wire import SPANS_PER_RECORD, encode_items, encode_spans, item_records
from revpulse.topics import router_group, shard_topic

log = logging.getLogger(__name__)

ALIGNMENT_STALL = 2.0  # seconds of empty fetches with records held and none routed, before all go for as long


class RouterAgent(BatchAgent):
    def __init__(
        self,
        settings: Settings,
        router: Router,
        producer: ProducerService,
        outputs: Outputs,
        local: ShardAgent,
        **kwargs: Any,
    ) -> None:
        super().__init__(settings, list(settings.topics.inputs), router_group(settings), **kwargs)
        self.router = router
        self.io = producer
        self.outputs = outputs
        self.local = local  # this worker's shards: items for those it owns are applied before they are sent
        self.shard_topic = shard_topic(settings)
        slack = round(settings.input_alignment * US_PER_SECOND)
        # A held record, once decoded: its events and rejections, and the bound on occurred_at they were decoded with.
        self.merge: Merge[tuple[str, int], InputRecord, tuple[InputRecord, list[Decoded], int]] = Merge(
            slack, self._decode, pack
        )
        self.latest_us = latest_occurred_at(outputs.clock())  # the wall clock bounds occurred_at; set per release
        self.idle_since: float | None = None  # since when fetches bring nothing while records are held
        self.aligned_after = 0.0  # monotonic time before which nothing is held

    async def on_assigned(self, partitions: set[TopicPartition]) -> None:
        self.local.local_path.router_rebalanced()
        owned = {(tp.topic, tp.partition) for tp in partitions}
        self.router.latest = {source: t for source, t in self.router.latest.items() if source in owned}
        # Every partition resumes from its committed offset: what was held is fetched again.
        self.merge.clear()
        await super().on_assigned(partitions)

    async def handle(self, batches: Batches) -> None:
        self._hold(batches)
        self.idle_since = None
        await self._route(await self._release())

    def _hold(self, batches: Batches) -> None:
        """Add the records to the alignment's queues (`Merge` decodes each when it reaches the front)."""
        for tp, batch in batches.items():
            self.merge.add(
                (tp.topic, tp.partition),
                [InputRecord(tp.topic, tp.partition, r.offset, r.value, r.timestamp / 1000) for r in batch],
            )
            highwater = self.consumer.highwater(tp) if self.consumer is not None else None
            if highwater is not None:
                self.outputs.consumer_lag.labels(tp.topic, str(tp.partition)).set(highwater - batch[-1].offset - 1)

    async def idle(self) -> None:
        """A fetch brought nothing: the partition holding others back may have been read to its end. If records
        stay held through fetches that bring nothing for a while (a broker's high watermark past its last record,
        a partition read elsewhere), alignment only saves work: everything goes, and goes unheld for a while."""
        if not self.merge.holding():
            return
        now = time.monotonic()
        self.idle_since = self.idle_since or now
        if now - self.idle_since > ALIGNMENT_STALL:
            log.info("router: records held through %.0f s of empty fetches; routing them", now - self.idle_since)
            self.aligned_after = now + ALIGNMENT_STALL
        await self._route(await self._release())

    def _decode(self, item: InputRecord) -> tuple[int | None, tuple[InputRecord, list[Decoded], int]]:
        """A held record's earliest event time (None: no valid event), and its events and rejections."""
        decoded = self.router.decode(item, self.latest_us)
        times = [event.t for event, _ in decoded if isinstance(event, Event)]
        return min(times, default=None), (item, decoded, self.latest_us)

    async def _release(self) -> list[tuple[InputRecord, list[Decoded], int]]:
        """The held records that may go now (`Merge.release`), all of them with alignment off; pauses the
        partitions left holding records, so what is held stays about two fetches a partition."""
        self.latest_us = latest_occurred_at(self.outputs.clock())
        if not self.settings.input_alignment or time.monotonic() < self.aligned_after:
            released = self.merge.release_all()
        else:
            released = self.merge.release(self.router.latest, await self._unread())
        if released:
            self.idle_since = None
        assert self.consumer is not None
        holding = self.merge.holding()
        hold = {tp for tp in self.consumer.assignment() if (tp.topic, tp.partition) in holding}
        paused = self.consumer.paused()
        if paused - hold:
            self.consumer.resume(*(paused - hold))
        if hold - paused:
            # What the consumer fetched ahead for them is taken first: pausing would drop it, to be fetched
            # again, and aiokafka's reader of a dropped fetch is a reference cycle holding the fetch's bytes,
            # which the worker's frozen heap keeps until its next full collection (`collector`).
            self._hold(await self.consumer.getmany(*(hold - paused), timeout_ms=0))
            # A rebalance may have come meanwhile: only a partition still assigned can be paused.
            self.consumer.pause(*((hold - paused) & self.consumer.assignment()))
        return [record for _, record in released]

    async def _unread(self) -> set[tuple[str, int]]:
        """The partitions with records on the broker not fetched yet (their fetch high watermark is past the
        consumer's position)."""
        assert self.consumer is not None
        unread = set()
        for tp in self.consumer.assignment():
            highwater = self.consumer.highwater(tp)
            if highwater is None:
                continue
            try:
                position = await self.consumer.position(tp)
            except IllegalStateError:
                continue  # taken away by a rebalance meanwhile: `on_assigned` starts over
            if highwater > position:
                unread.add((tp.topic, tp.partition))
        return unread

    async def _route(self, records: list[tuple[InputRecord, list[Decoded], int]]) -> None:
        """Send records to their shards (applying this worker's first, for which spans go), then commit their
        offsets."""
        if not records:
            return
        routed = self.router.route_decoded((record, decoded) for record, decoded, _ in records)
        plan = await self.local.apply_routed(routed)
        bounds = {(record.topic, record.partition, record.offset): bound for record, _, bound in records}
        values: list[tuple[int, bytes]] = []
        for shard, items in routed.items():
            if plan[shard][1]:
                spans = spans_of(items, bounds)
                values += [
                    (shard, encode_spans(spans[at : at + SPANS_PER_RECORD]))
                    for at in range(0, len(spans), SPANS_PER_RECORD)
                ]
            else:
                values += [(shard, encode_items(group)) for group in item_records(items)]
        acked = await send_all(
            self.io.producer, ((self.shard_topic, shard, None, value, None) for shard, value in values)
        )
        self.local.local_path.routed_sent(plan, {partition: ranges for (_, partition), ranges in acked.items()})
        offsets: dict[TopicPartition, int] = {}
        for record, _, _ in records:
            offsets[TopicPartition(record.topic, record.partition)] = record.offset + 1
        await self.commit(offsets)
