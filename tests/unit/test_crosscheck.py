"""The streaming pipeline against the independent batch reference (tests/reference.py) on generated logs."""

from __future__ import annotations

import random
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from revpulse.settings import Settings, Topics
from revpulse.streams.partition import InputRecord
from revpulse.streams.pipeline import Pipeline
from revpulse.topics import topic_of
from tests.support.reference import RefSettings, compute

STAGES = ("lead", "mql", "sql", "opportunity", "customer", "disqualified")
START = datetime(2024, 1, 1, tzinfo=UTC)


def stream_values(records: Sequence[tuple[str, bytes]], settings: Settings, batch: int = 1) -> dict[str, float | None]:
    """Every series the pipeline publishes after consuming `records` in order, `batch` records per batch."""
    pipeline = Pipeline(settings)
    inputs = [InputRecord(topic, 0, offset, value, 0.0) for offset, (topic, value) in enumerate(records)]
    for start in range(0, len(inputs), batch):
        pipeline.process(inputs[start : start + batch])
    return {series.key: series.value for series in pipeline.refresh()}


def assert_same(streamed: dict[str, float | None], expected: dict[str, float | None]) -> None:
    assert streamed.keys() == expected.keys()
    wrong = {
        key: (streamed[key], value)
        for key, value in expected.items()
        if (value is None) != (streamed[key] is None)
        or (value is not None and streamed[key] != pytest.approx(value, rel=1e-9, abs=1e-6))
    }
    assert not wrong, f"{len(wrong)} series differ, e.g. {sorted(wrong.items())[:5]}"


def random_log(
    seed: int,
    n: int,
    *,
    days: float,
    accounts: int,
    disorder_days: float | None = None,
    id_pool: int | None = None,
    any_topic: bool = False,
) -> list[tuple[str, bytes]]:
    """Adversarial: segment changes, duplicates, and events up to `disorder_days` out of order (by default any
    order at all). Leads and opportunities stay within one account, as their events carry its account_id.
    With `id_pool`, event ids are drawn from that many, so ids come back long after (forgotten) or on other
    keys; with `any_topic`, an event goes to a random input topic, so one id meets its key on several."""
    rng = random.Random(seed)
    segments = ["smb", "mid_market", "enterprise", "", "startup", None]
    out: list[tuple[str, bytes]] = []
    sent: list[tuple[str, bytes]] = []
    for i in range(n):
        if sent and rng.random() < 0.01:
            out.append(rng.choice(sent))  # a duplicate delivery
            continue
        account = f"acc{rng.randrange(accounts)}"
        if disorder_days is None:
            when = START + timedelta(hours=rng.uniform(0, days * 24))
        else:
            when = START + timedelta(days=days * i / n - rng.uniform(0, disorder_days) * (rng.random() < 0.2))
        occurred: Any = when.isoformat().replace("+00:00", "Z") if i % 3 else int(when.timestamp() * 1000)
        event_id = f"e{i}" if id_pool is None else f"e{rng.randrange(id_pool)}"
        event: dict[str, Any] = {"event_id": event_id, "occurred_at": occurred, "account_id": account}
        roll = rng.random()
        if roll < 0.3:
            kind = rng.choice(
                ["subscription.started", "subscription.updated", "subscription.canceled", "subscription.renewed"]
            )
            event |= {"type": kind, "subscription_id": f"s{rng.randrange(3)}"}
            if kind != "subscription.canceled" and (kind != "subscription.renewed" or rng.random() < 0.5):
                if rng.random() < 0.5:
                    event["mrr"] = rng.choice([0, 0.004, 50, 100, 250.5])
                else:
                    event |= {
                        "amount": rng.choice([99, 1200, 5000]),
                        "interval": rng.choice(["week", "month", "quarter", "year"]),
                        "interval_count": rng.choice([1, 2]),
                    }
                if rng.random() < 0.1:
                    event["currency"] = "EUR"
        elif roll < 0.45:
            kind = rng.choice(["lead.created", "lead.stage_changed"])
            event |= {"type": kind, "lead_id": f"L{account}-{rng.randrange(3)}"}
            if kind == "lead.stage_changed":
                event["stage"] = rng.choice(STAGES)
        elif roll < 0.6:
            kind = rng.choice(["opportunity.created", "opportunity.won", "opportunity.lost"])
            event |= {"type": kind, "opportunity_id": f"O{account}-{rng.randrange(3)}"}
            if kind == "opportunity.created":
                event |= {"amount": rng.randrange(1, 50_000), "lead_id": f"L{account}-{rng.randrange(3)}"}
            elif kind == "opportunity.won" and rng.random() < 0.5:
                event["amount"] = rng.randrange(1, 50_000)
        elif roll < 0.9:
            event["type"] = rng.choice(
                ["product.signup", "product.trial_started", "product.activated", "product.usage"]
            )
        elif roll < 0.95:
            event["type"] = "account.updated"
        else:
            event = {
                "event_id": f"e{i}",
                "type": "marketing.spend",
                "occurred_at": occurred,
                "channel": rng.choice("abc"),
                "amount": round(rng.random() * 100, 2),
            }
        segment = rng.choice(segments)
        if segment is not None:
            event["segment"] = segment
        topic = rng.choice(Topics().inputs) if any_topic else str(topic_of(event["type"], Topics()))
        record = (topic, orjson.dumps(event))
        sent.append(record)
        out.append(record)
    return out


@pytest.mark.parametrize(
    ("seed", "hot_accounts", "batch"),
    [(1, 10_000, 1), (2, 10_000, 1), (3, 10_000, 1), (4, 0, 1), (5, 3, 1), (6, 10_000, 50), (7, 3, 500), (8, 0, 7)],
)
def test_random_order_log_matches_reference(seed: int, hot_accounts: int, batch: int) -> None:
    """With `hot_accounts` 0 or 3, accounts are encoded between batches and decoded when touched again: the
    encoded form loses nothing. With batches of many records, an entity's events in one batch are recomputed
    once, at its end: the same numbers."""
    records = random_log(seed, 3_000, days=20, accounts=60)
    settings = Settings(clock="event", fx_rates={"EUR": 1.08}, hot_accounts=hot_accounts)
    expected = compute(records, RefSettings(fx_rates={"EUR": 1.08})).series
    assert_same(stream_values(records, settings, batch), expected)


def test_long_log_with_late_rejections_matches_reference() -> None:
    records = random_log(11, 20_000, days=120, accounts=400, disorder_days=4)
    settings = Settings(clock="event", fx_rates={"EUR": 1.08}, allowed_lateness=3 * 86400)
    expected = compute(records, RefSettings(fx_rates={"EUR": 1.08}, allowed_lateness_s=3 * 86400)).series
    assert_same(stream_values(records, settings), expected)
    assert_same(stream_values(records, settings, batch=1000), expected)


@pytest.mark.parametrize("batch", [1, 300])
def test_ids_reused_across_topics_keys_and_time_match_reference(batch: int) -> None:
    """SPEC §2 (revised): an id is a duplicate only on its own (topic, key), and only while its event is within
    the allowed lateness of that key's latest there; past it the id is forgotten and may name a new event."""
    records = random_log(21, 6_000, days=200, accounts=15, disorder_days=5, id_pool=400, any_topic=True)
    settings = Settings(clock="event", fx_rates={"EUR": 1.08}, allowed_lateness=3 * 86400)
    reference = compute(records, RefSettings(fx_rates={"EUR": 1.08}, allowed_lateness_s=3 * 86400))
    assert reference.outcomes["duplicate"] > 20 and reference.outcomes["accepted"] > 4_000
    assert_same(stream_values(records, settings, batch), reference.series)


def test_two_years_with_product_events_forgotten_past_every_window_match_reference() -> None:
    """Product events and segment points older than every window are dropped as the watermark moves on: at every
    cut of a two-year log the series equal the reference's, and accounts keep only their last ~100 days of
    them."""
    records = random_log(31, 16_000, days=730, accounts=25, disorder_days=3)
    settings = Settings(clock="event", fx_rates={"EUR": 1.08}, allowed_lateness=3 * 86400, shards=1)
    pipeline = Pipeline(settings)
    inputs = [InputRecord(topic, 0, offset, value, 0.0) for offset, (topic, value) in enumerate(records)]
    for cut in (4_000, 9_000, 16_000):
        for start in range(pipeline.records, cut, 250):
            pipeline.process(inputs[start : min(start + 250, cut)])
        expected = compute(records[:cut], RefSettings(fx_rates={"EUR": 1.08}, allowed_lateness_s=3 * 86400))
        assert_same({series.key: series.value for series in pipeline.refresh()}, expected.series)
    engine = pipeline.shards[0].state.engine
    assert engine.watermark is not None
    horizon = engine.watermark - (90 + 3) * 86_400 * 1_000_000
    # Billing, segment points, leads and opportunities are kept one window longer, for the history's points not
    # yet final (SPEC §5); product events only to the horizon.
    state_horizon = horizon - 90 * 86_400 * 1_000_000
    kept = [account for account_id in list(engine.accounts) if (account := engine.accounts.get(account_id))]
    # Every account had an event in the last days of the log, when it forgot what was past the horizon then.
    assert all(t >= horizon - 25 * 86_400 * 1_000_000 for account in kept for t, _, _ in account.product)
    # Of the segment points before that, each account keeps the one in force there.
    assert all(
        sum(1 for t, _ in account.segment_stamps if t < state_horizon - 10 * 86_400 * 1_000_000) <= 1
        for account in kept
    )
    # A lead or an opportunity keeps at most three events from before that horizon at its last event's time: its
    # first creation, the last that set its amount, and its last.
    day = 86_400 * 1_000_000
    for entity in (*engine.leads.values(), *engine.opportunities.values()):
        old = entity.events[-1][0] - (93 + 90 + 5) * day
        assert sum(1 for t, _, _ in entity.events if t < old) <= 3
    # An account keeps, from before the horizon when its last billing event came (a 250-record batch is about 11
    # days of this log), one billing event.
    for account in kept:
        if account.billing:
            old = account.billing[-1][0] - (93 + 90 + 5 + 11) * day
            assert sum(1 for t, _, _ in account.billing if t < old) <= 1
    assert any(account.billing_base is not None for account in kept)
    # The shard's cells before the horizon are folded (weekly) into one slice just before it.
    folded = engine.folded_at
    assert folded is not None
    assert all(hour >= folded - 1 for (quantity, _, hour) in engine.ledger.items() if hour)
    sent = sum(1 for _, value in records if b'"product.' in value)
    # About 100 of the 730 days' worth (the last 93, plus what an account has not forgotten since its last event).
    assert sum(len(account.product) for account in kept) < sent * 110 / 730
