"""The rollup agent: reads every shard's partials (all partitions, no consumer group) into the global ledger,
so this worker serves global values. Partials of shards this worker owns arrive directly from its shard agent;
their echo on the topic is older or equal, so it is skipped."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from revpulse.agents.base import BatchAgent, Batches
from revpulse.settings import Settings
from revpulse.streams.rollup import Pending, Rollup
from revpulse.streams.wire import WireError, parse_partial
from revpulse.topics import partials_topic

log = logging.getLogger(__name__)


class RollupAgent(BatchAgent):
    def __init__(
        self,
        settings: Settings,
        rollup: Rollup,
        owned: Callable[[int], bool],
        on_skip: Callable[[str, str], None] = lambda role, reason: None,
        **kwargs: Any,
    ) -> None:
        super().__init__(settings, [partials_topic(settings)], None, **kwargs)
        self.rollup = rollup
        self.owned = owned
        self.on_skip = on_skip  # (topic role, reason) of a record skipped as invalid
        self.max_batch = 50_000
        self.caught_up = False

    async def handle(self, batches: Batches) -> None:
        """Apply a batch of partials (called with empty batches too, until the reader has caught up)."""
        pending = Pending(self.rollup)
        for tp, records in batches.items():
            if self._all_owned(tp.partition):
                continue  # only echoes: not worth decoding
            for record in records:
                try:
                    shard, key, value = parse_partial(record.key, record.value, self.settings.shards)
                except WireError as exc:
                    # Every worker re-reads this topic from its start: a record that stopped the rollup once
                    # would stop it on every restart.
                    log.warning("partials partition %d offset %d skipped: %s", tp.partition, record.offset, exc)
                    self.on_skip("partials", "invalid_record")
                    continue
                if not self.owned(shard):
                    pending.add(shard, key, value)
        pending.apply()
        if not self.caught_up:
            self.caught_up = await self._at_end()

    def _all_owned(self, partition: int) -> bool:
        """Whether every shard writing to this partition of the partials topic is owned here (the shard agent
        writes shard k's partials to partition k mod the partition count)."""
        assert self.consumer is not None
        partitions = len(self.consumer.assignment())
        return all(self.owned(shard) for shard in range(partition, self.settings.shards, partitions))

    async def _at_end(self) -> bool:
        assert self.consumer is not None
        for tp in self.consumer.assignment():
            highwater = self.consumer.highwater(tp)
            if highwater is None or await self.consumer.position(tp) < highwater:
                return False
        return True
