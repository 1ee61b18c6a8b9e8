"""The in-process pipeline as a test harness: events in, series values out."""

from __future__ import annotations

from typing import Any

import orjson

from revpulse.settings import Settings, Topics
from revpulse.streams.partition import InputRecord
from revpulse.streams.pipeline import Pipeline
from revpulse.topics import topic_of


class Harness:
    """A pipeline on the event clock, fed one record per call, read back as {series key: value}."""

    def __init__(self, settings: Settings) -> None:
        self.pipeline = Pipeline(settings)
        self.offset = 0
        self.dead: list[Any] = []

    def send(self, *events: dict[str, Any], topic: str | None = None) -> None:
        for event in events:
            self.send_raw(orjson.dumps(event), topic or topic_of(str(event["type"]), Topics()) or "crm.events")

    def send_raw(self, value: bytes, topic: str) -> None:
        self.dead += self.pipeline.process([InputRecord(topic, 0, self.offset, value, 0.0)])
        self.offset += 1

    def values(self) -> dict[str, float | None]:
        return {series.key: series.value for series in self.pipeline.refresh()}

    def value(self, metric: str, **labels: str) -> float | None:
        labels.setdefault("segment", "all")
        key = metric + "{" + ",".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}"
        return self.values()[key]
