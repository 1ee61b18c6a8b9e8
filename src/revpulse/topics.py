"""Every topic and consumer-group name RevPulse uses, and which input topic and key an event goes to (SPEC §1).

Input, metric and dead-letter topics come from the settings (`REVPULSE_TOPIC_*`); the internal topics and the
consumer groups are named after the app id (`REVPULSE_APP_ID`), so two deployments can share a cluster.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import orjson

from revpulse.schemas.models import EVENT_TYPES, MAX_ARRAY, element_json
from revpulse.settings import Settings, Topics

# HTTP ingest sources, each with a raw topic `<REVPULSE_TOPIC_INGEST_RAW>.<source>`.
RAW_SOURCES: tuple[str, ...] = ("stripe", "hubspot", "pipedrive", "events")

_FAMILY_TOPIC = {
    "lead": "crm",
    "opportunity": "crm",
    "account": "crm",
    "subscription": "billing",
    "product": "product",
    "marketing": "marketing",
}


def shard_topic(settings: Settings) -> str:
    """Routed items, one partition per shard: the durable log of every shard's input."""
    return f"{settings.app_id}-shards"


def partials_topic(settings: Settings) -> str:
    """Each shard's partial ledger (absolute cell values), compacted; every worker's rollup reads it all."""
    return f"{settings.app_id}-partials"


def snapshot_topic(settings: Settings) -> str:
    """Shard snapshots in chunks under a manifest, compacted (REVPULSE_INTERNAL_RETENTION=compact)."""
    return f"{settings.app_id}-snapshots"


def snapshot_generation(settings: Settings, shard: int, next_offset: int) -> str:
    """One snapshot of one shard, alone in its topic (REVPULSE_INTERNAL_RETENTION=rotate)."""
    return f"{snapshot_topic(settings)}.{shard}.{next_offset}"


def snapshot_generations(settings: Settings, names: Iterable[str]) -> dict[int, list[tuple[int, str]]]:
    """Among topic names, the snapshot generations of each shard: (next offset, topic), newest first."""
    prefix = f"{snapshot_topic(settings)}."
    found: dict[int, list[tuple[int, str]]] = {}
    for name in names:
        shard, dot, offset = name.removeprefix(prefix).partition(".")
        numbers = shard.isascii() and shard.isdigit() and offset.isascii() and offset.isdigit()
        if name.startswith(prefix) and dot and numbers and len(shard) <= 6 and len(offset) <= 18:
            found.setdefault(int(shard), []).append((int(offset), name))
    return {shard: sorted(generations, reverse=True) for shard, generations in found.items()}


def router_group(settings: Settings) -> str:
    return f"{settings.app_id}-router"


def shard_group(settings: Settings) -> str:
    return f"{settings.app_id}-shards"


def connector_group(settings: Settings) -> str:
    return f"{settings.app_id}-connectors"


def raw_topic(source: str, prefix: str = Topics.ingest_raw) -> str:
    """The raw topic of an ingest source: `ingest.raw.<source>` (the prefix is `REVPULSE_TOPIC_INGEST_RAW`)."""
    if source not in RAW_SOURCES:
        raise ValueError(f"unknown ingest source {source!r}")
    return f"{prefix}.{source}"


def raw_topics(topics: Topics) -> list[str]:
    return [raw_topic(source, topics.ingest_raw) for source in RAW_SOURCES]


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A record to send: to an input topic, or (with `reason`) to the dead-letter topic."""

    topic: str
    key: bytes | None
    value: bytes
    reason: str | None = None
    detail: str | None = None


def topic_of(event_type: str, topics: Topics) -> str | None:
    """The input topic of a known event type."""
    if event_type not in EVENT_TYPES:
        return None
    return getattr(topics, _FAMILY_TOPIC[event_type.partition(".")[0]])  # type: ignore[no-any-return]


def routing_key(event: dict[str, Any]) -> str | None:
    key = event.get("channel") if str(event.get("type", "")).startswith("marketing.") else event.get("account_id")
    return key if isinstance(key, str) and key else None


def route_line(line: bytes, topics: Topics) -> list[Outgoing]:
    """The records one log line becomes. An array is split by topic, each part one array record; an array of
    more than `MAX_ARRAY` elements is one dead letter, as a worker would make it."""
    try:
        return _route_line(line, topics)
    except Exception as exc:  # a line no rule covers must not stop a replay or a connector
        return [Outgoing(topics.deadletter, None, line, "processing_error", f"line not routable: {exc!r:.200}")]


def _route_line(line: bytes, topics: Topics) -> list[Outgoing]:
    try:
        doc = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        return [Outgoing(topics.deadletter, None, line, "invalid_json", f"line is not JSON: {exc}")]
    if not isinstance(doc, list):
        return [route_event(doc, line, topics)]
    if len(doc) > MAX_ARRAY:
        detail = f"line is an array of {len(doc)} elements; at most {MAX_ARRAY} are allowed"
        return [Outgoing(topics.deadletter, None, line, "invalid_event", detail)]
    out: list[Outgoing] = []
    parts: dict[str, list[Any]] = {}
    for element in doc:
        routed = route_event(element, element_json(element), topics)
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
        return Outgoing(topics.deadletter, None, raw, "unknown_type", f"unknown event type {doc['type']!r:.200}")
    key = routing_key(doc)
    return Outgoing(topic, None if key is None else key.encode(), raw)
