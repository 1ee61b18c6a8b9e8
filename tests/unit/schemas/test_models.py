"""Event validation (SPEC §1): reasons in order, field rules, money in nanos, time in µs."""

from __future__ import annotations

import math
import time
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from revpulse.schemas import models
from revpulse.schemas.models import NANOS, Event, EventDecoder, InvalidEvent, Rejection

DECODER = EventDecoder("USD", {"EUR": 1.08}, ("smb", "mid_market", "enterprise"))
BASE = {"event_id": "e1", "occurred_at": "2024-03-17T10:00:00Z", "account_id": "a"}


def decode(doc: Any) -> Event | Rejection:
    ((item, _),) = DECODER.decode_record(orjson.dumps(doc))
    return item


def reason(doc: Any) -> str | None:
    item = decode(doc)
    return item.reason if isinstance(item, Rejection) else None


@pytest.mark.parametrize(
    ("doc", "expected"),
    [
        ([1], "invalid_event"),
        ({"type": 5}, "invalid_event"),
        ({**BASE, "type": "lead.deleted"}, "unknown_type"),
        ({**BASE, "type": "lead.created"}, "invalid_event"),  # no lead_id
        ({**BASE, "type": "lead.created", "lead_id": ""}, "invalid_event"),
        ({**BASE, "type": "lead.stage_changed", "lead_id": "L", "stage": "won"}, "invalid_event"),
        ({**BASE, "type": "opportunity.created", "opportunity_id": "o", "amount": "10"}, "invalid_event"),
        ({**BASE, "type": "opportunity.created", "opportunity_id": "o", "amount": -1}, "invalid_event"),
        ({**BASE, "type": "subscription.started", "subscription_id": "s", "amount": 10}, "invalid_event"),
        (
            {**BASE, "type": "subscription.started", "subscription_id": "s", "amount": 10, "interval": "day"},
            "invalid_event",
        ),
        (
            {**BASE, "type": "subscription.started", "subscription_id": "s", "mrr": 1, "interval_count": 0},
            "invalid_event",
        ),
        ({**BASE, "type": "product.usage", "occurred_at": "2024-03-17T10:00:00"}, "invalid_event"),
        ({**BASE, "type": "product.usage", "occurred_at": "2024-02-30T10:00:00Z"}, "invalid_event"),
        ({**BASE, "type": "product.usage", "occurred_at": 1.5}, "invalid_event"),
        ({**BASE, "type": "product.usage", "account_id": None}, "invalid_event"),
        ({**BASE, "type": "product.usage", "currency": "usd"}, "invalid_event"),
        ({**BASE, "type": "marketing.spend", "channel": "ads", "amount": 5, "currency": "GBP"}, "unknown_currency"),
        ({**BASE, "type": "lead.created", "lead_id": "L", "currency": "GBP"}, "unknown_currency"),
        ({**BASE, "type": "product.usage", "segment": None, "quantity": "many", "extra": 1}, None),
        ({"event_id": "m", "type": "marketing.spend", "occurred_at": 0, "channel": "ads", "amount": 5}, None),
    ],
)
def test_reasons(doc: Any, expected: str | None) -> None:
    assert reason(doc) == expected


def test_invalid_json_keeps_bytes() -> None:
    ((item, payload),) = DECODER.decode_record(b"\xff{")
    assert isinstance(item, Rejection) and item.reason == "invalid_json" and payload == b"\xff{"


def test_mrr_from_amount_interval_and_fx() -> None:
    event = decode(
        {
            **BASE,
            "type": "subscription.started",
            "subscription_id": "s",
            "amount": 1200,
            "interval": "quarter",
            "interval_count": 2,
            "currency": "EUR",
        }
    )
    assert isinstance(event, Event)
    assert event.money == round(1200 / 6 * 1.08 * NANOS)
    weekly = decode({**BASE, "type": "subscription.started", "subscription_id": "s", "amount": 12, "interval": "week"})
    assert isinstance(weekly, Event) and weekly.money == round(12 / (12 / 52) * NANOS)
    both = decode(
        {**BASE, "type": "subscription.updated", "subscription_id": "s", "mrr": 5, "amount": 1, "interval": "month"}
    )
    assert isinstance(both, Event) and both.money == 5 * NANOS


def test_times_and_segments() -> None:
    offset = decode(
        {**BASE, "type": "product.usage", "occurred_at": "2024-03-17T12:00:00.5+02:00", "segment": "startup"}
    )
    epoch = decode({**BASE, "type": "product.usage", "occurred_at": 1710669600500, "segment": ""})
    assert isinstance(offset, Event) and isinstance(epoch, Event)
    assert offset.t == epoch.t == 1_710_669_600_500_000
    assert (offset.segment, epoch.segment) == ("other", None)


def test_array_elements_are_separate() -> None:
    (first, _), (second, payload) = DECODER.decode_record(orjson.dumps([{**BASE, "type": "product.usage"}, "junk"]))
    assert isinstance(first, Event)
    assert isinstance(second, Rejection) and payload == b'"junk"'


# SPEC §1 bounds: at the bound accepted, just past it rejected (reason and detail), never an exception.

NOW = datetime(2024, 3, 17, 10, 0, tzinfo=UTC)  # the worker's wall clock in these tests
NOW_MS = 1_710_669_600_000
DAY_MS = 86_400_000


def decode_at(doc: Any, now: datetime | float = NOW) -> Event | Rejection:
    ((item, _),) = DECODER.decode_record(orjson.dumps(doc), now)
    return item


def rejected(item: Event | Rejection, detail: str, reason: str = "invalid_event") -> bool:
    assert isinstance(item, Rejection), item
    assert (item.reason, item.detail) == (reason, detail)
    return True


ID_FIELDS = [
    ("event_id", {**BASE, "type": "product.usage"}),
    ("account_id", {**BASE, "type": "product.usage"}),
    ("user_id", {**BASE, "type": "product.usage"}),
    ("lead_id", {**BASE, "type": "lead.created", "lead_id": "L"}),
    ("lead_id", {**BASE, "type": "opportunity.created", "opportunity_id": "o", "amount": 1}),
    ("opportunity_id", {**BASE, "type": "opportunity.lost", "opportunity_id": "o"}),
    ("subscription_id", {**BASE, "type": "subscription.canceled", "subscription_id": "s"}),
    ("channel", {"event_id": "m", "type": "marketing.spend", "occurred_at": 0, "channel": "ads", "amount": 5}),
    ("account_id", {"event_id": "m", "type": "marketing.spend", "occurred_at": 0, "channel": "ads", "amount": 5}),
]


@pytest.mark.parametrize(("field", "doc"), ID_FIELDS, ids=[f"{d['type']}.{f}" for f, d in ID_FIELDS])
def test_ids_are_non_empty_and_at_most_256_characters(field: str, doc: dict[str, Any]) -> None:
    longest = "é" * 256  # characters, not bytes
    event = decode_at({**doc, field: longest})
    assert isinstance(event, Event)
    assert longest in (event.event_id, event.account_id, event.entity_id, event.lead_id, event.channel) or (
        field == "user_id"
    )
    assert rejected(
        decode_at({**doc, field: longest + "x"}), f"field '{field}' must be at most 256 characters; got 257"
    )
    assert rejected(decode_at({**doc, field: ""}), f"field '{field}' must be a non-empty string; got ''")
    assert rejected(decode_at({**doc, field: 7}), f"field '{field}' must be a non-empty string; got 7")


def test_a_huge_value_gives_a_short_detail() -> None:
    item = decode_at({**BASE, "type": "product.usage", "event_id": "x" * 1_000_000})
    assert rejected(item, "field 'event_id' must be at most 256 characters; got 1000000")
    item = decode_at({**BASE, "type": "lead.stage_changed", "lead_id": "L", "stage": "s" * 1_000_000})
    assert isinstance(item, Rejection) and item.reason == "invalid_event" and len(item.detail) < 200
    item = decode_at({**BASE, "type": "t" * 1_000_000})
    assert isinstance(item, Rejection) and item.reason == "unknown_type" and len(item.detail) < 200


MONEY_DOCS = [
    ("amount", {**BASE, "type": "opportunity.created", "opportunity_id": "o"}),
    ("amount", {**BASE, "type": "opportunity.won", "opportunity_id": "o"}),
    ("amount", {"event_id": "m", "type": "marketing.spend", "occurred_at": 0, "channel": "ads"}),
    ("mrr", {**BASE, "type": "subscription.started", "subscription_id": "s"}),
    ("mrr", {**BASE, "type": "subscription.renewed", "subscription_id": "s"}),
    ("amount", {**BASE, "type": "subscription.updated", "subscription_id": "s", "interval": "month"}),
]


@pytest.mark.parametrize(("field", "doc"), MONEY_DOCS, ids=[f"{d['type']}.{f}" for f, d in MONEY_DOCS])
def test_money_is_a_finite_json_number_from_0_to_10_to_the_12(field: str, doc: dict[str, Any]) -> None:
    for value, nanos in [(0, 0), (-0.0, 0), (0.1, 100_000_000), (10**12, 10**21), (1e12, 10**21)]:
        event = decode_at({**doc, field: value})
        assert isinstance(event, Event) and event.money == nanos, value
    bound = f"field '{field}' must be a finite number >= 0 and <= 1e12; got"
    assert rejected(decode_at({**doc, field: 10**12 + 1}), f"{bound} 1000000000001")
    assert rejected(decode_at({**doc, field: math.nextafter(1e12, math.inf)}), f"{bound} 1000000000000.0001")
    assert rejected(decode_at({**doc, field: -1e-9}), f"{bound} -1e-09")
    assert rejected(decode_at({**doc, field: 1.8e299}), f"{bound} 1.8e+299")
    assert rejected(decode_at({**doc, field: 2**64 - 1}), f"{bound} 18446744073709551615")
    # Beyond 64 bits orjson reads an integer as a float; beyond a double, the record is not JSON.
    huge = orjson.dumps({**doc, field: 0}).replace(f'"{field}":0'.encode(), f'"{field}":{10**30}'.encode())
    ((item, _),) = DECODER.decode_record(huge, NOW)
    assert rejected(item, f"{bound} 1e+30")
    ((item, _),) = DECODER.decode_record(huge.replace(b"1000000000000000000000000000000", b"1e400"), NOW)
    assert isinstance(item, Rejection) and item.reason == "invalid_json"
    number = f"field '{field}' must be a JSON number (not a string or boolean); got"
    assert rejected(decode_at({**doc, field: "10"}), f"{number} '10'")
    assert rejected(decode_at({**doc, field: True}), f"{number} True")
    assert rejected(decode_at({**doc, field: [1]}), f"{number} a JSON array of 1 elements")
    # JSON has no NaN or infinity, but the decoder also validates Python values.
    for value in (math.nan, math.inf, -math.inf):
        with pytest.raises(InvalidEvent, match=f"field '{field}' must be a finite number"):
            DECODER.event({**doc, field: value}, NOW)


def test_money_is_exact_up_to_10_to_the_12() -> None:
    doc = {**BASE, "type": "opportunity.created", "opportunity_id": "o"}
    for value, nanos in [
        (999_999_999_999, 999_999_999_999 * NANOS),
        (999_999_999_999.999, 999_999_999_999_999_000_000),
        (123_456_789.123456789, 123_456_789_123_456_790),  # the float's shortest form: 123456789.12345679
        (0.000000001, 1),
        (19_999_999_999.99, 19_999_999_999_990_000_000),  # beyond 64 bits in nanos: ~1.8e19
    ]:
        event = decode_at({**doc, "amount": value})
        assert isinstance(event, Event) and event.money == nanos, value
    weekly = decode_at(
        {**BASE, "type": "subscription.started", "subscription_id": "s", "amount": 10**12, "interval": "week"}
    )
    assert isinstance(weekly, Event) and weekly.money == 4_333_333_333_333_333_333_333  # 10²¹ × 52 ÷ 12, exactly
    huge_count = decode_at(
        {
            **BASE,
            "type": "subscription.started",
            "subscription_id": "s",
            "amount": 1,
            "interval": "year",
            "interval_count": 2**64 - 1,
        }
    )
    assert isinstance(huge_count, Event) and huge_count.money == 0


@pytest.mark.parametrize(
    ("occurred_at", "t"),
    [
        (0, 0),
        ("1970-01-01T00:00:00Z", 0),
        ("1970-01-01T01:00:00+01:00", 0),
        ("1969-12-31T19:00:00.000001-05:00", 1),
        (NOW_MS + DAY_MS, (NOW_MS + DAY_MS) * 1000),
        ("2024-03-18T10:00:00Z", (NOW_MS + DAY_MS) * 1000),
        ("2024-03-18T10:00:00.000000Z", (NOW_MS + DAY_MS) * 1000),
        ("2024-03-18T11:00:00+01:00", (NOW_MS + DAY_MS) * 1000),
        ("2024-03-18T09:59:59.9999999999-00:00", (NOW_MS + DAY_MS) * 1000 - 1),
        ("2024-03-17T10:00:00+23:59", NOW_MS * 1000 - 86_340_000_000),
    ],
)
def test_occurred_at_accepted_within_the_bounds(occurred_at: Any, t: int) -> None:
    event = decode_at({**BASE, "type": "product.usage", "occurred_at": occurred_at})
    assert isinstance(event, Event) and event.t == t


EARLY = "field 'occurred_at' is before 1970-01-01T00:00:00Z; got "
LATE = "field 'occurred_at' is more than 1 day after the worker's clock (2024-03-17T10:00:00Z); got "
FORM = "field 'occurred_at' must be RFC 3339 with an offset or integer epoch milliseconds; got "


@pytest.mark.parametrize(
    ("occurred_at", "detail"),
    [
        (-1, EARLY + "-1"),
        ("1969-12-31T23:59:59.999999Z", EARLY + "'1969-12-31T23:59:59.999999Z'"),
        ("1970-01-01T00:59:59+01:00", EARLY + "'1970-01-01T00:59:59+01:00'"),
        ("0001-01-01T00:00:00+23:59", EARLY + "'0001-01-01T00:00:00+23:59'"),
        (-(2**63), EARLY + "-9223372036854775808"),
        (NOW_MS + DAY_MS + 1, LATE + "1710756000001"),
        ("2024-03-18T10:00:00.000001Z", LATE + "'2024-03-18T10:00:00.000001Z'"),
        ("2024-03-18T10:00:00-00:01", LATE + "'2024-03-18T10:00:00-00:01'"),
        ("9999-12-31T23:59:59-23:59", LATE + "'9999-12-31T23:59:59-23:59'"),
        (2**64 - 1, LATE + "18446744073709551615"),
        ("2024-03-17T10:00:00+24:00", FORM + "'2024-03-17T10:00:00+24:00'"),
        ("2024-03-17T10:00:00+05:60", FORM + "'2024-03-17T10:00:00+05:60'"),
        ("2024-03-17T10:00:00+0500", FORM + "'2024-03-17T10:00:00+0500'"),
        ("2024-03-17T10:00:00z", FORM + "'2024-03-17T10:00:00z'"),
        ("2024-03-17T10:00:00", FORM + "'2024-03-17T10:00:00'"),
        ("2024-03-17T10:00Z", FORM + "'2024-03-17T10:00Z'"),
        (1.5, FORM + "1.5"),
        (float(NOW_MS), FORM + "1710669600000.0"),
        (True, FORM + "True"),
        ("1710669600000", FORM + "'1710669600000'"),
        ([2024], FORM + "a JSON array of 1 elements"),
        (None, "field 'occurred_at' is required"),
    ],
)
def test_occurred_at_rejected_past_the_bounds(occurred_at: Any, detail: str) -> None:
    assert rejected(decode_at({**BASE, "type": "product.usage", "occurred_at": occurred_at}), detail)


@pytest.mark.parametrize("occurred_at", ["2024-02-30T10:00:00Z", "0000-01-01T00:00:00Z", "2024-03-17T24:00:00Z"])
def test_occurred_at_impossible_dates(occurred_at: str) -> None:
    item = decode_at({**BASE, "type": "product.usage", "occurred_at": occurred_at})
    assert isinstance(item, Rejection) and item.reason == "invalid_event"
    assert item.detail.startswith("field 'occurred_at' is not a valid date-time: ")


def test_the_clock_may_be_epoch_seconds_and_defaults_to_the_system_clock() -> None:
    at_bound = {**BASE, "type": "product.usage", "occurred_at": NOW_MS + DAY_MS}
    assert isinstance(decode_at(at_bound, NOW_MS / 1000), Event)
    assert isinstance(decode_at({**at_bound, "occurred_at": NOW_MS + DAY_MS + 1}, NOW_MS / 1000), Rejection)
    tomorrow = round((time.time() + 86_000) * 1000)
    assert isinstance(decode({**at_bound, "occurred_at": tomorrow}), Event)
    assert isinstance(decode({**at_bound, "occurred_at": tomorrow + 1_000_000}), Rejection)


def test_an_array_of_more_than_10000_elements_is_one_rejection() -> None:
    element = {**BASE, "type": "product.usage"}
    decoded = DECODER.decode_record(orjson.dumps([element] * 10_000), NOW)
    assert len(decoded) == 10_000 and all(isinstance(item, Event) for item, _ in decoded)
    value = orjson.dumps([element] * 10_001)
    ((item, payload),) = DECODER.decode_record(value, NOW)
    assert rejected(item, "record is an array of 10001 elements; at most 10000 are allowed")
    assert payload == value


def test_unhashable_values_are_rejections() -> None:
    assert rejected(decode_at({**BASE, "type": ["lead.created"]}), "event has no string 'type'")
    sub = {**BASE, "type": "subscription.started", "subscription_id": "s", "amount": 1}
    assert rejected(
        decode_at({**sub, "interval": ["month"]}),
        "field 'interval' must be one of week, month, quarter, year; got a JSON array of 1 elements",
    )
    assert rejected(
        decode_at({**sub, "interval": "month", "interval_count": {"n": 1}}),
        "field 'interval_count' must be an integer >= 1; got a JSON object of 1 fields",
    )


def test_deeply_nested_elements_keep_their_json() -> None:
    # orjson reads 1024 levels but writes only 254: the element's JSON is written without it then.
    deep = b"[" * 1000 + b"]" * 1000
    ((item, payload),) = DECODER.decode_record(b"[" + deep + b"]", NOW)
    assert isinstance(item, Rejection) and item.reason == "invalid_event" and payload == deep
    element = b'{"event_id":"e1","type":"product.usage","occurred_at":0,"account_id":"a","x":{"y":' + deep + b"}}"
    ((event, payload),) = DECODER.decode_record(b"[" + element + b"]", NOW)
    assert isinstance(event, Event) and payload == element


def test_anything_unexpected_is_a_processing_error(monkeypatch: pytest.MonkeyPatch) -> None:
    # An FX rate the decoder cannot use (here, infinite) fails that event only.
    decoder = EventDecoder("USD", {"EUR": math.inf})
    record = orjson.dumps(
        [
            {**BASE, "type": "opportunity.created", "opportunity_id": "o", "amount": 5, "currency": "EUR"},
            {**BASE, "type": "product.usage"},
        ]
    )
    (broken, _), (fine, _) = decoder.decode_record(record, NOW)
    assert isinstance(broken, Rejection) and broken.reason == "processing_error"
    assert broken.type == "opportunity.created"
    assert broken.detail == "internal error decoding the event: OverflowError('cannot convert Infinity to integer')"
    assert isinstance(fine, Event)

    def explode(value: bytes) -> Any:
        raise RuntimeError("boom")

    monkeypatch.setattr(models.orjson, "loads", explode)
    ((item, payload),) = DECODER.decode_record(b"{}", NOW)
    assert rejected(item, "internal error decoding the record: RuntimeError('boom')", "processing_error")
    assert payload == b"{}"
