"""Raw records of one source → records for the input topics (canonical events) or the dead-letter topic.

Pure: no Kafka. The connector agent feeds it each raw record in topic order; replaying a raw topic from its
start through a fresh `Translator` rebuilds the mapper's state exactly.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import orjson
from revpulse.connectors.base import Mapper, Unmappable
from revpulse.connectors.hubspot import HubSpotMapper
from revpulse.connectors.pipedrive import PipedriveMapper
from revpulse.connectors.salesforce import SalesforceMapper
from revpulse.connectors.stripe import StripeMapper

from revpulse.settings import Settings, Topics
from revpulse.topics import Outgoing, raw_topic, route_event, route_line

# Per element: `mapped` (became ≥ 1 canonical event), `ignored` (a kind RevPulse does not use), `unmappable`;
# per record: `invalid_json`.
OUTCOMES = ("mapped", "ignored", "unmappable", "invalid_json")


@dataclass
class Translation:
    records: list[Outgoing] = field(default_factory=list)
    outcomes: Counter[str] = field(default_factory=Counter)


@dataclass
class Translator:
    """`mapper` None: the record already holds canonical events (`/ingest/events`), routed as replay does."""

    source: str
    mapper: Mapper | None
    topics: Topics

    def translate(self, value: bytes | None) -> Translation:
        value = value or b""
        if self.mapper is None:
            records = route_line(value, self.topics)
            return Translation(records, Counter("unmappable" if r.reason else "mapped" for r in records))
        try:
            body = orjson.loads(value)
        except orjson.JSONDecodeError as exc:
            dead = Outgoing(self.topics.deadletter, None, value, "invalid_json", f"{self.source}: not JSON: {exc}")
            return Translation([dead], Counter(invalid_json=1))
        elements = self.mapper.elements(body)
        out = Translation()
        for element in elements:
            # A record of one element is dead-lettered as it came; an element of a batch as its own JSON.
            raw = value if len(elements) == 1 and element is body else orjson.dumps(element)
            try:
                events = self.mapper.map(element)
            except Unmappable as exc:
                out.outcomes["unmappable"] += 1
                out.records.append(
                    Outgoing(self.topics.deadletter, None, raw, exc.reason, f"{self.source}: {exc.detail}")
                )
                continue
            out.outcomes["mapped" if events else "ignored"] += 1
            out.records += [route_event(event, orjson.dumps(event), self.topics) for event in events]
        return out


def translators(settings: Settings) -> dict[str, Translator]:
    """A fresh translator per raw topic (its mapper's state empty), keyed by topic."""
    topics = settings.topics
    mappers: dict[str, Mapper | None] = {
        "stripe": StripeMapper(),
        "hubspot": HubSpotMapper(settings.hubspot_deal_stages, settings.hubspot_lifecycle_stages),
        "pipedrive": PipedriveMapper(),
        "events": None,
    }
    out = {raw_topic(source, topics.ingest_raw): Translator(source, m, topics) for source, m in mappers.items()}
    out[topics.salesforce_cdc] = Translator("salesforce", SalesforceMapper(), topics)
    return out
