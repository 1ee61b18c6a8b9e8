"""The publisher agent: on every tick, sends each series whose value changed to the compacted metric topic."""

from __future__ import annotations

import asyncio

import faust
import orjson

from streams.outputs import Outputs
from streams.series import Series
from streams.settings import Settings

_UNSET = object()


class Publisher:
    def __init__(self, app: faust.App, outputs: Outputs, settings: Settings) -> None:
        self.app = app
        self.outputs = outputs
        self.topic = settings.topics.metrics
        self.published: dict[str, float | None] = {}

    def changed(self, series: list[Series]) -> list[Series]:
        """Series whose value differs from the last one sent (every series, the first time)."""
        return [s for s in series if self.published.get(s.key, _UNSET) != s.value]

    async def publish(self) -> int:
        """Send the changed series and wait until the broker has them; returns how many were sent."""
        changed = self.changed(self.outputs.refresh())
        as_of = self.outputs.as_of_text
        if not changed or as_of is None:
            return 0
        producer = self.app.producer
        futures = [
            await producer.send(
                self.topic,
                key=s.key.encode(),
                value=orjson.dumps(s.record(as_of)),
                partition=None,
                timestamp=None,
                headers=None,
            )
            for s in changed
        ]
        await asyncio.gather(*futures)
        for s in changed:
            self.published[s.key] = s.value
        return len(changed)
