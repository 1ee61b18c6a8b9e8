"""Event validation (SPEC §1): reasons in order, field rules, money in nanos, time in µs."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from revpulse.schemas.models import NANOS, Event, EventDecoder, Rejection

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
