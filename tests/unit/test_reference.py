"""Hand-computed cases proving the naive reference implementation (tests/reference.py) right."""

from __future__ import annotations

import math
import random
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from tests.support.reference import (
    CONVERSION_PAIRS,
    MOVEMENT_KINDS,
    SNAPSHOT_METRICS,
    STAGES,
    WINDOWED_METRICS,
    RefSettings,
    compute,
    ingest,
    parse_occurred_at,
    series_key,
)

BASE = datetime(2024, 3, 1, tzinfo=UTC)
CRM, BILLING, PRODUCT, MARKETING = "crm.events", "billing.events", "product.events", "marketing.events"
TOPIC_BY_PREFIX = {"lead": CRM, "opportunity": CRM, "account": CRM, "subscription": BILLING}
TOPIC_BY_PREFIX |= {"product": PRODUCT, "marketing": MARKETING}


def at(days: float = 0, hours: float = 0, seconds: float = 0) -> str:
    dt = BASE + timedelta(days=days, hours=hours, seconds=seconds)
    return dt.isoformat().replace("+00:00", "Z")


_ids = iter(range(1_000_000))


def ev(etype: str, when: str | int, account: str | None = "A", **fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"event_id": f"e{next(_ids)}", "type": etype, "occurred_at": when}
    if account is not None:
        body["account_id"] = account
    body.update(fields)
    return body


def rec(*events: dict[str, Any], topic: str | None = None) -> tuple[str, bytes]:
    """One Kafka record: a single event, or a JSON array when several are given."""
    if topic is None:
        topic = TOPIC_BY_PREFIX[events[0]["type"].split(".")[0]]
    payload: Any = events[0] if len(events) == 1 else list(events)
    return topic, orjson.dumps(payload)


def recs(*events: dict[str, Any]) -> list[tuple[str, bytes]]:
    return [rec(e) for e in events]


def k(metric: str, **labels: str) -> str:
    return series_key(metric, **labels)


def w(metric: str, segment: str = "all", window: str = "30d", **labels: str) -> str:
    return series_key(metric, segment=segment, window=window, **labels)


def approx(x: float | None) -> Any:
    return pytest.approx(x, rel=1e-9, abs=1e-9)


# ------------------------------------------------------------------------------------------------------------
# Revenue
# ------------------------------------------------------------------------------------------------------------


def test_chartmogul_lifecycle() -> None:
    records = recs(
        ev("subscription.started", at(0), subscription_id="yearly", amount=2000, interval="year", segment="smb"),
        ev("subscription.started", at(1), subscription_id="addon", mrr=60),
        ev("subscription.canceled", at(2), subscription_id="addon"),
        ev("subscription.canceled", at(3), subscription_id="yearly"),
        ev("subscription.started", at(4), subscription_id="q", amount=150, interval="quarter"),
    )
    res = compute(records)
    assert res.outcomes == Counter(accepted=5)
    assert res.as_of == BASE + timedelta(days=4)
    s = res.series
    for seg in ("all", "smb"):
        assert s[w("mrr_movement", seg, kind="new")] == approx(2000 / 12)
        assert s[w("mrr_movement", seg, kind="expansion")] == approx(60)
        assert s[w("mrr_movement", seg, kind="contraction")] == approx(60)
        assert s[w("mrr_movement", seg, kind="churn")] == approx(2000 / 12)
        assert s[w("mrr_movement", seg, kind="reactivation")] == approx(50)
        assert s[w("net_new_mrr", seg)] == approx(50)
        assert s[w("new_customers", seg)] == 1
        assert s[w("renewal_rate", seg)] == 0.0  # 0 renewed, 2 canceled
        assert s[k("mrr", segment=seg)] == approx(50)
        assert s[k("arr", segment=seg)] == approx(600)
        assert s[k("customers", segment=seg)] == 1
        assert s[k("arpa", segment=seg)] == approx(50)
        # MRR at t0 is 0 for every window: nothing happened before the first event
        assert s[w("mrr_growth_rate", seg)] is None
        assert s[w("gross_mrr_churn_rate", seg)] is None
        assert s[w("customer_churn_rate", seg)] is None
    assert s[w("mrr_movement", "mid_market", kind="new")] == 0
    assert s[k("mrr", segment="enterprise")] == 0
    # 1d window: t0 = day 3 01:00, so only the reactivation (day 4 00:00) is in it; MRR at t0 is 0
    assert s[w("mrr_movement", window="1d", kind="churn")] == 0
    assert s[w("mrr_movement", window="1d", kind="reactivation")] == approx(50)
    assert s[w("new_customers", window="1d")] == 0
    assert not any("unknown" in key or '"other"' in key for key in s)


def test_retention_rates_with_c0() -> None:
    records = recs(
        ev("subscription.started", at(0), "A", subscription_id="s1", mrr=100, segment="smb"),
        ev("subscription.started", at(0), "B", subscription_id="s1", mrr=200, segment="enterprise"),
        ev("subscription.started", at(0), "C", subscription_id="s1", mrr=50, segment="smb"),
        ev("subscription.updated", at(20), "A", subscription_id="s1", mrr=150),
        ev("subscription.canceled", at(25), "B", subscription_id="s1"),
        ev("subscription.canceled", at(30), "C", subscription_id="s1"),
        ev("subscription.started", at(35), "C", subscription_id="s2", mrr=80),
        ev("subscription.started", at(38), "D", subscription_id="s1", mrr=40, segment="smb"),
        ev("subscription.renewed", at(39), "A", subscription_id="s1"),
        ev("account.updated", at(40), "E"),  # no segment anywhere: resolves to `unknown`
    )
    res = compute(records)
    s = res.series
    # 30d: t0 = day 10 01:00; C0 = {A: 100, B: 200, C: 50}; at as_of A=150, B=0, C=80, D=40
    assert s[k("mrr", segment="all")] == approx(270)
    assert s[k("customers", segment="all")] == 3
    assert s[k("arpa", segment="all")] == approx(90)
    assert s[w("customer_churn_rate")] == approx(2 / 3)
    assert s[w("gross_mrr_churn_rate")] == approx(250 / 350)
    assert s[w("net_mrr_churn_rate")] == approx((250 - 50 - 80) / 350)
    assert s[w("nrr")] == approx(230 / 350)
    assert s[w("grr")] == approx(150 / 350)
    assert s[w("expansion_rate")] == approx(50 / 350)
    assert s[w("mrr_growth_rate")] == approx(-80 / 350)
    assert s[w("real_mrr_growth_rate")] == approx((270 / 350) / (1.03 ** (30 / 365)) - 1)
    assert s[w("net_new_mrr")] == approx(-80)
    assert s[w("new_customers")] == 1
    assert s[w("cltv")] == approx(90 / (2 / 3))
    assert s[w("renewal_rate")] == approx(1 / 3)
    # smb: C0 = {A, C}
    assert s[k("mrr", segment="smb")] == approx(270)
    assert s[w("customer_churn_rate", "smb")] == approx(1 / 2)
    assert s[w("nrr", "smb")] == approx(230 / 150)
    assert s[w("grr", "smb")] == approx(1.0)
    assert s[w("gross_mrr_churn_rate", "smb")] == approx(50 / 150)
    # enterprise: C0 = {B}, churned
    assert s[w("customer_churn_rate", "enterprise")] == 1.0
    assert s[w("nrr", "enterprise")] == 0.0
    assert s[k("customers", segment="enterprise")] == 0
    assert s[k("arpa", segment="enterprise")] is None
    assert s[w("cltv", "enterprise")] is None
    # cltv over 90d: t0 = day -49, C0 empty -> churn rate undefined -> cltv undefined
    assert s[w("customer_churn_rate", window="90d")] is None
    assert s[w("cltv", window="90d")] is None
    # the `unknown` series exists (E), `other` does not
    assert s[k("mrr", segment="unknown")] == 0
    assert k("mrr", segment="other") not in s


def test_late_event_changes_a_later_movements_kind() -> None:
    later = ev("subscription.started", at(10), subscription_id="s1", mrr=100)
    earlier = ev("subscription.started", at(5), subscription_id="s0", mrr=50)
    alone = compute(recs(later)).series
    assert alone[w("mrr_movement", kind="new")] == approx(100)
    res = compute(recs(later, earlier))  # arrives 5 days late: within the allowed 7 days
    assert res.outcomes == Counter(accepted=2)
    s = res.series
    assert s[w("mrr_movement", kind="new")] == approx(50)
    assert s[w("mrr_movement", kind="expansion")] == approx(100)
    assert s[w("new_customers")] == 1
    assert res.as_of == BASE + timedelta(days=10)


def test_half_cent_equality() -> None:
    records = recs(
        ev("subscription.started", at(0), "A", subscription_id="s", mrr=0.004),  # under half a cent: 0
        ev("subscription.started", at(0), "B", subscription_id="s", mrr=100),
        ev("subscription.updated", at(1), "B", subscription_id="s", mrr=100.004),  # equal: no movement
        ev("subscription.updated", at(2), "B", subscription_id="s", mrr=100.006),  # vs recorded 100
    )
    s = compute(records).series
    assert s[w("new_customers")] == 1
    assert s[w("mrr_movement", kind="new")] == approx(100)
    assert s[w("mrr_movement", kind="expansion")] == pytest.approx(0.006)
    assert s[k("customers", segment="all")] == 1


def test_segments_flow_vs_state() -> None:
    records = recs(
        ev("subscription.started", at(1), "A", subscription_id="s", mrr=100, segment="smb"),
        ev("account.updated", at(2), "A", segment="enterprise"),
        ev("subscription.updated", at(3), "A", subscription_id="s", mrr=120),  # no own segment: enterprise
        ev("product.usage", at(3), "B", segment="weird"),  # not configured -> other
    )
    s = compute(records).series
    assert s[w("mrr_movement", "smb", kind="new")] == approx(100)
    assert s[w("mrr_movement", "enterprise", kind="new")] == 0
    assert s[w("mrr_movement", "enterprise", kind="expansion")] == approx(20)
    assert s[k("mrr", segment="smb")] == 0
    assert s[k("mrr", segment="enterprise")] == approx(120)
    assert s[w("active_accounts", "other")] == 1
    assert k("mrr", segment="unknown") not in s


def test_late_segment_event_reassigns_earlier_flow() -> None:
    records = recs(
        ev("lead.created", at(5), "A", lead_id="L"),
        ev("account.updated", at(4), "A", segment="mid_market"),  # late, but earlier in the sorted replay
    )
    s = compute(records).series
    assert s[w("leads_created", "mid_market")] == 1
    assert k("mrr", segment="unknown") not in s


# ------------------------------------------------------------------------------------------------------------
# Sales, marketing, product
# ------------------------------------------------------------------------------------------------------------


def test_sales_funnel_and_pipeline() -> None:
    records = recs(
        ev("lead.created", at(1), "X", lead_id="L1", segment="mid_market"),
        ev("lead.stage_changed", at(2), "X", lead_id="L1", stage="mql"),
        ev("lead.stage_changed", at(3), "X", lead_id="L1", stage="sql"),
        ev("opportunity.created", at(4), "X", opportunity_id="O1", amount=1000, lead_id="L1"),
        ev("opportunity.created", at(5), "Y", opportunity_id="O2", amount=500),
        ev("opportunity.won", at(6), "X", opportunity_id="O1"),
        ev("opportunity.created", at(7), "X", opportunity_id="O3", amount=300, currency="EUR"),
        ev("opportunity.lost", at(8), "Y", opportunity_id="O2"),
        ev("opportunity.won", at(9), "X", opportunity_id="O4", amount=200),  # never created: still counts
    )
    res = compute(records, RefSettings(fx_rates={"EUR": 1.1}))
    s = res.series
    assert s[w("leads_created")] == 1
    assert s[w("mqls")] == 1
    assert s[w("sqls")] == 1
    assert s[w("opportunities_created")] == 3
    assert s[w("deals_won")] == 2
    assert s[w("deals_lost")] == 1
    assert s[w("won_amount")] == approx(1200)
    assert s[w("win_rate")] == approx(2 / 3)
    assert s[w("win_loss_ratio")] == approx(2)
    assert s[w("avg_deal_size")] == approx(600)
    assert s[w("sales_cycle_seconds")] == approx(2 * 86400)
    assert s[w("time_to_close_seconds")] == approx(5 * 86400)
    assert s[k("open_opportunities", segment="all")] == 1
    assert s[k("open_pipeline_amount", segment="all")] == approx(330)
    assert s[w("pipeline_velocity")] == approx(1 * 600 * (2 / 3) / 2)
    conv = {(a, b): s[w("stage_conversion_rate", **{"from": a, "to": b})] for a, b in CONVERSION_PAIRS}
    assert conv == {
        ("lead", "mql"): 1.0,
        ("mql", "sql"): 1.0,
        ("sql", "opportunity"): 3.0,
        ("opportunity", "won"): approx(2 / 3),
    }
    # per segment: X is mid_market, Y unknown
    assert s[w("win_rate", "mid_market")] == 1.0
    assert s[w("win_loss_ratio", "mid_market")] is None
    assert s[w("win_rate", "unknown")] == 0.0
    assert s[w("avg_deal_size", "unknown")] is None
    assert s[w("pipeline_velocity", "unknown")] is None
    assert s[k("open_opportunities", segment="mid_market")] == 1
    assert s[k("leads_in_stage", segment="mid_market", stage="sql")] == 1
    assert s[k("leads_in_stage_share", segment="mid_market", stage="sql")] == 1.0
    assert s[k("leads_in_stage_share", segment="all", stage="lead")] == 0.0
    assert s[k("leads_in_stage", segment="enterprise", stage="sql")] == 0
    assert s[k("leads_in_stage_share", segment="enterprise", stage="sql")] is None
    # 1d window (t0 = day 8 01:00): only the O4 win, its creation unknown
    assert s[w("deals_won", window="1d")] == 1
    assert s[w("won_amount", window="1d")] == approx(200)
    assert s[w("sales_cycle_seconds", window="1d")] is None
    assert s[w("pipeline_velocity", window="1d")] is None


def test_won_amount_defaults_to_last_known_amount_or_zero() -> None:
    records = recs(
        ev("opportunity.created", at(1), opportunity_id="O1", amount=100),
        ev("opportunity.created", at(2), opportunity_id="O1", amount=300),  # re-stated amount
        ev("opportunity.won", at(3), opportunity_id="O1"),
        ev("opportunity.won", at(4), opportunity_id="O9"),  # unknown amount -> 0
    )
    s = compute(records).series
    assert s[w("won_amount")] == approx(300)
    assert s[w("avg_deal_size")] == approx(150)
    assert s[w("sales_cycle_seconds")] == approx(2 * 86400)  # from the FIRST opportunity.created
    assert s[k("open_opportunities", segment="all")] == 0


def test_marketing_and_product() -> None:
    records = recs(
        ev("product.signup", at(1), "A", segment="smb"),
        ev("product.trial_started", at(1, hours=1), "A"),
        ev("subscription.started", at(2), "A", subscription_id="s", mrr=100),
        ev("product.signup", at(1), "B"),
        ev("product.activated", at(2), "B"),
        ev("marketing.spend", at(2), None, channel="google", amount=1000, segment="smb"),
        ev("marketing.spend", at(2), None, channel="facebook", amount=500),
        ev("lead.created", at(3), "A", lead_id="L1"),
        ev("lead.created", at(3), "B", lead_id="L2"),
    )
    s = compute(records).series
    assert s[w("marketing_spend", window="7d")] == approx(1500)
    assert s[w("cost_per_lead", window="7d")] == approx(750)
    assert s[w("cac", window="7d")] == approx(1500)
    assert s[w("roi", window="7d")] == approx((1200 - 1500) / 1500)
    assert s[w("signups", window="7d")] == 2
    assert s[w("trials_started", window="7d")] == 1
    assert s[w("activation_rate", window="7d")] == approx(0.5)
    assert s[w("active_accounts", window="7d")] == 2
    assert s[w("trial_conversion_rate", window="7d")] == 1.0
    assert s[w("marketing_spend", "smb", "7d")] == approx(1000)
    assert s[w("cost_per_lead", "smb", "7d")] == approx(1000)
    assert s[w("cac", "smb", "7d")] == approx(1000)
    assert s[w("roi", "smb", "7d")] == approx(0.2)
    assert s[w("activation_rate", "smb", "7d")] == 0.0
    assert s[w("active_accounts", "smb", "7d")] == 1
    assert s[w("trial_conversion_rate", "smb", "7d")] == 1.0
    # B never had a segment: unknown; no spend there -> spend-based metrics undefined
    assert s[w("marketing_spend", "unknown", "7d")] == 0
    assert s[w("cost_per_lead", "unknown", "7d")] is None
    assert s[w("cac", "unknown", "7d")] is None
    assert s[w("activation_rate", "unknown", "7d")] == 1.0
    assert s[w("trial_conversion_rate", "unknown", "7d")] is None
    assert s[w("cost_per_lead", "mid_market", "7d")] is None
    # 1d window (t0 = day 2 01:00): only the leads; spend 0 in `all` -> cost_per_lead 0, roi undefined
    assert s[w("cost_per_lead", window="1d")] == 0.0
    assert s[w("roi", window="1d")] is None
    assert s[w("cac", window="1d")] is None


def test_trial_must_precede_the_new_movement() -> None:
    records = recs(
        ev("subscription.started", at(1), "A", subscription_id="s", mrr=10),
        ev("product.trial_started", at(2), "A"),
    )
    s = compute(records).series
    assert s[w("trial_conversion_rate")] == 0.0


# ------------------------------------------------------------------------------------------------------------
# Time, windows
# ------------------------------------------------------------------------------------------------------------


def test_window_boundaries_and_epoch_ms() -> None:
    as_of = datetime(2024, 3, 10, 12, 30, tzinfo=UTC)
    t0_1d = datetime(2024, 3, 9, 13, 0, tzinfo=UTC)
    records = recs(
        ev("lead.created", "2024-03-10T12:30:00Z", lead_id="L1"),
        ev("lead.created", int(t0_1d.timestamp() * 1000), lead_id="L2"),  # exactly t0: in
        ev("lead.created", "2024-03-09T12:59:59.999999Z", lead_id="L3"),  # just before t0: out
        ev("lead.created", "2024-03-09T14:59:59.9999999+02:00", lead_id="L4"),  # same instant, truncated
    )
    res = compute(records)
    assert res.as_of == as_of
    assert res.series[w("leads_created", window="1d")] == 2
    assert res.series[w("leads_created", window="7d")] == 4


def test_parse_occurred_at() -> None:
    assert parse_occurred_at("1970-01-01T00:00:01Z") == 1_000_000
    assert parse_occurred_at("1970-01-01T01:00:01.5+01:00") == 1_500_000
    assert parse_occurred_at(1500) == 1_500_000
    for bad in (
        "2024-03-01",
        "2024-03-01T00:00:00",
        "2024-13-01T00:00:00Z",
        "2024-03-01 00:00:00Z",
        "2024-03-01T00:00:00+24:00",
        1.5,
        True,
        None,
        "1710000000000",
        10**20,
    ):
        assert parse_occurred_at(bad) is None, bad


# ------------------------------------------------------------------------------------------------------------
# Ingestion: duplicates, lateness, bad input
# ------------------------------------------------------------------------------------------------------------


def test_duplicates_first_accepted_wins() -> None:
    first = ev("subscription.started", at(1), subscription_id="s", mrr=100)
    again = dict(first, mrr=999, occurred_at=at(2))  # same id, different body
    res = compute([rec(first), rec(again), rec(first)])
    assert res.outcomes == Counter(accepted=1, duplicate=2)
    assert res.series[k("mrr", segment="all")] == approx(100)
    assert res.as_of == BASE + timedelta(days=1)


def test_too_late_is_per_topic_and_key_and_not_remembered() -> None:
    anchor = ev("lead.created", at(10), "A", lead_id="L0")
    at_bound = ev("lead.created", at(3), "A", lead_id="L1")  # exactly latest - 7d: accepted
    too_late = ev("lead.created", at(3, seconds=-1), "A", lead_id="L2")
    other_key = ev("lead.created", at(1), "B", lead_id="L3")  # B has no accepted events yet
    records = [
        rec(anchor),
        rec(at_bound),
        rec(too_late),
        rec(too_late, topic=BILLING),  # same id, other input topic: judged there, accepted
        rec(other_key),
        rec(dict(anchor, occurred_at=at(1))),  # an accepted id, but the lateness check comes first
        rec(ev("lead.created", at(11), "A", lead_id="L4"), topic=BILLING),
    ]
    accepted, outcomes = ingest(records)
    assert [o.outcome for o in outcomes] == ["accepted", "accepted", "late", "accepted", "accepted", "late", "accepted"]
    assert outcomes[2].reason == "too_late"
    assert len(accepted) == 5
    res = compute(records)
    assert res.outcomes == Counter(accepted=5, late=2)
    assert res.series[w("leads_created")] == 5
    # lateness is configurable
    res = compute(records, RefSettings(allowed_lateness_s=86400))
    assert res.outcomes == Counter(accepted=4, late=3)


def test_bad_records_and_array_elements() -> None:
    good1 = ev("lead.created", at(1), lead_id="L1")
    good2 = ev("lead.created", at(2), lead_id="L2")
    records = [
        (CRM, b"{not json"),
        (CRM, b"\xff\xfe"),
        rec(
            good1,
            {"type": 5, "event_id": "x"},  # invalid_event: type not a string
            ev("foo.bar", at(1)),  # unknown_type
            ev("lead.created", at(1)),  # invalid_event: no lead_id
            ev("lead.created", at(1), lead_id="L9", currency="EUR"),  # unknown_currency
            ev("lead.created", at(1), lead_id="L9", currency="eur"),  # invalid_event: not an upper-case code
            [good1],  # invalid_event: not an object
            good2,
        ),
        (CRM, b'"just a string"'),
        (CRM, b"[]"),
    ]
    accepted, outcomes = ingest(records)
    assert [o.reason for o in outcomes if o.outcome == "rejected"] == [
        "invalid_json",
        "invalid_json",
        "invalid_event",
        "unknown_type",
        "invalid_event",
        "unknown_currency",
        "invalid_event",
        "invalid_event",
        "invalid_event",
    ]
    assert [e.event_id for e in accepted] == [good1["event_id"], good2["event_id"]]
    res = compute(records)
    assert res.outcomes == Counter(accepted=2, rejected=9)
    assert res.series[w("leads_created")] == 2


@pytest.mark.parametrize(
    ("event", "reason"),
    [
        ({"type": "nope"}, "unknown_type"),  # unknown type wins over missing fields
        ({"event_id": "x", "occurred_at": "2024-03-01T00:00:00Z", "account_id": "A"}, "invalid_event"),
        (ev("subscription.started", at(1), subscription_id="s", mrr="100"), "invalid_event"),  # numeric string
        (ev("subscription.started", at(1), subscription_id="s", mrr=-1), "invalid_event"),
        (ev("subscription.started", at(1), subscription_id="s", amount=10), "invalid_event"),  # no interval
        (ev("subscription.started", at(1), subscription_id="s", amount=10, interval="day"), "invalid_event"),
        (ev("subscription.started", at(1), subscription_id="s"), "invalid_event"),  # no price
        (ev("subscription.renewed", at(1), subscription_id="s"), None),  # price optional
        (ev("subscription.started", at(1), subscription_id="s", mrr=5, interval_count=0), "invalid_event"),
        (ev("lead.stage_changed", at(1), lead_id="L", stage="won"), "invalid_event"),
        (ev("lead.created", at(1), account_id="", lead_id="L"), "invalid_event"),
        (ev("lead.created", at(1), lead_id="L", segment=3), "invalid_event"),
        (ev("lead.created", at(1), lead_id="L", segment=None, currency=None, extra=[1]), None),
        (ev("marketing.spend", at(1), None, channel="g", amount=1), None),  # no account needed
        (ev("marketing.spend", at(1), None, amount=1), "invalid_event"),  # no channel
        (ev("opportunity.created", at(1), opportunity_id="O"), "invalid_event"),  # no amount
        (ev("opportunity.won", at(1), opportunity_id="O"), None),
        (ev("lead.created", at(1), lead_id=7, currency="GBP"), "invalid_event"),  # invalid before currency
        (ev("lead.created", at(1), lead_id="L", currency="GBP"), "unknown_currency"),
        (ev("lead.created", at(1), lead_id="L", currency="USD"), None),
    ],
)
def test_validation_reasons(event: dict[str, Any], reason: str | None) -> None:
    _, outcomes = ingest([(CRM, orjson.dumps(event))])
    assert len(outcomes) == 1
    assert outcomes[0].reason == reason


def test_interval_to_mrr_and_fx() -> None:
    records = recs(
        ev("subscription.started", at(1), "A", subscription_id="w", amount=52, interval="week"),
        ev("subscription.started", at(1), "B", subscription_id="y", amount=240, interval="month", interval_count=2),
        ev(
            "subscription.started", at(1), "C", subscription_id="e", amount=999, interval="year", mrr=10, currency="EUR"
        ),
    )
    s = compute(records, RefSettings(fx_rates={"EUR": 2.0})).series
    assert s[k("mrr", segment="all")] == approx(52 / (12 / 52) + 120 + 20)


# ------------------------------------------------------------------------------------------------------------
# Shape of the output
# ------------------------------------------------------------------------------------------------------------


def test_empty_and_all_rejected() -> None:
    res = compute([])
    assert res.series == {} and res.as_of is None and res.outcomes == Counter()
    res = compute([(CRM, b"nope")])
    assert res.series == {} and res.as_of is None and res.outcomes == Counter(rejected=1)


def test_every_series_is_emitted() -> None:
    s = compute(recs(ev("account.updated", at(0), segment="smb"))).series
    per_segment_snapshot = len(SNAPSHOT_METRICS) - 2 + 2 * len(STAGES)
    per_window = len(WINDOWED_METRICS) - 2 + len(MOVEMENT_KINDS) + len(CONVERSION_PAIRS)
    assert len(s) == 4 * (per_segment_snapshot + 4 * per_window)
    assert k("mrr", segment="all") in s
    assert w("stage_conversion_rate", "enterprise", "90d", **{"from": "sql", "to": "opportunity"}) in s
    assert 'stage_conversion_rate{from="lead",segment="all",to="mql",window="7d"}' in s
    assert 'leads_in_stage{segment="smb",stage="disqualified"}' in s
    assert s['win_rate{segment="smb",window="30d"}'] is None
    assert s['deals_won{segment="smb",window="30d"}'] == 0
    custom = compute(recs(ev("account.updated", at(0), segment="x")), RefSettings(segments=("x",))).series
    assert {key.split('segment="')[1].split('"')[0] for key in custom} == {"all", "x"}


def test_fifty_thousand_events_is_fast() -> None:
    rng = random.Random(7)
    accounts = [f"acc{i}" for i in range(2000)]
    segs = ["smb", "mid_market", "enterprise", "", "weird"]
    records: list[tuple[str, bytes]] = []
    for _ in range(50_000):
        acct = rng.choice(accounts)
        when = at(rng.uniform(0, 120))
        roll = rng.random()
        seg = rng.choice(segs)
        if roll < 0.4:
            kind = rng.choice(["subscription.started", "subscription.updated", "subscription.canceled"])
            e = ev(kind, when, acct, subscription_id=f"s{rng.randrange(3)}", mrr=rng.choice([0, 50, 100, 250]))
        elif roll < 0.6:
            e = ev("lead.stage_changed", when, acct, lead_id=f"L{rng.randrange(5000)}", stage=rng.choice(STAGES))
        elif roll < 0.75:
            kind = rng.choice(["opportunity.created", "opportunity.won", "opportunity.lost"])
            e = ev(kind, when, acct, opportunity_id=f"O{rng.randrange(5000)}", amount=rng.randrange(1, 9999))
        elif roll < 0.95:
            e = ev(rng.choice(["product.signup", "product.usage", "product.trial_started"]), when, acct)
        else:
            e = ev("marketing.spend", when, None, channel=rng.choice("abc"), amount=rng.random() * 100)
        e["segment"] = seg
        records.append(rec(e))
    res = compute(records, RefSettings(allowed_lateness_s=1e9))
    assert res.outcomes["accepted"] == 50_000
    assert all(v is None or math.isfinite(v) for v in res.series.values())
