"""The router agent: consumes the four input topics and sends each event to the shard owning its key.

Stateless. Input offsets are committed once the batch's shard records are acknowledged; a crash in between
re-sends them, and the shards skip what they already applied (see `revpulse.streams.partition`). Items for shards this
worker owns are applied locally first (see `ShardAgent.apply_routed` and `revpulse.agents.local_path`): metrics then
follow one hop sooner.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from aiokafka import TopicPartition

from revpulse.agents.base import BatchAgent, Batches, ProducerService, send_all
from revpulse.agents.shard_agent import ShardAgent
from revpulse.settings import Settings
from revpulse.streams.outputs import Outputs
from revpulse.streams.pacing import paused
from revpulse.streams.partition import InputRecord, Router
from revpulse.streams.windows import US_PER_SECOND
from revpulse.streams.wire import encode_items, item_records
from revpulse.topics import router_group, shard_topic

log = logging.getLogger(__name__)

ALIGNMENT_STALL = 2.0  # seconds without a batch, partitions paused, before they all resume for as long


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
        self.read_up_to: dict[TopicPartition, int] = {}  # the offset after the last record handled
        self.last_batch = time.monotonic()
        self.aligned_after = 0.0  # monotonic time before which no partition is paused

    async def on_assigned(self, partitions: set[TopicPartition]) -> None:
        self.local.local_path.router_rebalanced()
        owned = {(tp.topic, tp.partition) for tp in partitions}
        self.router.latest = {source: t for source, t in self.router.latest.items() if source in owned}
        self.read_up_to = {tp: offset for tp, offset in self.read_up_to.items() if tp in partitions}
        await super().on_assigned(partitions)

    async def handle(self, batches: Batches) -> None:
        records = [
            InputRecord(tp.topic, tp.partition, record.offset, record.value, record.timestamp / 1000)
            for tp, batch in batches.items()
            for record in batch
        ]
        routed = self.router.route(records, self.outputs.clock())  # the wall clock bounds occurred_at
        plan = await self.local.apply_routed(routed)
        acked = await send_all(
            self.io.producer,
            (
                (self.shard_topic, shard, None, encode_items(group), None)
                for shard, items in routed.items()
                for group in item_records(items)
            ),
        )
        self.local.local_path.routed_sent(plan, {partition: ranges for (_, partition), ranges in acked.items()})
        assert self.consumer is not None
        for tp, batch in batches.items():
            highwater = self.consumer.highwater(tp)
            if highwater is not None:
                lag = highwater - batch[-1].offset - 1
                self.outputs.consumer_lag.labels(tp.topic, str(tp.partition)).set(lag)
        await self.commit({tp: batch[-1].offset + 1 for tp, batch in batches.items()})
        self.read_up_to.update((tp, batch[-1].offset + 1) for tp, batch in batches.items())
        self.last_batch = time.monotonic()
        self._align()

    def idle(self) -> None:
        assert self.consumer is not None
        now = time.monotonic()
        held = self.consumer.paused()
        if held and now - self.last_batch > ALIGNMENT_STALL:
            # Nothing came while partitions wait for one that brings nothing (a broker's high watermark past its
            # last record, a partition read elsewhere): alignment only saves work, so read everything a while.
            log.info("router: %d input partitions paused and nothing to read; resuming them", len(held))
            self.consumer.resume(*held)
            self.aligned_after = now + ALIGNMENT_STALL
            return
        self._align()  # the partition holding others back may have just been read to its end

    def _align(self) -> None:
        """Pause the partitions too far ahead in event time of one with records left (`pacing`), resume the
        others."""
        if not self.settings.input_alignment or time.monotonic() < self.aligned_after:
            return
        assert self.consumer is not None
        assigned = self.consumer.assignment()
        behind = set()
        for tp in assigned:
            highwater = self.consumer.highwater(tp)
            if highwater is not None and highwater > self.read_up_to.get(tp, 0):
                behind.add((tp.topic, tp.partition))
        slack = round(self.settings.input_alignment * US_PER_SECOND)
        ahead = paused(self.router.latest, behind, slack)
        hold = {tp for tp in assigned if (tp.topic, tp.partition) in ahead}
        held = self.consumer.paused()
        if hold - held:
            self.consumer.pause(*(hold - held))
        if held - hold:
            self.consumer.resume(*(held - hold))
