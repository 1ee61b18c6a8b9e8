"""The whole path in one process, free of Kafka: router → shards → rollup → outputs.

The worker runs the same parts with Kafka topics between them; tests, the benchmark's baseline and anything
that wants the numbers of a log without a broker drive this directly.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry

from revpulse.schemas.models import EventDecoder
from revpulse.settings import Settings
from revpulse.streams.engine import EngineConfig
from revpulse.streams.outputs import Outcomes, Outputs
from revpulse.streams.partition import DeadLetter, InputRecord, Router, Shard, total_outcomes
from revpulse.streams.rollup import Rollup
from revpulse.streams.series import Series
from revpulse.streams.windows import US_PER_SECOND


def engine_config(settings: Settings) -> EngineConfig:
    return EngineConfig(
        allowed_lateness_us=round(settings.allowed_lateness * US_PER_SECOND),
        hot_accounts=settings.hot_accounts,
        history_days=settings.history_days,
    )


def decoder(settings: Settings) -> EventDecoder:
    return EventDecoder(settings.currency, settings.fx_rates, settings.segments)


class Pipeline:
    def __init__(self, settings: Settings, clock: Callable[[], float] = time.time) -> None:
        self.router = Router(decoder(settings), settings.shards)
        self.shards = [Shard(i, engine_config(settings)) for i in range(settings.shards)]
        self.rollup = Rollup()
        self.outputs = Outputs(settings, self.rollup, self.outcomes, clock)
        self.records = 0

    @property
    def registry(self) -> CollectorRegistry:
        return self.outputs.registry

    def outcomes(self) -> Outcomes:
        return total_outcomes(self.shards)

    def process(self, records: Iterable[InputRecord]) -> list[DeadLetter]:
        """Apply a batch of input records; returns what goes to the dead-letter topic, in order per shard."""
        records = list(records)
        self.records += len(records)
        dead: list[DeadLetter] = []
        for shard_id, items in self.router.route(records, self.outputs.clock()).items():
            shard = self.shards[shard_id]
            output = shard.apply(items, shard.state.next_offset + 1)
            dead.extend(output.dead)
            self.rollup.update(shard_id, output.partials)
            self.outputs.pending_arrivals.extend(output.arrivals)
        return sorted(dead, key=lambda letter: (letter.topic, letter.partition, letter.offset))

    def refresh(self) -> list[Series]:
        return self.outputs.refresh()

    @property
    def as_of_text(self) -> str | None:
        return self.outputs.as_of_text
