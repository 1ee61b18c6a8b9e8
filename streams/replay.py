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

from schemas.models import EVENT_TYPES
from streams.settings import Settings, Topics

_FAMILY_TOPIC = {
    "lead": "crm",
    "opportunity": "crm",
    "account": "crm",
    "subscription": "billing",
    "product": "product",
    "marketing": "marketing",
}


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A record to send: to an input topic, or (with `reason`) to the dead-letter topic."""

    topic: str
    key: bytes | None
    value: bytes
    reason: str | None = None
    detail: str | None = None


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


def topic_of(event_type: str, topics: Topics) -> str | None:
    """The input topic of a known event type."""
    if event_type not in EVENT_TYPES:
        return None
    return getattr(topics, _FAMILY_TOPIC[event_type.partition(".")[0]])  # type: ignore[no-any-return]


def routing_key(event: dict[str, Any]) -> str | None:
    key = event.get("channel") if str(event.get("type", "")).startswith("marketing.") else event.get("account_id")
    return key if isinstance(key, str) and key else None


def route_line(line: bytes, topics: Topics) -> list[Outgoing]:
    """The records one log line becomes. An array is split by topic, each part one array record."""
    try:
        doc = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        return [Outgoing(topics.deadletter, None, line, "invalid_json", f"line is not JSON: {exc}")]
    if not isinstance(doc, list):
        return [route_event(doc, line, topics)]
    out: list[Outgoing] = []
    parts: dict[str, list[Any]] = {}
    for element in doc:
        routed = route_event(element, orjson.dumps(element), topics)
        if routed.reason is not None:
            out.append(routed)
        else:
            parts.setdefault(routed.topic, []).append(element)
    for topic, elements in parts.items():
        keys = {routing_key(element) for element in elements}
        key = next(iter(keys)) if len(keys) == 1 else None
        out.append(Outgoing(topic, None if key is None else key.encode(), orjson.dumps(elements)))
    return out


def route_event(doc: Any, raw: bytes, topics: Topics) -> Outgoing:
    if not isinstance(doc, dict) or not isinstance(doc.get("type"), str):
        return Outgoing(topics.deadletter, None, raw, "invalid_event", "not an object with a string 'type'")
    topic = topic_of(doc["type"], topics)
    if topic is None:
        return Outgoing(topics.deadletter, None, raw, "unknown_type", f"unknown event type {doc['type']!r}")
    key = routing_key(doc)
    return Outgoing(topic, None if key is None else key.encode(), raw)


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
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.bootstrap_servers, linger_ms=20, max_batch_size=256 * 1024, acks="all"
    )
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
