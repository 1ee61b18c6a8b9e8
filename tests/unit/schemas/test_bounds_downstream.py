"""SPEC §1 bounds past the decoder: the largest amounts come out of every path exact, the wall clock bounds
`occurred_at` in the router and the pipeline, and a malformed routed item is a dead letter, not a crash."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import orjson

from revpulse.schemas.models import NANOS, EventDecoder, latest_occurred_at
from revpulse.settings import Settings
from revpulse.streams.engine import EngineConfig
from revpulse.streams.partition import InputRecord, Router, Shard
from revpulse.streams.pipeline import Pipeline
from revpulse.streams.wire import decode_items, encode_items, event_of
from tests.support.harness import Harness

NOW = datetime(2024, 3, 17, 10, 0, tzinfo=UTC)
NOW_S = NOW.timestamp()
MAX = 10**12  # SPEC §1: the largest amount or mrr


def _events(t: str = "2024-03-17T10:00:00Z") -> list[dict[str, Any]]:
    base = {"occurred_at": t, "account_id": "a"}
    return [
        {**base, "event_id": "o1", "type": "opportunity.created", "opportunity_id": "o", "amount": MAX},
        {**base, "event_id": "o2", "type": "opportunity.won", "opportunity_id": "o", "amount": MAX},
        {**base, "event_id": "s1", "type": "subscription.started", "subscription_id": "s", "mrr": MAX},
        {
            **base,
            "event_id": "s2",
            "type": "subscription.started",
            "subscription_id": "y",
            "amount": 1e12,
            "interval": "year",
        },
        {**base, "event_id": "s3", "type": "subscription.started", "subscription_id": "z", "mrr": MAX},
        {**base, "event_id": "m1", "type": "marketing.spend", "channel": "ads", "amount": MAX, "currency": "EUR"},
    ]


def test_the_largest_amounts_go_through_the_pipeline_exact(harness_factory: Callable[..., Harness]) -> None:
    harness = harness_factory(fx_rates={"EUR": 1.08})
    harness.send(*_events()[:3])
    assert harness.dead == []
    assert harness.value("won_amount", window="30d") == 1e12
    assert harness.value("open_pipeline_amount") == 0
    assert harness.value("mrr") == 1e12
    assert harness.value("arr") == 12e12
    harness.send(_events()[4])  # a second subscription: 2 × 10²¹ nanos
    assert harness.value("mrr") == 2e12
    harness.send(_events()[5])
    assert harness.value("marketing_spend", window="1d") == 1.08e12


def test_the_largest_amounts_cross_the_shard_topic_exact() -> None:
    router = Router(EventDecoder("USD", {"EUR": 1.08}), shards=1)
    records = [InputRecord("crm.events", 0, i, orjson.dumps(e), 0.0) for i, e in enumerate(_events())]
    records.append(InputRecord("crm.events", 0, 99, orjson.dumps(_events()), 0.0))  # one array record
    (items,) = router.route(records, NOW).values()
    events = [event_of(item) for item in items]
    assert {event.money for event in events} == {MAX * NANOS, MAX * NANOS // 12, 108 * MAX * NANOS // 100}
    assert all(event.money > 2**64 for event in events)  # beyond any 64-bit integer
    wire, invalid = decode_items(encode_items(items), latest_occurred_at(NOW))
    assert invalid == 0
    assert [event_of(item) for item in wire] == events
    assert [item[:7] for item in wire] == [item[:7] for item in items]
    # A shard fed from the wire ends in the same state as one fed in process.
    local, remote = Shard(0, EngineConfig()), Shard(0, EngineConfig())
    assert local.apply(items, 1).dead == remote.apply(wire, 1).dead == []
    assert local.state.engine.ledger.items() == remote.state.engine.ledger.items()
    assert local.state.outcomes == remote.state.outcomes


def test_money_is_a_json_integer_on_the_wire_up_to_64_bits_then_a_string() -> None:
    router = Router(EventDecoder(), shards=1)
    amounts = [12.5, 18_446_744_073, 18_446_744_073.709553, 2e10]
    records = [
        InputRecord("crm.events", 0, i, orjson.dumps({**_events()[0], "amount": amount}), 0.0)
        for i, amount in enumerate(amounts)
    ]
    (items,) = router.route(records, NOW).values()
    wire = encode_items(items)
    assert [item[13] for item in orjson.loads(wire)] == [
        12_500_000_000,
        18_446_744_073_000_000_000,  # under 2⁶⁴: still an integer
        "18446744073709553000",
        "20000000000000000000",
    ]
    assert [event_of(item).money for item in decode_items(wire, latest_occurred_at(NOW))[0]] == [
        12_500_000_000,
        18_446_744_073_000_000_000,
        18_446_744_073_709_553_000,
        20_000_000_000_000_000_000,
    ]


def test_a_malformed_routed_event_is_a_dead_letter() -> None:
    router = Router(EventDecoder(), shards=1)
    value = orjson.dumps(_events()[0])
    (items,) = router.route([InputRecord("crm.events", 0, 0, value, 0.0)], NOW).values()
    shard = Shard(0, EngineConfig())
    bad = [
        [*items[0][:13], "12x", *items[0][14:]],  # money neither an integer nor its decimal string
        [*items[0][:13], 1.5, *items[0][14:]],
        items[0][:10],  # too few fields
        [*items[0], "extra"],
    ]
    for offset, item in enumerate(bad):
        item[2] = offset
    output = shard.apply(bad, 1)
    assert [(letter.reason, letter.payload) for letter in output.dead] == [("processing_error", value)] * 4
    assert output.dead[0].detail == "malformed routed event: ValueError('money must be an integer, got str')"
    assert shard.state.outcomes[("crm.events", "invalid", "rejected")] == 4


def test_the_router_and_the_pipeline_bound_occurred_at_by_their_clock() -> None:
    in_a_day = {**_events()[0], "occurred_at": "2024-03-18T10:00:00Z"}
    past_a_day = {**in_a_day, "event_id": "late", "occurred_at": "2024-03-18T10:00:00.001Z"}
    router = Router(EventDecoder(), shards=1)
    records = [InputRecord("crm.events", 0, i, orjson.dumps(e), 0.0) for i, e in enumerate([in_a_day, past_a_day])]
    for now in (NOW, NOW_S):
        (items,) = router.route(records, now).values()
        assert [item[6] for item in items] == ["e", "r"]
        assert items[1][7:9] == [
            "invalid_event",
            "field 'occurred_at' is more than 1 day after the worker's clock (2024-03-17T10:00:00Z); got "
            "'2024-03-18T10:00:00.001Z'",
        ]
    pipeline = Pipeline(Settings(clock="event"), clock=lambda: NOW_S)
    dead = pipeline.process(records)
    assert [(letter.reason, letter.offset) for letter in dead] == [("invalid_event", 1)]
    later = Pipeline(Settings(clock="event"), clock=lambda: NOW_S + 0.001)
    assert later.process(records) == []


def test_an_event_from_the_year_9999_does_not_move_the_windows(harness_factory: Callable[..., Harness]) -> None:
    harness = harness_factory()
    harness.send({**_events()[0], "occurred_at": "2024-03-17T10:00:00Z"})
    harness.send({**_events()[0], "event_id": "far", "occurred_at": "9999-12-31T23:59:59-23:59"})
    assert [letter.reason for letter in harness.dead] == ["invalid_event"]
    harness.values()
    assert harness.pipeline.as_of_text == "2024-03-17T10:00:00Z"
