"""The publisher: on every tick, the worker owning shard 0 sends each series whose value changed to the
compacted metric topic."""

from __future__ import annotations

import orjson

from revpulse.agents.base import ProducerService, send_all
from revpulse.settings import Settings
from revpulse.streams.outputs import Outputs
from revpulse.streams.series import Series

_UNSET = object()


class Publisher:
    def __init__(self, io: ProducerService, outputs: Outputs, settings: Settings) -> None:
        self.io = io
        self.outputs = outputs
        self.topic = settings.topics.metrics
        self.published: dict[str, float | None] | None = None  # None: not the publisher at the last tick

    def changed(self, series: list[Series]) -> list[Series]:
        """Series whose value differs from the last one this worker sent (every series, the first time)."""
        published = self.published or {}
        return [s for s in series if published.get(s.key, _UNSET) != s.value]

    async def publish(self, *, owner: bool) -> int:
        """As the owner, send the changed series and wait until the broker has them; returns how many."""
        if not owner:
            # Another worker publishes meanwhile: what this one sent before says nothing about the topic now.
            self.published = None
            return 0
        series = self.outputs.refresh()
        changed = self.changed(series)
        as_of = self.outputs.as_of_text
        if self.published is None:
            self.published = {}
        if not changed or as_of is None:
            return 0
        records = [(self.topic, None, s.key.encode(), orjson.dumps(s.record(as_of)), None) for s in changed]
        await send_all(self.io.producer, records)
        self.published.update((s.key, s.value) for s in changed)
        return len(changed)
