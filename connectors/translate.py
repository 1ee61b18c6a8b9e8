"""Raw records of one source → records for the input topics (canonical events) or the dead-letter topic.

Pure: no Kafka. The connector agent feeds it each raw record in topic order; replaying a raw topic from its
start through a fresh `Translator` rebuilds the mapper's state exactly.

Nothing a raw record holds may stop the agent (SPEC §1): the raw topics are mapped again from offset 0 on every
assignment, so one record that raised would crash the agent on every restart, for good. `translate` therefore
never raises. A record that is not JSON is `invalid_json`; an element the mapper refuses is `unmappable` (its
reason; when only some of its parts are refused, `PartlyUnmappable`, the others' events go on and the dead letter
holds the refused parts); any other failure, a defect the mapper did not foresee, is logged with its exception and
dead-lettered as `processing_error`, and the other elements and records go on. Mappers check an element's values
before they change their kept state, so an element that fails leaves that state as it was.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Any

import orjson

from revpulse.connectors.base import Mapper, PartlyUnmappable, Unmappable
from revpulse.connectors.hubspot import HubSpotMapper
from revpulse.connectors.pipedrive import PipedriveMapper
from revpulse.connectors.salesforce import SalesforceMapper
from revpulse.connectors.stripe import StripeMapper
from revpulse.schemas.models import element_json
from revpulse.settings import Settings, Topics
from revpulse.topics import Outgoing, raw_topic, route_event, route_line

log = logging.getLogger(__name__)

# Per element: `mapped` (became ≥ 1 canonical event), `ignored` (a kind RevPulse does not use), `unmappable`,
# `processing_error` (the mapper failed on it); per record: `invalid_json`, or `unmappable` / `processing_error`
# when the record could not even be split into elements.
OUTCOMES = ("mapped", "ignored", "unmappable", "processing_error", "invalid_json")
PROCESSING_ERROR = "processing_error"
DETAIL_LIMIT = 1000  # characters of a dead letter's `revpulse.detail` header


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
        """The records one raw record becomes; never raises."""
        value = value or b""
        try:
            if self.mapper is None:
                return self._route(value)
            try:
                body = orjson.loads(value)
            except orjson.JSONDecodeError as exc:
                return Translation([self._letter(value, "invalid_json", f"not JSON: {exc}")], Counter(invalid_json=1))
            elements = self.mapper.elements(body)
        except Unmappable as exc:
            return Translation([self._letter(value, exc.reason, exc.detail)], Counter(unmappable=1))
        except Exception as exc:
            return Translation([self._failed(value, exc, "record")], Counter({PROCESSING_ERROR: 1}))
        out = Translation()
        for element in elements:
            # A record of one element is dead-lettered as it came; an element of a batch as its own JSON.
            single = len(elements) == 1 and element is body
            self._map(element, value, single, out)
        return out

    def _map(self, element: Any, record: bytes, single: bool, out: Translation) -> None:
        """Map one element of `record` into `out`: all of its records, or one dead letter (after the records of its
        parts that did map, when only some parts failed: `PartlyUnmappable`)."""
        assert self.mapper is not None
        refused: Unmappable | None = None
        try:
            try:
                events = self.mapper.map(element)
            except PartlyUnmappable as exc:
                events, refused = exc.events, exc
            except Unmappable as exc:
                events, refused = [], exc
            records = [route_event(event, orjson.dumps(event), self.topics) for event in events]
        except Exception as exc:
            out.outcomes[PROCESSING_ERROR] += 1
            out.records.append(self._failed(_raw(element, record, single), exc, "element"))
            return
        out.records += records
        if refused is None:
            out.outcomes["mapped" if events else "ignored"] += 1
            return
        out.outcomes["unmappable"] += 1
        if isinstance(refused, PartlyUnmappable):
            raw = _raw(refused.rest, record, False)  # the refused parts only
        else:
            raw = _raw(element, record, single)
        out.records.append(self._letter(raw, refused.reason, refused.detail))

    def _route(self, value: bytes) -> Translation:
        """Canonical events, routed as replay routes them (`route_line` dead-letters what it cannot route)."""
        records = [_capped(record) for record in route_line(value, self.topics)]
        return Translation(records, Counter(_route_outcome(r.reason) for r in records))

    def _failed(self, raw: bytes, exc: Exception, what: str) -> Outgoing:
        log.error("%s: mapping failed on a %s of %d bytes; dead-lettered", self.source, what, len(raw), exc_info=exc)
        return self._letter(raw, PROCESSING_ERROR, f"internal error: {_describe(exc)}")

    def _letter(self, raw: bytes, reason: str, detail: str) -> Outgoing:
        return _capped(Outgoing(self.topics.deadletter, None, raw, reason, f"{self.source}: {detail}"))


def _route_outcome(reason: str | None) -> str:
    return "mapped" if reason is None else PROCESSING_ERROR if reason == PROCESSING_ERROR else "unmappable"


def _capped(record: Outgoing) -> Outgoing:
    """The record with its detail cut to `DETAIL_LIMIT` characters (it quotes payload values)."""
    if record.detail is None or len(record.detail) <= DETAIL_LIMIT:
        return record
    return replace(record, detail=f"{record.detail[: DETAIL_LIMIT - 3]}...")


def _raw(element: Any, record: bytes, single: bool) -> bytes:
    """What a dead letter of one element holds: the record's bytes when it is the record, else its own JSON."""
    if single:
        return record
    try:
        return element_json(element)
    except Exception:  # cannot happen for what orjson read; if it did, the whole record is the evidence
        log.exception("could not write an element as JSON; its dead letter holds the whole record")
        return record


def _describe(exc: Exception) -> str:
    try:
        return f"{type(exc).__name__}: {exc}"[:DETAIL_LIMIT]
    except Exception:  # an exception whose str() fails still gets a detail
        return type(exc).__name__


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
