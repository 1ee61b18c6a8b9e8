"""Input events (SPEC §1): decoding a Kafka record value into validated events or rejections.

Validation runs once, at the edge; everything downstream works on `Event`, whose money is already in the
reporting currency as integer nano-units (so sums and their reversals are exact) and whose time is integer
microseconds since the epoch.
"""

from __future__ import annotations

import math
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from operator import attrgetter
from typing import Any, Final

import orjson

NANOS: Final = 1_000_000_000
US_PER_MS: Final = 1_000

EVENT_TYPES: Final = frozenset(
    {
        "account.updated",
        "lead.created",
        "lead.stage_changed",
        "opportunity.created",
        "opportunity.won",
        "opportunity.lost",
        "subscription.started",
        "subscription.updated",
        "subscription.canceled",
        "subscription.renewed",
        "product.signup",
        "product.trial_started",
        "product.activated",
        "product.usage",
        "marketing.spend",
    }
)
_TYPE_NAMES: Final = {name: name for name in EVENT_TYPES}
LEAD_STAGES: Final = ("lead", "mql", "sql", "opportunity", "customer", "disqualified")
# Months in one billing interval; a week is 12/52 of a month.
INTERVAL_MONTHS: Final = {"week": 12 / 52, "month": 1.0, "quarter": 3.0, "year": 12.0}

_RFC3339 = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?(Z|[+-][0-9]{2}:[0-9]{2})\Z")
_CURRENCY = re.compile(r"^[A-Z]{3}\Z")
_MIN_MS = -62_135_596_800_000  # 0001-01-01T00:00:00Z
_MAX_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(slots=True)
class Event:
    """One accepted-to-be event. `entity_id` is the lead, opportunity or subscription id the type names."""

    event_id: str
    type: str
    t: int  # occurred_at, µs since the epoch
    account_id: str | None
    segment: str | None  # the event's own segment, already resolved to a configured one or "other"
    entity_id: str | None = None
    money: int | None = None  # nanos: amount, or a subscription's MRR (None: no price given)
    stage: str | None = None
    lead_id: str | None = None
    channel: str | None = None

    @property
    def routing_key(self) -> str:
        """The key lateness is judged by: `channel` for marketing, else the account."""
        return self.channel if self.type == "marketing.spend" else self.account_id  # type: ignore[return-value]


# An event's fields as a tuple, in `Event(*fields)` order: the form events take on the wire and when encoded.
event_fields: Final = attrgetter(*(f.name for f in fields(Event)))


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why a record or array element is not applied."""

    reason: str  # invalid_json | invalid_event | unknown_type | unknown_currency | too_late | processing_error
    detail: str
    type: str | None = None  # the event's type when it is a known one


# An event or its rejection, with its payload: the record's bytes, or for an array element, that element's JSON.
Decoded = tuple[Event | Rejection, bytes]


class InvalidEvent(ValueError):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


@dataclass(frozen=True)
class EventDecoder:
    """Decodes record values per SPEC §1 with the deployment's currency, FX rates and segments."""

    currency: str = "USD"
    fx_rates: Mapping[str, float] | None = None
    segments: tuple[str, ...] = ("smb", "mid_market", "enterprise")

    def decode_record(self, value: bytes) -> list[Decoded]:
        """The events of one record value, in order; bad ones become rejections, the rest still apply."""
        try:
            doc = orjson.loads(value)
        except orjson.JSONDecodeError as exc:
            return [(Rejection("invalid_json", f"record is not JSON: {exc}"), value)]
        if isinstance(doc, list):
            return [(self._decode(item), orjson.dumps(item)) for item in doc]
        return [(self._decode(doc), value)]

    def _decode(self, doc: Any) -> Event | Rejection:
        try:
            return self.event(doc)
        except InvalidEvent as exc:
            known = doc.get("type") if isinstance(doc, dict) and doc.get("type") in EVENT_TYPES else None
            return Rejection(exc.reason, str(exc), known)

    def event(self, doc: Any) -> Event:
        """Validate one decoded JSON value; raises `InvalidEvent` with the SPEC's reason."""
        if not isinstance(doc, dict):
            raise InvalidEvent("invalid_event", f"event must be a JSON object, got {type(doc).__name__}")
        kind = doc.get("type")
        if not isinstance(kind, str):
            raise InvalidEvent("invalid_event", "event has no string 'type'")
        if kind not in EVENT_TYPES:
            raise InvalidEvent("unknown_type", f"unknown event type {kind!r}")
        fields = _Fields(doc)
        event_id = fields.id("event_id")
        t = fields.occurred_at()
        marketing = kind == "marketing.spend"
        account_id = fields.id("account_id", required=not marketing)
        segment = fields.text("segment") or None
        # Shared string objects for the values every event repeats: state holds millions of events.
        kind = _TYPE_NAMES[kind]
        if account_id is not None:
            account_id = sys.intern(account_id)
        event = Event(event_id, kind, t, account_id, None if segment is None else self._segment(segment))
        family = kind.partition(".")[0]
        if family == "lead":
            event.entity_id = fields.id("lead_id")
            if kind == "lead.stage_changed":
                event.stage = fields.choice("stage", LEAD_STAGES)
        elif family == "opportunity":
            event.entity_id = fields.id("opportunity_id")
            if kind != "opportunity.lost":
                event.money = fields.money("amount", required=kind == "opportunity.created")
            if kind == "opportunity.created":
                event.lead_id = fields.id("lead_id", required=False)
        elif family == "subscription":
            event.entity_id = fields.id("subscription_id")
            if kind != "subscription.canceled":
                event.money = fields.mrr(required=kind != "subscription.renewed")
        elif family == "product":
            fields.id("user_id", required=False)
        elif marketing:
            event.channel = fields.id("channel")
            event.money = fields.money("amount", required=True)
        rate = self._rate(fields.currency())
        if event.money is not None and rate != 1.0:
            event.money = round(event.money * rate)
        return event

    def _segment(self, segment: str) -> str:
        return next((name for name in self.segments if name == segment), "other")

    def _rate(self, currency: str | None) -> float:
        if currency is None or currency == self.currency:
            return 1.0
        rate = (self.fx_rates or {}).get(currency)
        if rate is None:
            raise InvalidEvent("unknown_currency", f"currency {currency!r} is not {self.currency} and has no FX rate")
        return rate


class _Fields:
    """Typed access to an event's fields; `null` means absent. Raises `InvalidEvent` naming the field."""

    def __init__(self, doc: dict[str, Any]) -> None:
        self.doc = doc

    def _bad(self, name: str, why: str) -> InvalidEvent:
        return InvalidEvent("invalid_event", f"field '{name}' {why}")

    def id(self, name: str, *, required: bool = True) -> str | None:
        value = self.doc.get(name)
        if value is None:
            if required:
                raise self._bad(name, "is required")
            return None
        if not isinstance(value, str) or not value:
            raise self._bad(name, "must be a non-empty string")
        return value

    def text(self, name: str) -> str | None:
        value = self.doc.get(name)
        if value is not None and not isinstance(value, str):
            raise self._bad(name, "must be a string")
        return value

    def currency(self) -> str | None:
        value = self.doc.get("currency")
        if value is not None and not (isinstance(value, str) and _CURRENCY.match(value)):
            raise self._bad("currency", f"must be an upper-case ISO 4217 code; got {value!r}")
        return value

    def choice(self, name: str, allowed: tuple[str, ...]) -> str:
        value = self.doc.get(name)
        for option in allowed:
            if value == option:
                return option  # the shared string, not the decoded copy
        raise self._bad(name, f"must be one of {', '.join(allowed)}; got {value!r}")

    def number(self, name: str) -> float | None:
        value = self.doc.get(name)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise self._bad(name, f"must be a finite number; got {value!r}")
        return float(value)

    def money(self, name: str, *, required: bool) -> int | None:
        value = self.number(name)
        if value is None:
            if required:
                raise self._bad(name, "is required")
            return None
        if value < 0:
            raise self._bad(name, f"must be >= 0; got {value!r}")
        return round(value * NANOS)

    def mrr(self, *, required: bool) -> int | None:
        """A subscription's MRR: `mrr`, or `amount` per `interval_count` × `interval` (mrr wins)."""
        mrr = self.money("mrr", required=False)
        amount = self.money("amount", required=False)
        interval = self.doc.get("interval")
        count = self.doc.get("interval_count")
        if interval is not None and interval not in INTERVAL_MONTHS:
            raise self._bad("interval", f"must be one of {', '.join(INTERVAL_MONTHS)}; got {interval!r}")
        if count is not None and (isinstance(count, bool) or not isinstance(count, int) or count < 1):
            raise self._bad("interval_count", f"must be an integer >= 1; got {count!r}")
        if mrr is not None:
            return mrr
        if amount is not None and interval is not None:
            return round(amount / (INTERVAL_MONTHS[interval] * (count or 1)))
        if amount is not None or interval is not None:
            raise self._bad("amount" if amount is None else "interval", "is required with the other")
        if required:
            raise self._bad("mrr", "is required (or amount and interval)")
        return None

    def occurred_at(self) -> int:
        value = self.doc.get("occurred_at")
        if isinstance(value, int) and not isinstance(value, bool):
            if not _MIN_MS <= value <= _MAX_MS:
                raise self._bad("occurred_at", f"epoch milliseconds out of range: {value}")
            return value * US_PER_MS
        if isinstance(value, str) and _RFC3339.match(value):
            try:
                return to_micros(datetime.fromisoformat(value))
            except ValueError as exc:
                raise self._bad("occurred_at", f"is not a valid date-time: {exc}") from None
        if value is None:
            raise self._bad("occurred_at", "is required")
        raise self._bad("occurred_at", f"must be RFC 3339 with an offset or epoch milliseconds; got {value!r}")


def to_micros(moment: datetime) -> int:
    """µs since the epoch of an aware datetime, exactly (no float rounding)."""
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
