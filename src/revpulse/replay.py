"""`revpulse replay FILE`: send an event log to the input topics, routed by type and keyed per SPEC §1.

A line it cannot route (not JSON, not an object, no known type) goes to the dead-letter topic with its reason,
so the worker never sees it; replay counts it in its summary.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import orjson
from aiokafka import AIOKafkaProducer

from revpulse.kafka_security import producer_options
from revpulse.settings import Settings
from revpulse.topics import route_line


@dataclass
class ReplaySummary:
    records: int = 0
    events: int = 0
    dead_lettered: int = 0
    by_topic: dict[str, int] = field(default_factory=dict)

    def line(self) -> str:
        topics = ", ".join(f"{topic} {count}" for topic, count in sorted(self.by_topic.items()))
        return (
            f"sent {self.records} records ({self.events} events) [{topics}]; "
            f"{self.dead_lettered} unroutable lines dead-lettered"
        )


def read_log(path: Path) -> Iterator[bytes]:
    """The lines of a JSONL file, or the elements of a `.json` array file, as raw JSON."""
    if path.suffix == ".json":
        for element in orjson.loads(path.read_bytes()):
            yield orjson.dumps(element)
        return
    with path.open("rb") as handle:
        for line in handle:
            line = line.strip()
            if line:
                yield line


async def send(
    lines: Iterable[bytes], settings: Settings, *, source: str = "replay", progress: TextIO | None = sys.stderr
) -> ReplaySummary:
    """Send every line; returns once the broker has acknowledged all of them.

    A dead-lettered line's source headers name `source` (the log) and its 0-based line number.
    """
    summary = ReplaySummary()
    producer = AIOKafkaProducer(**producer_options(settings), linger_ms=20, max_batch_size=256 * 1024, acks="all")
    await producer.start()
    try:
        pending: list[asyncio.Future[Any]] = []
        for number, line in enumerate(lines):
            for record in route_line(line, settings.topics):
                headers = None
                if record.reason is not None:
                    headers = [
                        ("revpulse.reason", record.reason.encode()),
                        ("revpulse.detail", (record.detail or "").encode()),
                        ("revpulse.source.topic", source.encode()),
                        ("revpulse.source.partition", b"0"),
                        ("revpulse.source.offset", str(number).encode()),
                    ]
                    summary.dead_lettered += 1
                else:
                    summary.records += 1
                    summary.events += _count_events(record.value)
                    summary.by_topic[record.topic] = summary.by_topic.get(record.topic, 0) + 1
                pending.append(await producer.send(record.topic, record.value, key=record.key, headers=headers))
            if len(pending) >= 5000:
                await asyncio.gather(*pending)
                pending.clear()
                if progress is not None:
                    print(f"\r{summary.records} records sent", end="", file=progress, flush=True)
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    if progress is not None:
        print(f"\r{summary.line()}", file=progress, flush=True)
    return summary


def _count_events(value: bytes) -> int:
    return len(orjson.loads(value)) if value[:1] == b"[" else 1
