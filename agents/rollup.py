"""The rollup agent: reads every shard's partials (all partitions, no consumer group) into the global ledger,
so this worker serves global values. Partials of shards this worker owns arrive directly from its shard agent;
their echo on the topic is older or equal, so it is skipped."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from mode import Service

from agents.base import consumer
from agents.shards import parse_partial
from streams.ledger import Key
from streams.rollup import Rollup
from streams.settings import Settings

log = logging.getLogger(__name__)


class RollupAgent(Service):
    def __init__(self, settings: Settings, rollup: Rollup, owned: Callable[[int], bool], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.settings = settings
        self.rollup = rollup
        self.owned = owned
        self.topic = f"{settings.app_id}-partials"
        self.consumer: AIOKafkaConsumer | None = None
        self.caught_up = False

    async def on_start(self) -> None:
        self.consumer = consumer(self.settings, None, fetch_max_wait_ms=100)
        await self.consumer.start()
        partitions = self.consumer.partitions_for_topic(self.topic) or set()
        if not partitions:
            await self.consumer.force_metadata_update()
            partitions = self.consumer.partitions_for_topic(self.topic) or set()
        tps = [TopicPartition(self.topic, p) for p in sorted(partitions)]
        self.consumer.assign(tps)
        await self.consumer.seek_to_beginning(*tps)

    async def on_stop(self) -> None:
        if self.consumer is not None:
            await self.consumer.stop()

    @Service.task
    async def _consume(self) -> None:
        assert self.consumer is not None
        while not self.should_stop:
            batches = await self.consumer.getmany(timeout_ms=200, max_records=50_000)
            updates: dict[int, dict[Key, int]] = {}
            for records in batches.values():
                for record in records:
                    shard, key, value = parse_partial(record.key, record.value)
                    if not self.owned(shard):
                        updates.setdefault(shard, {})[key] = value
            for shard, partials in updates.items():
                self.rollup.update(shard, partials)
            if not self.caught_up:
                self.caught_up = await self._at_end()

    async def _at_end(self) -> bool:
        assert self.consumer is not None
        for tp in self.consumer.assignment():
            highwater = self.consumer.highwater(tp)
            if highwater is None or await self.consumer.position(tp) < highwater:
                return False
        return True
