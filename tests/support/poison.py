"""Poison records (SPEC §1: no record can stop a worker) and the valid event mix they are interleaved with.

Shared by tests/unit/test_poison.py (in process) and tests/integration/test_poison.py (one real worker): the same
valid events, the same poison, the same expected dead letters.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from revpulse.settings import Settings
from revpulse.streams.pipeline import Pipeline
from tests.support.harness import Harness

# The valid events fall in [START, START + 7 days); the in-process wall clock is after all of them.
START = datetime(2024, 3, 10, tzinfo=UTC)
NOW = datetime(2024, 3, 17, 10, 0, tzinfo=UTC)
SEGMENTS = ("smb", "mid_market", "enterprise", None, "startup")  # None: no segment; "startup" becomes other
CHANNELS = ("ads", "seo", "events")
MAX_MONEY = 10**12


def _at(hours: float) -> str:
    return (START + timedelta(hours=hours)).strftime("%Y-%m-%dT%H:%M:%SZ")


def valid_events(accounts: int = 15) -> list[dict[str, Any]]:
    """A mix of every event type over 15 accounts and 7 days, in occurred_at order per account; no event is late,
    duplicated or invalid. Amounts are multiples of 1/2, so every sum is an exact double."""
    events: list[dict[str, Any]] = []

    def add(event_id: str, kind: str, hours: float, account: str | None, **fields: Any) -> None:
        event = {"event_id": event_id, "type": kind, "occurred_at": _at(hours), **fields}
        if account is not None:
            event["account_id"] = account
        events.append(event)

    for i in range(accounts):
        a, h = f"acc-{i}", 10 * i  # each account's story starts 10 hours after the previous one's
        segment = SEGMENTS[i % len(SEGMENTS)]
        extra = {} if segment is None else {"segment": segment}
        if i % 2 == 0 and segment is not None:
            add(f"{a}-upd", "account.updated", h, a, name=f"Account {i}", **extra)
        add(f"{a}-lead", "lead.created", h + 1, a, lead_id=f"L{i}", source=CHANNELS[i % 3], **extra)
        add(f"{a}-mql", "lead.stage_changed", h + 2, a, lead_id=f"L{i}", stage="mql")
        if i % 4 != 3:
            add(f"{a}-sql", "lead.stage_changed", h + 3, a, lead_id=f"L{i}", stage="sql")
        else:
            add(f"{a}-dq", "lead.stage_changed", h + 3, a, lead_id=f"L{i}", stage="disqualified")
        add(f"{a}-sig", "product.signup", h + 1.5, a, user_id=f"u{i}")
        add(f"{a}-trial", "product.trial_started", h + 2.5, a, user_id=f"u{i}")
        if i % 3 != 2:
            add(f"{a}-act", "product.activated", h + 3.5, a, user_id=f"u{i}")
        add(f"{a}-use", "product.usage", h + 4.5, a, feature="reports", quantity=i + 1)
        amount = 1_000 * (i + 1) + 0.5
        add(f"{a}-opp", "opportunity.created", h + 4, a, opportunity_id=f"O{i}", amount=amount, lead_id=f"L{i}")
        if i % 3 == 0:
            add(f"{a}-won", "opportunity.won", h + 30, a, opportunity_id=f"O{i}")
        elif i % 3 == 1:
            add(f"{a}-lost", "opportunity.lost", h + 30, a, opportunity_id=f"O{i}", reason="price")
        if i % 3 == 0:
            if i % 2:
                add(f"{a}-sub", "subscription.started", h + 31, a, subscription_id=f"S{i}", mrr=100 * (i + 1))
            else:
                price = {"amount": 1_200 * (i + 1), "interval": "year"}
                add(f"{a}-sub", "subscription.started", h + 31, a, subscription_id=f"S{i}", **price)
            change = (i // 3) % 4
            if change == 0:
                add(f"{a}-up", "subscription.updated", h + 40, a, subscription_id=f"S{i}", mrr=150.5 * (i + 1))
            elif change == 1:
                add(f"{a}-down", "subscription.updated", h + 40, a, subscription_id=f"S{i}", mrr=50 * (i + 1))
            elif change == 2:
                add(f"{a}-cxl", "subscription.canceled", h + 40, a, subscription_id=f"S{i}")
            else:
                add(f"{a}-ren", "subscription.renewed", h + 40, a, subscription_id=f"S{i}")
        if i == 4:
            eur = {"subscription_id": "S-eur", "mrr": 250, "currency": "EUR"}
            add(f"{a}-eur", "subscription.started", h + 5, a, **eur)
    for day in range(7):
        for c, channel in enumerate(CHANNELS):
            segment = SEGMENTS[(day + c) % len(SEGMENTS)]
            extra = {} if segment is None else {"segment": segment}
            add(f"spend-{day}-{channel}", "marketing.spend", 24 * day + c, None, channel=channel, amount=500.5, **extra)
    return events


def big_amount_events() -> list[dict[str, Any]]:
    """Valid since SPEC §1 allows money up to 10¹²: 2×10¹⁰ stays open in the pipeline, 10¹² is won (at the
    amount it was created with), and MRR grows by 10¹² + 2×10¹⁰ (a float amount of a monthly price)."""
    base = {"occurred_at": _at(100), "account_id": "acc-big"}
    return [
        {**base, "event_id": "big-opp", "type": "opportunity.created", "opportunity_id": "O-big", "amount": 2 * 10**10},
        {**base, "event_id": "max-opp", "type": "opportunity.created", "opportunity_id": "O-max", "amount": MAX_MONEY},
        {**base, "event_id": "max-won", "type": "opportunity.won", "opportunity_id": "O-max"},
        {**base, "event_id": "max-sub", "type": "subscription.started", "subscription_id": "S-max", "mrr": MAX_MONEY},
        {
            **base,
            "event_id": "big-sub",
            "type": "subscription.started",
            "subscription_id": "S-big",
            "amount": 2e10,
            "interval": "month",
        },
    ]


BIG_OPEN_PIPELINE = 2e10  # what big_amount_events add to open_pipeline_amount, won_amount and mrr
BIG_WON = 1e12
BIG_MRR = 1e12 + 2e10


@dataclass(frozen=True)
class Poison:
    """A record for an input topic that must become exactly one dead letter and change nothing else."""

    name: str
    topic: str  # the Topics attribute: crm, billing, product or marketing
    value: bytes
    reason: str
    detail: str  # a substring of the letter's detail


def _event(kind: str, **fields: Any) -> bytes:
    return orjson.dumps({"event_id": "poison", "type": kind, "occurred_at": _at(50), "account_id": "acc-1", **fields})


def _array(element: bytes, count: int) -> bytes:
    return b"[" + b",".join([element] * count) + b"]"


MONEY_RANGE = "must be a finite number >= 0 and <= 1e12; got "
FUTURE = "is more than 1 day after the worker's clock"

POISON: tuple[Poison, ...] = (
    Poison(
        "amount-1e12-plus-1",
        "crm",
        _event("opportunity.created", opportunity_id="O-poison", amount=MAX_MONEY + 1),
        "invalid_event",
        f"field 'amount' {MONEY_RANGE}1000000000001",
    ),
    Poison(
        "amount-1.8e299",
        "marketing",
        _event("marketing.spend", channel="ads", amount=1.8e299),
        "invalid_event",
        f"field 'amount' {MONEY_RANGE}1.8e+299",
    ),
    Poison(
        "mrr-1.8e299",
        "billing",
        _event("subscription.started", subscription_id="S1", mrr=1.8e299),
        "invalid_event",
        f"field 'mrr' {MONEY_RANGE}1.8e+299",
    ),
    Poison(
        "year-9999-minus-23h59",
        "product",
        _event("product.signup", occurred_at="9999-12-31T23:59:59-23:59"),
        "invalid_event",
        f"field 'occurred_at' {FUTURE}",
    ),
    Poison(
        "year-1-plus-23h59",
        "product",
        _event("product.signup", occurred_at="0001-01-01T00:00:00+23:59"),
        "invalid_event",
        "field 'occurred_at' is before 1970-01-01T00:00:00Z; got '0001-01-01T00:00:00+23:59'",
    ),
    Poison(
        "valid-but-year-9999",
        "crm",
        _event("lead.created", lead_id="L-9999", occurred_at="9999-12-31T00:00:00Z"),
        "invalid_event",
        f"field 'occurred_at' {FUTURE}",
    ),
    Poison(
        "array-of-10001-objects",
        "crm",
        _array(b"{}", 10_001),
        "invalid_event",
        "record is an array of 10001 elements; at most 10000 are allowed",
    ),
    Poison(
        "array-of-2MB-ones",
        "product",
        _array(b"1", 1024 * 1024),  # 2 MiB
        "invalid_event",
        "record is an array of 1048576 elements; at most 10000 are allowed",
    ),
)


# Records RevPulse never writes, for its internal topics (SPEC §1: validated like input, never trusted blindly).
# A well-formed record forged for an existing shard cannot be told apart without authentication: not here.

FOREIGN_SHARD_RECORDS: tuple[bytes | None, ...] = (  # for `<app id>-shards`
    b"\xff\xfe garbage bytes",
    b'{"items": [], "note": "a JSON object"}',
    None,
    b'"a string"',
    b'[{"not": "an item"}, 17, null, ["crm.events", 0, 0, 0, 1.0, "x", "e"]]',  # a list of 4 malformed items
)
FOREIGN_RECORDS = 4  # of FOREIGN_SHARD_RECORDS, skipped whole
FOREIGN_ITEMS = 4  # skipped items, of the last one


def foreign_spans(billing: str) -> tuple[bytes, ...]:
    """Spans of the right shape naming no records of input topic `billing`: a partition it does not have
    (`unknown_partition`), offsets past a partition's end (`input_gone`), counted apiece."""
    return (
        orjson.dumps({"spans": [[billing, 999, 0, 0, 0]]}),
        orjson.dumps({"spans": [[billing, 0, 900_000, 900_005, 0]]}),
    )


SHARDS = Settings().shards
# For `<app id>-partials`: (key, value, what the WireError says).
FOREIGN_PARTIALS: tuple[tuple[bytes | None, bytes | None, str], ...] = (
    (b"garbage", b"1", "a partials key or value is malformed: b'garbage'"),
    (b"1|mrr_now|all|x", b"5", "a partials key or value is malformed: b'1|mrr_now|all|x'"),
    (None, b"1", "a partials key or value is malformed: b''"),
    (b"1|mrr_now|all|0", b"a lot", "a partials key or value is malformed"),
    (f"{SHARDS}|mrr_now|all|0".encode(), b"1000000000000", f"a partial names shard {SHARDS}, of {SHARDS}"),
    (f"{SHARDS + 100}|__watermark||0".encode(), b"253402214400000000", f"a partial names shard {SHARDS + 100}"),
    (b"0|no_such_quantity|all|0", b"1", "a partial names an unknown quantity 'no_such_quantity'"),
    (b"0|__point|smb|480", b"garbage", "a point record is not JSON"),
    (b"0|__point|smb|480", b'{"h:mrr_now": 1}', "a point record is not a list of cells"),
    (b"0|__point|smb|480", b'[["h:no_such_quantity", 1]]', "a point record's cell is out of range"),
)

# For `<app id>-snapshots`: manifests (key: the shard) that are not a manifest of ours.
FOREIGN_MANIFESTS: tuple[tuple[bytes, bytes], ...] = (
    (b"0", b"garbage"),
    (b"1", b'{"snapshot": "2/5", "chunks": 1, "next_offset": 5}'),  # names another shard
)


def clocked_harness(settings: Settings, now: datetime = NOW) -> Harness:
    """A harness whose pipeline's wall clock stands still at `now` (it bounds occurred_at: SPEC §1)."""
    harness = Harness(settings)
    harness.pipeline = Pipeline(settings, clock=now.timestamp)
    return harness
