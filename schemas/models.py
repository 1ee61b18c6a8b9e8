"""Input events (SPEC §1): decoding a Kafka record value into validated events or rejections.

Validation runs once, at the edge; everything downstream works on `Event`, whose money is already in the
reporting currency as integer nano-units (so sums and their reversals are exact) and whose time is integer
microseconds since the epoch.
"""

from __future__ import annotations

import logging
import re
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from decimal import Decimal
from operator import attrgetter
from typing import Any, Final

import orjson

NANOS: Final = 1_000_000_000
US_PER_MS: Final = 1_000
US_PER_S: Final = 1_000_000

# SPEC §1 bounds.
MAX_ID_LENGTH: Final = 256  # characters of an id, account_id or channel
MAX_MONEY: Final = 10**12  # the largest amount or mrr, in the event's currency
MAX_ARRAY: Final = 10_000  # elements of a record that is a JSON array
MAX_FUTURE_US: Final = 86_400 * US_PER_S  # how far after the worker's wall clock occurred_at may be

log = logging.getLogger(__name__)

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
# Months in one billing interval as exact ratios (per, months): one interval is months ÷ per months, a week 12/52 of
# a month; so MRR = amount × per ÷ (months × interval_count), computed on integers.
_PER_MONTH: Final = {"week": (52, 12), "month": (1, 1), "quarter": (1, 3), "year": (1, 12)}
INTERVAL_MONTHS: Final = {name: months / per for name, (per, months) in _PER_MONTH.items()}

# The offset's hours and minutes are bounded here: `fromisoformat` takes "+05:60" as +06:00.
_RFC3339 = re.compile(
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?(Z|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])\Z"
)
_CURRENCY = re.compile(r"^[A-Z]{3}\Z")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_EXACT_FLOAT_NANOS: Final = float(2**53)  # below this, a float's nanos round to the nearest nano exactly


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

    def decode_record(self, value: bytes, now: datetime | float | None = None) -> list[Decoded]:
        """The events of one record value, in order; bad ones become rejections, the rest still apply.

        `now` is the worker's wall clock when the record arrives (an aware datetime or epoch seconds; default the
        system clock): `occurred_at` may be at most 1 day after it. Never raises, whatever the bytes.
        """
        if now is None:  # inline: the common call
            return self.decode_until(value, int(time.time() * US_PER_S) + MAX_FUTURE_US)
        return self.decode_until(value, latest_occurred_at(now))

    def decode_until(self, value: bytes, latest: int) -> list[Decoded]:
        """`decode_record` with the latest `occurred_at` accepted (µs, see `latest_occurred_at`) given: what the
        router calls, with one bound per batch."""
        try:
            try:
                doc = orjson.loads(value)
            except orjson.JSONDecodeError as exc:
                return [(Rejection("invalid_json", f"record is not JSON: {exc}"), value)]
            if type(doc) is list:
                if len(doc) > MAX_ARRAY:
                    detail = f"record is an array of {len(doc)} elements; at most {MAX_ARRAY} are allowed"
                    return [(Rejection("invalid_event", detail), value)]
                return [(self._decode(item, latest), element_json(item)) for item in doc]
            return [(self._decode(doc, latest), value)]
        except Exception as exc:  # a defect: the record is dead-lettered whole, the worker goes on
            log.exception("cannot decode a record")
            return [(Rejection("processing_error", f"internal error decoding the record: {_show_error(exc)}"), value)]

    def _decode(self, doc: Any, latest: int) -> Event | Rejection:
        try:
            return self._event(doc, latest)
        except InvalidEvent as exc:
            return Rejection(exc.reason, str(exc), _known_type(doc))
        except Exception as exc:  # a defect: this event is dead-lettered, the others still apply
            log.exception("cannot decode an event")
            return Rejection(
                "processing_error", f"internal error decoding the event: {_show_error(exc)}", _known_type(doc)
            )

    def event(self, doc: Any, now: datetime | float | None = None) -> Event:
        """Validate one decoded JSON value at wall clock `now`; raises `InvalidEvent` with the SPEC's reason."""
        return self._event(doc, latest_occurred_at(now))

    def _event(self, doc: Any, latest: int) -> Event:
        if not isinstance(doc, dict):
            raise InvalidEvent("invalid_event", f"event must be a JSON object, got {type(doc).__name__}")
        kind = doc.get("type")
        if not isinstance(kind, str):
            raise InvalidEvent("invalid_event", "event has no string 'type'")
        if kind not in EVENT_TYPES:
            raise InvalidEvent("unknown_type", f"unknown event type {_show(kind)}")
        fields = _Fields(doc, latest)
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
            event.money = _convert(event.money, rate)
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

    def __init__(self, doc: dict[str, Any], latest: int) -> None:
        self.doc = doc
        self.latest = latest  # µs: the latest occurred_at accepted

    def _bad(self, name: str, why: str) -> InvalidEvent:
        return InvalidEvent("invalid_event", f"field '{name}' {why}")

    def id(self, name: str, *, required: bool = True) -> str | None:
        value = self.doc.get(name)
        if type(value) is str and 0 < len(value) <= MAX_ID_LENGTH:
            return value
        if value is None:
            if required:
                raise self._bad(name, "is required")
            return None
        if not isinstance(value, str) or not value:
            raise self._bad(name, f"must be a non-empty string; got {_show(value)}")
        raise self._bad(name, f"must be at most {MAX_ID_LENGTH} characters; got {len(value)}")

    def text(self, name: str) -> str | None:
        value = self.doc.get(name)
        if value is not None and not isinstance(value, str):
            raise self._bad(name, f"must be a string; got {_show(value)}")
        return value

    def currency(self) -> str | None:
        value = self.doc.get("currency")
        if value is not None and not (isinstance(value, str) and _CURRENCY.match(value)):
            raise self._bad("currency", f"must be an upper-case ISO 4217 code; got {_show(value)}")
        return value

    def choice(self, name: str, allowed: tuple[str, ...]) -> str:
        value = self.doc.get(name)
        for option in allowed:
            if value == option:
                return option  # the shared string, not the decoded copy
        raise self._bad(name, f"must be one of {', '.join(allowed)}; got {_show(value)}")

    def money(self, name: str, *, required: bool) -> int | None:
        """A JSON number in [0, 10¹²] as exact nanos: an int exactly, a float to the nano of its shortest
        decimal form (the JSON text it came from, up to 17 significant digits)."""
        value = self.doc.get(name)
        kind = type(value)
        if kind is int:
            if 0 <= value <= MAX_MONEY:
                return value * NANOS  # type: ignore[no-any-return]
        elif kind is float:
            if 0.0 <= value <= MAX_MONEY:  # False for NaN
                nanos = value * NANOS
                return round(nanos) if nanos < _EXACT_FLOAT_NANOS else round(Decimal(repr(value)) * NANOS)
        elif value is None:
            if required:
                raise self._bad(name, "is required")
            return None
        else:
            raise self._bad(name, f"must be a JSON number (not a string or boolean); got {_show(value)}")
        raise self._bad(name, f"must be a finite number >= 0 and <= 1e12; got {_show(value)}")

    def mrr(self, *, required: bool) -> int | None:
        """A subscription's MRR: `mrr`, or `amount` per `interval_count` × `interval` (mrr wins)."""
        mrr = self.money("mrr", required=False)
        amount = self.money("amount", required=False)
        interval = self.doc.get("interval")
        count = self.doc.get("interval_count")
        if interval is not None and (type(interval) is not str or interval not in _PER_MONTH):
            raise self._bad("interval", f"must be one of {', '.join(_PER_MONTH)}; got {_show(interval)}")
        if count is not None and (type(count) is not int or count < 1):
            raise self._bad("interval_count", f"must be an integer >= 1; got {_show(count)}")
        if mrr is not None:
            return mrr
        if amount is not None and interval is not None:
            per, months = _PER_MONTH[interval]
            return _divide(amount * per, months * (count or 1))
        if amount is not None or interval is not None:
            raise self._bad("amount" if amount is None else "interval", "is required with the other")
        if required:
            raise self._bad("mrr", "is required (or amount and interval)")
        return None

    def occurred_at(self) -> int:
        value = self.doc.get("occurred_at")
        if type(value) is int:
            t = value * US_PER_MS
        elif type(value) is str and _RFC3339.match(value):
            try:
                t = to_micros(datetime.fromisoformat(value))
            except (ValueError, OverflowError) as exc:
                raise self._bad("occurred_at", f"is not a valid date-time: {exc}; got {_show(value)}") from None
        elif value is None:
            raise self._bad("occurred_at", "is required")
        else:
            raise self._bad(
                "occurred_at", f"must be RFC 3339 with an offset or integer epoch milliseconds; got {_show(value)}"
            )
        if t < 0:
            raise self._bad("occurred_at", f"is before 1970-01-01T00:00:00Z; got {_show(value)}")
        if t > self.latest:
            clock = _iso(self.latest - MAX_FUTURE_US)
            raise self._bad("occurred_at", f"is more than 1 day after the worker's clock ({clock}); got {_show(value)}")
        return t


def latest_occurred_at(now: datetime | float | None) -> int:
    """The latest `occurred_at` (µs) accepted at wall clock `now`: an aware datetime, epoch seconds, or None for
    the system clock."""
    if now is None:
        return int(time.time() * US_PER_S) + MAX_FUTURE_US
    if isinstance(now, datetime):
        return to_micros(now) + MAX_FUTURE_US
    return round(now * US_PER_S) + MAX_FUTURE_US


def _convert(nanos: int, rate: float) -> int:
    """nanos × rate, to the nano: beyond a double's exact integers, by the rate's shortest decimal form."""
    converted = nanos * rate
    return round(converted) if converted < _EXACT_FLOAT_NANOS else round(nanos * Decimal(repr(rate)))


def _divide(numerator: int, denominator: int) -> int:
    """numerator ÷ denominator rounded to the nearest integer (ties to even, like `round`), exactly."""
    quotient, remainder = divmod(numerator, denominator)
    if 2 * remainder > denominator or (2 * remainder == denominator and quotient & 1):
        quotient += 1
    return quotient


def _known_type(doc: Any) -> str | None:
    """The event's type when it is a known one (it labels the rejection's counter)."""
    kind = doc.get("type") if type(doc) is dict else None
    return _TYPE_NAMES.get(kind) if type(kind) is str else None


def _show(value: Any) -> str:
    """A field's value for a rejection's detail: short (details travel in headers), never raising."""
    if isinstance(value, dict):
        return f"a JSON object of {len(value)} fields"
    if isinstance(value, list):
        return f"a JSON array of {len(value)} elements"
    if isinstance(value, str) and len(value) > 64:
        return f"{value[:48]!r}... ({len(value)} characters)"
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10**30:
        return f"an integer of {len(str(abs(value)))} digits" if abs(value) < 10**4000 else "a huge integer"
    return repr(value)


def _show_error(exc: BaseException) -> str:
    try:
        text = repr(exc)
    except Exception:
        text = type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def _iso(us: int) -> str:
    seconds, micros = divmod(us, US_PER_S)
    try:
        text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
    except (OverflowError, OSError, ValueError):
        return f"{us} µs since the epoch"
    return text + (f".{micros:06d}Z" if micros else "Z")


def element_json(element: Any) -> bytes:
    """An array element's own JSON (the payload of its dead letter), whatever its depth."""
    try:
        return orjson.dumps(element)
    except orjson.JSONEncodeError:
        return _dumps_deep(element)  # nested deeper than orjson writes (it reads deeper than it writes)


def _dumps_deep(value: Any) -> bytes:
    """Compact JSON of a decoded value of any depth, without recursion."""
    out: list[bytes] = []
    stack: list[Any] = [value]
    while stack:
        item = stack.pop()
        if type(item) is bytes:
            out.append(item)
        elif type(item) is list:
            stack.append(b"]")
            for i in range(len(item) - 1, -1, -1):
                stack.append(item[i])
                if i:
                    stack.append(b",")
            out.append(b"[")
        elif type(item) is dict:
            stack.append(b"}")
            entries = list(item.items())
            for i in range(len(entries) - 1, -1, -1):
                key, field = entries[i]
                stack.append(field)
                stack.append(orjson.dumps(key) + b":")
                if i:
                    stack.append(b",")
            out.append(b"{")
        else:
            out.append(orjson.dumps(item))
    return b"".join(out)


def to_micros(moment: datetime) -> int:
    """µs since the epoch of an aware datetime, exactly (no float rounding)."""
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
