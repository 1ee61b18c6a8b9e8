"""Tests of the synthetic event-stream generator (streams/synth.py).

The checks below re-state the event rules of SPEC §1 independently of the worker's own validation code.
"""

from __future__ import annotations

import inspect
import itertools
import json
import math
import re
import tracemalloc
from collections import Counter, defaultdict
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from revpulse.synth.simulation import (
    EVENT_TYPES,
    REPORTING_CURRENCY,
    SynthConfig,
    bad_record_cases,
    bad_records,
    generate,
    live,
    occurred_at_ms,
    seconds_until_due,
    topic_for,
)

Stream = list[tuple[str, dict[str, Any]]]

DAY_MS = 86_400_000
STAGES = frozenset({"lead", "mql", "sql", "opportunity", "customer", "disqualified"})
INTERVALS = frozenset({"week", "month", "quarter", "year"})
TOPICS = {"lead": "crm.events", "opportunity": "crm.events", "account": "crm.events"}
TOPICS |= {"subscription": "billing.events", "product": "product.events", "marketing": "marketing.events"}
RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})")
REASONS = {"invalid_json", "invalid_event", "unknown_type", "unknown_currency"}


# ------------------------------------------------------------------------------------ reference validation (§1)


class Invalid(Exception):
    """An event SPEC §1 rejects; ``args[0]`` is the dead-letter reason."""


def _present(ev: Mapping[str, Any], key: str) -> bool:
    return ev.get(key) is not None  # null means absent


def _check_id(ev: Mapping[str, Any], key: str, *, required: bool = True) -> None:
    if not _present(ev, key):
        if required:
            raise Invalid("invalid_event", f"missing {key}")
        return
    if not isinstance(ev[key], str) or not ev[key]:
        raise Invalid("invalid_event", f"{key} must be a non-empty string")


def _check_money(ev: Mapping[str, Any], key: str, *, required: bool) -> None:
    if not _present(ev, key):
        if required:
            raise Invalid("invalid_event", f"missing {key}")
        return
    v = ev[key]
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or v < 0:
        raise Invalid("invalid_event", f"{key} must be a finite number >= 0")


def _check_price(ev: Mapping[str, Any], *, required: bool) -> None:
    """`mrr`, or `amount` + `interval` (+ `interval_count`); `required` for started/updated."""
    has_mrr = _present(ev, "mrr")
    if has_mrr:
        _check_money(ev, "mrr", required=True)
    if _present(ev, "amount"):
        _check_money(ev, "amount", required=True)
    if _present(ev, "interval") and ev["interval"] not in INTERVALS:
        raise Invalid("invalid_event", "bad interval")
    wants_amount = required or _present(ev, "amount") or _present(ev, "interval")
    if not has_mrr and wants_amount and not (_present(ev, "amount") and _present(ev, "interval")):
        raise Invalid("invalid_event", "a price needs mrr, or amount + interval")
    if _present(ev, "interval_count"):
        n = ev["interval_count"]
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise Invalid("invalid_event", "bad interval_count")


def check_event(ev: Any, currencies: Mapping[str, float]) -> None:
    """Raise :class:`Invalid` with the first reason of SPEC §1 that applies, or return for a valid event."""
    if not isinstance(ev, dict) or not isinstance(ev.get("type"), str):
        raise Invalid("invalid_event", "not an object with a string type")
    etype = ev["type"]
    if etype not in EVENT_TYPES:
        raise Invalid("unknown_type", etype)
    _check_id(ev, "event_id")
    ts = ev.get("occurred_at")
    if isinstance(ts, bool) or not isinstance(ts, int | str):
        raise Invalid("invalid_event", "bad occurred_at")
    if isinstance(ts, str):
        if not RFC3339.fullmatch(ts):
            raise Invalid("invalid_event", "bad occurred_at")
        try:
            datetime.fromisoformat(ts)
        except ValueError as exc:
            raise Invalid("invalid_event", "bad occurred_at") from exc
    marketing = etype.startswith("marketing.")
    _check_id(ev, "account_id", required=not marketing)
    for key in ("segment", "source", "reason", "name", "user_id", "feature"):
        if _present(ev, key) and not isinstance(ev[key], str):
            raise Invalid("invalid_event", f"{key} must be a string")
    if etype == "lead.created":
        _check_id(ev, "lead_id")
    elif etype == "lead.stage_changed":
        _check_id(ev, "lead_id")
        if ev.get("stage") not in STAGES:
            raise Invalid("invalid_event", "bad stage")
    elif etype == "opportunity.created":
        _check_id(ev, "opportunity_id")
        _check_id(ev, "lead_id", required=False)
        _check_money(ev, "amount", required=True)
    elif etype == "opportunity.won":
        _check_id(ev, "opportunity_id")
        _check_money(ev, "amount", required=False)
    elif etype == "opportunity.lost":
        _check_id(ev, "opportunity_id")
    elif etype.startswith("subscription."):
        _check_id(ev, "subscription_id")
        if etype in ("subscription.started", "subscription.updated"):
            _check_price(ev, required=True)
        elif etype == "subscription.renewed":
            _check_price(ev, required=False)
    elif etype == "marketing.spend":
        _check_id(ev, "channel")
        _check_money(ev, "amount", required=True)
    elif _present(ev, "quantity"):
        q = ev["quantity"]
        if isinstance(q, bool) or not isinstance(q, int | float):
            raise Invalid("invalid_event", "bad quantity")
    if _present(ev, "currency"):
        code = ev["currency"]
        if not isinstance(code, str) or not re.fullmatch(r"[A-Z]{3}", code):
            raise Invalid("invalid_event", "bad currency")
        if code != REPORTING_CURRENCY and code not in currencies:
            raise Invalid("unknown_currency", code)


def classify(raw: bytes, currencies: Mapping[str, float]) -> tuple[str | None, ...]:
    """Outcome of a raw record: one reason (or None = accepted) per event, per SPEC §1."""
    try:
        value = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return ("invalid_json",)
    elements = value if isinstance(value, list) else [value]
    outcomes: list[str | None] = []
    for element in elements:
        try:
            check_event(element, currencies)
        except Invalid as exc:
            outcomes.append(exc.args[0])
        else:
            outcomes.append(None)
    return tuple(outcomes)


# ------------------------------------------------------------------------------------------------------ fixtures

CONFIG = SynthConfig()
N_EVENTS = 30_000


@pytest.fixture(scope="module")
def stream() -> Stream:
    return list(generate(CONFIG, events=N_EVENTS))


@pytest.fixture(scope="module")
def unique(stream: Stream) -> list[dict[str, Any]]:
    """First delivery of every event, sorted by occurred_at (ties: delivery order)."""
    seen: set[str] = set()
    out: list[tuple[int, int, dict[str, Any]]] = []
    for i, (_, ev) in enumerate(stream):
        if ev["event_id"] not in seen:
            seen.add(ev["event_id"])
            out.append((occurred_at_ms(ev["occurred_at"]), i, ev))
    out.sort(key=lambda t: (t[0], t[1]))
    return [ev for _, _, ev in out]


# --------------------------------------------------------------------------------------------------------- tests


def test_config_validation() -> None:
    with pytest.raises(ValueError):
        SynthConfig(accounts=0)
    with pytest.raises(ValueError):
        SynthConfig(days=0)
    with pytest.raises(ValueError):
        SynthConfig(late_fraction=1.5)
    with pytest.raises(ValueError):
        SynthConfig(start=datetime(2024, 1, 1))  # naive
    with pytest.raises(ValueError):
        SynthConfig(currencies={"eur": 1.1})
    with pytest.raises(ValueError):
        list(generate(CONFIG, events=-1))
    rates = {"EUR": 1.08}
    cfg = SynthConfig(currencies=rates)
    rates["GBP"] = 1.27  # the config keeps its own immutable copy
    assert dict(cfg.currencies) == {"EUR": 1.08}
    assert cfg == SynthConfig() and hash(cfg) == hash(SynthConfig())


def test_deterministic() -> None:
    a = list(generate(CONFIG, events=5_000))
    b = list(generate(CONFIG, events=5_000))
    assert a == b
    c = list(generate(SynthConfig(seed=CONFIG.seed + 1), events=5_000))
    assert c != a
    assert list(itertools.islice(generate(CONFIG), 2_000)) == list(itertools.islice(generate(CONFIG), 2_000))


def test_exact_count_and_span(stream: Stream) -> None:
    assert len(stream) == N_EVENTS
    start = occurred_at_ms(CONFIG.start.isoformat())
    end = start + CONFIG.days * DAY_MS
    times = [occurred_at_ms(ev["occurred_at"]) for _, ev in stream]
    assert min(times) >= start and max(times) < end
    # the N events span the whole range, not just its beginning
    assert min(times) < start + DAY_MS
    assert max(times) > end - DAY_MS
    per_week = Counter((t - start) // (7 * DAY_MS) for t in times)
    assert len(per_week) == math.ceil(CONFIG.days / 7)
    assert min(per_week.values()) > N_EVENTS / CONFIG.days * 2


def test_small_and_natural_streams() -> None:
    assert list(generate(CONFIG, events=0)) == []
    assert len(list(generate(CONFIG, events=100))) == 100
    cfg = SynthConfig(accounts=40, days=3, seed=3)
    events = list(generate(cfg))
    start = occurred_at_ms(cfg.start.isoformat())
    assert events
    assert all(start <= occurred_at_ms(ev["occurred_at"]) < start + 3 * DAY_MS for _, ev in events)
    tiny = list(generate(SynthConfig(accounts=1, days=1, currencies={}), events=500))
    assert len(tiny) == 500
    assert all("EUR" not in json.dumps(ev) for _, ev in tiny)


def test_every_event_valid(stream: Stream) -> None:
    for topic, ev in stream:
        check_event(ev, CONFIG.currencies)
        assert topic == TOPICS[ev["type"].split(".")[0]] == topic_for(ev["type"])
        assert classify(json.dumps(ev).encode(), CONFIG.currencies) == (None,)


def test_occurred_at_formats(stream: Stream) -> None:
    values = [ev["occurred_at"] for _, ev in stream]
    ints = [v for v in values if isinstance(v, int)]
    strings = [v for v in values if isinstance(v, str)]
    assert not any(isinstance(v, bool) for v in values)
    zulu = [v for v in strings if v.endswith("Z")]
    assert len(zulu) > 0.6 * len(values)  # mostly RFC 3339 with Z
    assert any("." in v for v in zulu)
    assert any(v.endswith("+02:00") and "." in v for v in strings)
    assert any(not v.endswith("Z") and not v.endswith("+02:00") for v in strings)
    assert 0.03 * len(values) < len(ints) < 0.2 * len(values)


def test_mix_includes_every_type(stream: Stream) -> None:
    counts = Counter(ev["type"] for _, ev in stream)
    assert set(counts) == set(EVENT_TYPES)
    assert counts.most_common(1)[0][0] == "product.usage"


def test_ids_unique_except_duplicates(stream: Stream) -> None:
    first: dict[str, dict[str, Any]] = {}
    for _, ev in stream:
        if ev["event_id"] in first:
            assert first[ev["event_id"]] == ev  # re-sent as is
            assert first[ev["event_id"]] is not ev
        else:
            first[ev["event_id"]] = ev
    counts = Counter(ev["event_id"] for _, ev in stream)
    assert max(counts.values()) == 2


def test_late_and_duplicate_rates(stream: Stream) -> None:
    seen: set[str] = set()
    latest = -1
    late = dups = firsts = 0
    max_lateness = 0
    for _, ev in stream:
        t = occurred_at_ms(ev["occurred_at"])
        if latest >= 0:
            max_lateness = max(max_lateness, latest - t)
        if ev["event_id"] in seen:
            dups += 1
        else:
            seen.add(ev["event_id"])
            firsts += 1
            late += t < latest
        latest = max(latest, t)
    assert late / firsts == pytest.approx(CONFIG.late_fraction, rel=0.2)
    assert dups / firsts == pytest.approx(CONFIG.duplicate_fraction, rel=0.35)
    assert 0 < max_lateness < 3 * DAY_MS  # within 3 days of lateness: never too_late
    # no late delivery, no duplicate: the stream is in time order
    ordered = list(generate(SynthConfig(late_fraction=0, duplicate_fraction=0), events=5_000))
    times = [occurred_at_ms(ev["occurred_at"]) for _, ev in ordered]
    assert times == sorted(times)
    assert len({ev["event_id"] for _, ev in ordered}) == len(ordered)


def test_late_rate_follows_config() -> None:
    cfg = SynthConfig(late_fraction=0.1, duplicate_fraction=0.05, seed=5)
    seen: set[str] = set()
    latest, late, dups = -1, 0, 0
    events = list(generate(cfg, events=20_000))
    for _, ev in events:
        t = occurred_at_ms(ev["occurred_at"])
        if ev["event_id"] in seen:
            dups += 1
        else:
            seen.add(ev["event_id"])
            late += t < latest
        latest = max(latest, t)
    assert late / len(seen) == pytest.approx(0.1, rel=0.1)
    assert dups / len(seen) == pytest.approx(0.05, rel=0.15)


def test_segments(unique: list[dict[str, Any]]) -> None:
    carried: dict[str, set[str]] = defaultdict(set)
    accounts: set[str] = set()
    for ev in unique:
        if "account_id" in ev:
            accounts.add(ev["account_id"])
        if ev.get("segment") and "account_id" in ev:
            carried[ev["account_id"]].add(ev["segment"])
    values = set().union(*carried.values())
    assert {"smb", "mid_market", "enterprise", "startup"} <= values
    assert len(accounts - set(carried)) >= 3  # accounts never carrying a segment → unknown
    changed = [a for a, segs in carried.items() if len(segs) > 1]
    assert changed  # account.updated changing a segment
    updates = [ev for ev in unique if ev["type"] == "account.updated"]
    assert any("segment" in ev for ev in updates) and any("segment" not in ev for ev in updates)
    spend = [ev for ev in unique if ev["type"] == "marketing.spend"]
    assert any("segment" in ev for ev in spend) and any("segment" not in ev for ev in spend)
    assert "account_id" not in spend[0]


def test_funnel(unique: list[dict[str, Any]]) -> None:
    stages: dict[str, list[str]] = defaultdict(list)
    source: dict[str, Any] = {}
    for ev in unique:
        if ev["type"] == "lead.created":
            source[ev["lead_id"]] = ev.get("source")
            stages[ev["lead_id"]].append("lead")
        elif ev["type"] == "lead.stage_changed":
            stages[ev["lead_id"]].append(ev["stage"])
    assert {s for seq in stages.values() for s in seq} == STAGES
    assert any("sql" in seq and "mql" not in seq and source.get(lid) == "outbound" for lid, seq in stages.items())
    assert any(seq[:3] == ["lead", "mql", "sql"] for seq in stages.values())
    assert len({v for v in source.values() if v}) >= 6
    created = [ev for ev in unique if ev["type"] == "opportunity.created"]
    with_lead = sum(1 for ev in created if ev.get("lead_id"))
    assert 0.5 * len(created) < with_lead < len(created)
    won = [ev for ev in unique if ev["type"] == "opportunity.won"]
    lost = [ev for ev in unique if ev["type"] == "opportunity.lost"]
    assert any(ev.get("amount") is None for ev in won) and any(ev.get("amount") for ev in won)
    assert any(ev.get("reason") for ev in lost)
    assert 0.15 < len(won) / (len(won) + len(lost)) < 0.5
    known = {ev["opportunity_id"] for ev in created}
    assert any(ev["opportunity_id"] not in known for ev in won + lost)  # opened before the stream


def test_billing(unique: list[dict[str, Any]]) -> None:
    subs = [ev for ev in unique if ev["type"].startswith("subscription.")]
    starts = [ev for ev in subs if ev["type"] == "subscription.started"]
    assert any("mrr" in ev for ev in starts) and any("amount" in ev for ev in starts)
    assert {ev["interval"] for ev in subs if "interval" in ev} == INTERVALS
    assert any(ev.get("interval_count", 1) > 1 for ev in subs)
    assert any("mrr" in ev and "amount" in ev for ev in subs)  # mrr wins
    renewed = [ev for ev in subs if ev["type"] == "subscription.renewed"]
    assert any("mrr" in ev or "amount" in ev for ev in renewed)
    assert any("mrr" not in ev and "amount" not in ev for ev in renewed)
    assert any(ev.get("currency") == "EUR" for ev in subs)
    assert any(ev.get("currency") == REPORTING_CURRENCY for ev in subs)
    # replay the subscription states: several per account, churn, reactivation, expansion and contraction
    active: dict[str, set[str]] = defaultdict(set)
    mrr: dict[tuple[str, str], float] = {}
    paid_before: set[str] = set()
    months = {"week": 12 / 52, "month": 1.0, "quarter": 3.0, "year": 12.0}
    kinds: Counter[str] = Counter()
    max_subs = 0
    for ev in subs:
        acct, key = ev["account_id"], (ev["account_id"], ev["subscription_id"])
        before = len(active[acct])
        if ev["type"] == "subscription.canceled":
            active[acct].discard(ev["subscription_id"])
            kinds["churn" if before and not active[acct] else "cancel"] += 1
            continue
        if ev.get("mrr") is not None:
            new = ev["mrr"]
        elif ev.get("amount") is not None:
            new = ev["amount"] / (months[ev["interval"]] * ev.get("interval_count", 1))
        else:
            continue
        old = mrr.get(key)
        mrr[key] = new
        active[acct].add(ev["subscription_id"])
        if not before:
            kinds["reactivation" if acct in paid_before else "new"] += 1
        elif old is not None and new > old:
            kinds["expansion"] += 1
        elif old is not None and new < old:
            kinds["contraction"] += 1
        paid_before.add(acct)
        max_subs = max(max_subs, len(active[acct]))
    assert max_subs >= 2
    assert all(kinds[k] > 0 for k in ("new", "churn", "reactivation", "expansion", "contraction"))
    assert kinds["expansion"] > kinds["contraction"]


def test_product(unique: list[dict[str, Any]]) -> None:
    product = [ev for ev in unique if ev["type"].startswith("product.")]
    counts = Counter(ev["type"] for ev in product)
    assert counts["product.signup"] > counts["product.activated"] > 0
    assert counts["product.trial_started"] > 0
    usage = [ev for ev in product if ev["type"] == "product.usage"]
    assert len({ev["account_id"] for ev in usage}) > 100
    assert all(isinstance(ev.get("quantity", 1), int) for ev in usage)


def test_bad_records_cover_every_reason() -> None:
    cases = bad_record_cases()
    assert [(t, raw) for t, raw, _ in cases] == bad_records()
    reasons: set[str] = set()
    arrays = 0
    for topic, raw, expected in cases:
        assert topic in TOPICS.values()
        assert classify(raw, CONFIG.currencies) == expected, raw
        reasons |= {r for r in expected if r is not None}
        if raw.lstrip().startswith(b"["):
            arrays += 1
            assert None in expected and any(r is not None for r in expected)
    assert reasons == REASONS
    assert arrays == 1
    # each kind of invalid_event named by the brief is there
    raws = b"\n".join(raw for _, raw, _ in cases)
    for needle in (b'"amount":"1200.00"', b'"stage":"won"', b"2024-01-02 12:00:00", b'"type":17', b"42"):
        assert needle in raws


def test_generator_is_lazy_and_bounded() -> None:
    it = generate(CONFIG, events=50_000_000)
    assert inspect.isgenerator(it)
    assert len(list(itertools.islice(it, 1_000))) == 1_000
    tracemalloc.start()
    try:
        for _ in generate(CONFIG, events=60_000):
            pass
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8_000_000  # ~2 MB at any length; a list of these 60k events would take ~30 MB


def test_an_event_budget_is_met_exactly() -> None:
    assert sum(1 for _ in generate(CONFIG, events=200_000)) == 200_000


def test_live() -> None:
    t0 = datetime(2025, 5, 1, 10, 30, 15, tzinfo=UTC)
    t0_ms = occurred_at_ms(t0.isoformat())
    cfg = SynthConfig(accounts=60, seed=2)
    stream = live(cfg, rate=3.0, now=lambda: t0, backfill_days=3)
    backfill = realtime = 0
    latest = -1
    events = []
    for _, ev in stream:
        check_event(ev, cfg.currencies)
        t = occurred_at_ms(ev["occurred_at"])
        assert t >= t0_ms - 3 * DAY_MS
        assert latest - t < 3 * DAY_MS
        latest = max(latest, t)
        if t < t0_ms:
            backfill += 1
            assert realtime == 0 or seconds_until_due(ev, t0) == 0
        else:
            realtime += 1
            events.append(ev)
        if t >= t0_ms + 3_600_000:
            break
    assert backfill > 500
    assert realtime == pytest.approx(3.0 * 3600, rel=0.1)
    assert seconds_until_due(events[-1], t0) == pytest.approx(3600, abs=5)
    assert seconds_until_due(events[-1], t0 + timedelta(hours=2)) == 0
    # a restarted demo never reuses event ids
    later = live(cfg, rate=3.0, now=lambda: t0 + timedelta(minutes=5))
    ids = {ev["event_id"] for _, ev in itertools.islice(later, 200)}
    assert not ids & {ev["event_id"] for ev in events}
    with pytest.raises(ValueError):
        live(cfg, rate=0, now=lambda: t0)
