"""Naive batch reference implementation of the RevPulse contract (SPEC.md).

Deliberately independent of the streaming engine (nothing is imported from ``streams``, ``agents`` or
``schemas``): it exists to cross-check it.  It works in two plain passes:

1. ingestion, exactly as SPEC §1-§2: parse each record (an event or a JSON array of events), validate every
   event (reasons in the contract's order), judge lateness per (input topic, routing key) against the
   accepted events seen so far, then de-duplicate by ``event_id``;
2. replay: the accepted events, stable-sorted by ``occurred_at`` (ties: arrival order), are applied one by one
   to naive per-account / per-opportunity / per-lead state, recording every "flow" (a windowed count or sum)
   with its time and event segment; every metric of SPEC §4 is then computed from those flows and from the
   state at ``as_of`` and at each window's t0.

Times are integer microseconds since the Unix epoch (UTC) internally.
"""

from __future__ import annotations

import math
import re
from bisect import bisect_left
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson

# --------------------------------------------------------------------------------------------------------------
# Contract constants
# --------------------------------------------------------------------------------------------------------------

TOPIC_CRM = "crm.events"
TOPIC_BILLING = "billing.events"
TOPIC_PRODUCT = "product.events"
TOPIC_MARKETING = "marketing.events"

KNOWN_TYPES: frozenset[str] = frozenset(
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

STAGES: tuple[str, ...] = ("lead", "mql", "sql", "opportunity", "customer", "disqualified")
MOVEMENT_KINDS: tuple[str, ...] = ("new", "expansion", "contraction", "churn", "reactivation")
CONVERSION_PAIRS: tuple[tuple[str, str], ...] = (
    ("lead", "mql"),
    ("mql", "sql"),
    ("sql", "opportunity"),
    ("opportunity", "won"),
)
WINDOWS: dict[str, int] = {"1d": 1, "7d": 7, "30d": 30, "90d": 90}  # window label -> days
MONTHS_PER_INTERVAL: dict[str, float] = {"week": 12 / 52, "month": 1.0, "quarter": 3.0, "year": 12.0}

SNAPSHOT_METRICS: tuple[str, ...] = (
    "mrr",
    "arr",
    "customers",
    "arpa",
    "open_opportunities",
    "open_pipeline_amount",
    "leads_in_stage",
    "leads_in_stage_share",
)
WINDOWED_METRICS: tuple[str, ...] = (
    "mrr_movement",
    "net_new_mrr",
    "new_customers",
    "customer_churn_rate",
    "gross_mrr_churn_rate",
    "net_mrr_churn_rate",
    "nrr",
    "grr",
    "expansion_rate",
    "renewal_rate",
    "mrr_growth_rate",
    "real_mrr_growth_rate",
    "cltv",
    "leads_created",
    "mqls",
    "sqls",
    "opportunities_created",
    "deals_won",
    "deals_lost",
    "won_amount",
    "win_rate",
    "win_loss_ratio",
    "avg_deal_size",
    "sales_cycle_seconds",
    "time_to_close_seconds",
    "pipeline_velocity",
    "stage_conversion_rate",
    "marketing_spend",
    "cost_per_lead",
    "cac",
    "roi",
    "signups",
    "trials_started",
    "activation_rate",
    "active_accounts",
    "trial_conversion_rate",
)

HALF_CENT = 0.005
SECOND_US = 1_000_000
HOUR_US = 3600 * SECOND_US
DAY_US = 24 * HOUR_US
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

_RFC3339 = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2}):([0-9]{2})(\.[0-9]+)?(Z|[+-][0-9]{2}:[0-9]{2})"
)
_CURRENCY_CODE = re.compile(r"[A-Z]{3}")


# --------------------------------------------------------------------------------------------------------------
# Public interface
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RefSettings:
    segments: tuple[str, ...] = ("smb", "mid_market", "enterprise")
    currency: str = "USD"
    fx_rates: Mapping[str, float] = field(default_factory=dict)  # units of reporting currency per unit
    allowed_lateness_s: float = 7 * 86400
    inflation_annual: float = 0.03
    gross_margin: float = 1.0
    # The worker's wall clock when every record arrives (SPEC §1: occurred_at at most a day after it); None:
    # no upper bound, as for logs whose dates are all in the past.
    now: datetime | None = None


@dataclass
class RefResult:
    series: dict[str, float | None]  # canonical key -> value (None = undefined)
    as_of: datetime | None  # clock "event": the watermark (UTC aware)
    outcomes: Counter[str]  # accepted | duplicate | rejected | late -> number of events


@dataclass
class RefEvent:
    """An accepted (valid) event, normalised."""

    seq: int  # arrival order among accepted events
    ts: int  # occurred_at, microseconds since the epoch (UTC)
    type: str
    event_id: str
    account_id: str | None  # None only for marketing.*
    segment: str | None  # the event's own non-empty `segment`, raw (not yet mapped to other)
    fx: float  # multiplier into the reporting currency
    body: dict[str, Any]
    price_mrr: float | None = None  # subscription.* price as MRR, in the event's currency (None: no price)


@dataclass
class Outcome:
    """What ingestion did with one event (or one unparseable record)."""

    outcome: str  # accepted | duplicate | rejected | late
    reason: str | None  # for rejected/late: invalid_json, invalid_event, unknown_type, unknown_currency, too_late
    event_id: str | None = None


def series_key(metric: str, **labels: str) -> str:
    """Canonical series name: ``metric{a="x",b="y"}`` with labels sorted by name."""
    inner = ",".join(f'{name}="{labels[name]}"' for name in sorted(labels))
    return f"{metric}{{{inner}}}"


def to_datetime(ts_us: int) -> datetime:
    return EPOCH + timedelta(microseconds=ts_us)


def parse_occurred_at(value: object) -> int | None:
    """RFC 3339 (strict ``YYYY-MM-DDTHH:MM:SS[.fraction](Z|±hh:mm)``) or JSON integer epoch ms -> µs, else None.

    A fraction finer than a microsecond is truncated.
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        try:
            return (EPOCH + timedelta(milliseconds=value) - EPOCH) // timedelta(microseconds=1)
        except OverflowError:
            return None
    if not isinstance(value, str):
        return None
    m = _RFC3339.fullmatch(value)
    if m is None:
        return None
    year, month, day, hour, minute, second = (int(m.group(i)) for i in range(1, 7))
    fraction = m.group(7)
    micros = int(fraction[1:7].ljust(6, "0")) if fraction else 0
    offset = m.group(8)
    if offset == "Z":
        tz = UTC
    else:
        oh, om = int(offset[1:3]), int(offset[4:6])
        if oh > 23 or om > 59:
            return None
        delta = timedelta(hours=oh, minutes=om)
        tz = timezone(-delta if offset[0] == "-" else delta)
    try:
        dt = datetime(year, month, day, hour, minute, second, micros, tzinfo=tz)
        dt = dt.astimezone(UTC)
    except (ValueError, OverflowError):
        return None
    return (dt - EPOCH) // timedelta(microseconds=1)


# --------------------------------------------------------------------------------------------------------------
# Validation (SPEC §1)
# --------------------------------------------------------------------------------------------------------------


def _is_id(value: object) -> bool:
    return isinstance(value, str) and 0 < len(value) <= 256


def _is_money(value: object) -> bool:
    return (
        isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and 0 <= value <= 1e12
    )


class _Invalid(Exception):
    pass


def _price(obj: Mapping[str, Any], required: bool) -> float | None:
    """MRR implied by `mrr` or `amount` + `interval` (+ `interval_count`); None when no price is given."""
    mrr = obj.get("mrr")
    amount = obj.get("amount")
    interval = obj.get("interval")
    count = obj.get("interval_count")
    if mrr is not None and not _is_money(mrr):
        raise _Invalid("mrr")
    if amount is not None and not _is_money(amount):
        raise _Invalid("amount")
    if interval is not None and not (isinstance(interval, str) and interval in MONTHS_PER_INTERVAL):
        raise _Invalid("interval")
    if count is not None and not (isinstance(count, int) and not isinstance(count, bool) and count >= 1):
        raise _Invalid("interval_count")
    if mrr is not None:
        return float(mrr)
    if amount is not None and interval is not None:
        n = 1 if count is None else count
        return float(amount) / (MONTHS_PER_INTERVAL[interval] * n)
    if amount is None and interval is None and not required:
        return None
    raise _Invalid("price")  # no price where one is required, or amount without interval (or vice versa)


def validate(obj: object, settings: RefSettings) -> tuple[str, None] | tuple[None, RefEvent]:
    """Return (reason, None) for a rejected event, or (None, event) for a valid one (seq left at -1)."""
    if not isinstance(obj, dict) or not isinstance(obj.get("type"), str):
        return "invalid_event", None
    etype: str = obj["type"]
    if etype not in KNOWN_TYPES:
        return "unknown_type", None
    try:
        event_id = obj.get("event_id")
        if not _is_id(event_id):
            raise _Invalid("event_id")
        ts = parse_occurred_at(obj.get("occurred_at"))
        if ts is None or ts < 0:
            raise _Invalid("occurred_at")
        if settings.now is not None and ts > (settings.now - EPOCH + timedelta(days=1)) // timedelta(microseconds=1):
            raise _Invalid("occurred_at")
        marketing = etype.startswith("marketing.")
        account_id = obj.get("account_id")
        if not marketing and not _is_id(account_id):
            raise _Invalid("account_id")
        segment = obj.get("segment")
        if segment is not None and not isinstance(segment, str):
            raise _Invalid("segment")
        currency = obj.get("currency")
        if currency is not None and not (isinstance(currency, str) and _CURRENCY_CODE.fullmatch(currency)):
            raise _Invalid("currency")
        price: float | None = None
        if etype in ("lead.created", "lead.stage_changed"):
            if not _is_id(obj.get("lead_id")):
                raise _Invalid("lead_id")
            if etype == "lead.stage_changed" and not (isinstance(obj.get("stage"), str) and obj["stage"] in STAGES):
                raise _Invalid("stage")
        elif etype.startswith("opportunity."):
            if not _is_id(obj.get("opportunity_id")):
                raise _Invalid("opportunity_id")
            if etype == "opportunity.created":
                if not _is_money(obj.get("amount")):
                    raise _Invalid("amount")
                if obj.get("lead_id") is not None and not _is_id(obj.get("lead_id")):
                    raise _Invalid("lead_id")
            elif etype == "opportunity.won" and obj.get("amount") is not None and not _is_money(obj["amount"]):
                raise _Invalid("amount")
        elif etype.startswith("subscription."):
            if not _is_id(obj.get("subscription_id")):
                raise _Invalid("subscription_id")
            if etype in ("subscription.started", "subscription.updated"):
                price = _price(obj, required=True)
            elif etype == "subscription.renewed":
                price = _price(obj, required=False)
        elif etype.startswith("product."):
            if obj.get("user_id") is not None and not _is_id(obj.get("user_id")):
                raise _Invalid("user_id")
        elif etype == "marketing.spend":
            if not _is_id(obj.get("channel")):
                raise _Invalid("channel")
            if not _is_money(obj.get("amount")):
                raise _Invalid("amount")
    except _Invalid:
        return "invalid_event", None
    if currency is None or currency == settings.currency:
        fx = 1.0
    elif currency in settings.fx_rates:
        fx = float(settings.fx_rates[currency])
    else:
        return "unknown_currency", None
    event = RefEvent(
        seq=-1,
        ts=ts,
        type=etype,
        event_id=event_id,
        account_id=None if marketing else account_id,
        segment=segment if segment else None,
        fx=fx,
        body=obj,
        price_mrr=price,
    )
    return None, event


# --------------------------------------------------------------------------------------------------------------
# Ingestion (SPEC §1-§2)
# --------------------------------------------------------------------------------------------------------------


def ingest(
    records: Sequence[tuple[str, bytes]], settings: RefSettings = RefSettings()
) -> tuple[list[RefEvent], list[Outcome]]:
    """Accepted events in arrival order, and the outcome of every event / unparseable record."""
    lateness_us = round(settings.allowed_lateness_s * SECOND_US)
    accepted: list[RefEvent] = []
    outcomes: list[Outcome] = []
    latest_by_key: dict[tuple[str, str], int] = {}
    # (topic, key) -> accepted id -> its occurred_at; an id counts while within the lateness of the key's latest
    accepted_ids: dict[tuple[str, str], dict[str, int]] = {}
    for topic, raw in records:
        try:
            doc = orjson.loads(raw)
        except orjson.JSONDecodeError:
            outcomes.append(Outcome("rejected", "invalid_json"))
            continue
        if isinstance(doc, list) and len(doc) > 10_000:
            outcomes.append(Outcome("rejected", "invalid_event"))
            continue
        items = doc if isinstance(doc, list) else [doc]
        for item in items:
            reason, event = validate(item, settings)
            if event is None:
                outcomes.append(Outcome("rejected", reason))
                continue
            routing_key = event.body["channel"] if event.type.startswith("marketing.") else event.account_id
            assert routing_key is not None
            key = (topic, routing_key)
            latest = latest_by_key.get(key)
            if latest is not None and event.ts < latest - lateness_us:
                outcomes.append(Outcome("late", "too_late", event.event_id))
                continue
            seen = accepted_ids.setdefault(key, {}).get(event.event_id)
            if seen is not None and latest is not None and seen >= latest - lateness_us:
                outcomes.append(Outcome("duplicate", None, event.event_id))
                continue
            accepted_ids[key][event.event_id] = event.ts
            latest_by_key[key] = event.ts if latest is None else max(latest, event.ts)
            event.seq = len(accepted)
            accepted.append(event)
            outcomes.append(Outcome("accepted", None, event.event_id))
    return accepted, outcomes


# --------------------------------------------------------------------------------------------------------------
# Replay (SPEC §3-§4)
# --------------------------------------------------------------------------------------------------------------


@dataclass
class _Flow:
    ts: int
    segment: str | None  # event segment; None = counts only in `all` (marketing.spend without a segment)
    name: str
    value: float


@dataclass
class _Replay:
    """Everything the sorted replay produces."""

    flows: list[_Flow] = field(default_factory=list)
    product_touches: list[tuple[int, str, str]] = field(default_factory=list)  # (ts, event segment, account)
    account_segment: dict[str, str] = field(default_factory=dict)  # latest raw segment
    accounts: set[str] = field(default_factory=set)
    seen_segments: set[str] = field(default_factory=set)  # every segment an event resolved to
    # revenue
    subscriptions: dict[str, dict[str, float]] = field(default_factory=lambda: defaultdict(dict))
    recorded_mrr: dict[str, float] = field(default_factory=dict)
    paid_before: set[str] = field(default_factory=set)
    mrr_history: dict[str, list[tuple[int, float]]] = field(default_factory=lambda: defaultdict(list))
    churn_times: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))
    trial_accounts: set[str] = field(default_factory=set)
    # opportunities
    opp_open_amount: dict[str, float | None] = field(default_factory=dict)  # None = closed
    opp_last_amount: dict[str, float] = field(default_factory=dict)
    opp_account: dict[str, str] = field(default_factory=dict)  # account of the opp's latest event
    opp_first_created: dict[str, tuple[int, str | None]] = field(default_factory=dict)  # ts, lead_id
    # leads
    lead_stage: dict[str, str] = field(default_factory=dict)
    lead_account: dict[str, str] = field(default_factory=dict)
    lead_first_created: dict[str, int] = field(default_factory=dict)


class _Engine:
    def __init__(self, settings: RefSettings) -> None:
        self.settings = settings
        self.r = _Replay()

    def norm(self, raw: str) -> str:
        return raw if raw in self.settings.segments else "other"

    def flow(self, ev: RefEvent, segment: str | None, name: str, value: float = 1.0) -> None:
        self.r.flows.append(_Flow(ev.ts, segment, name, value))

    def event_segment(self, ev: RefEvent) -> str | None:
        r = self.r
        if ev.account_id is None:  # marketing: own segment only
            return None if ev.segment is None else self.norm(ev.segment)
        r.accounts.add(ev.account_id)
        if ev.segment is not None:
            r.account_segment[ev.account_id] = ev.segment
        raw = r.account_segment.get(ev.account_id)
        return "unknown" if raw is None else self.norm(raw)

    def apply(self, ev: RefEvent) -> None:
        r = self.r
        seg = self.event_segment(ev)
        if seg is not None:
            r.seen_segments.add(seg)
        body = ev.body
        t = ev.type
        if t == "marketing.spend":
            self.flow(ev, seg, "marketing_spend", float(body["amount"]) * ev.fx)
            return
        assert ev.account_id is not None
        acct = ev.account_id
        if t.startswith("subscription."):
            self.apply_subscription(ev, seg, acct)
        elif t == "lead.created" or t == "lead.stage_changed":
            lead = body["lead_id"]
            stage = "lead" if t == "lead.created" else body["stage"]
            r.lead_stage[lead] = stage
            r.lead_account[lead] = acct
            if t == "lead.created":
                r.lead_first_created.setdefault(lead, ev.ts)
                self.flow(ev, seg, "leads_created")
            elif stage == "mql":
                self.flow(ev, seg, "mqls")
            elif stage == "sql":
                self.flow(ev, seg, "sqls")
        elif t.startswith("opportunity."):
            self.apply_opportunity(ev, seg, acct)
        elif t.startswith("product."):
            assert seg is not None
            r.product_touches.append((ev.ts, seg, acct))
            if t == "product.signup":
                self.flow(ev, seg, "signups")
            elif t == "product.trial_started":
                self.flow(ev, seg, "trials_started")
                r.trial_accounts.add(acct)
            elif t == "product.activated":
                self.flow(ev, seg, "activated")
        # account.updated: only the segment (already handled)

    def apply_subscription(self, ev: RefEvent, seg: str | None, acct: str) -> None:
        r = self.r
        sub = ev.body["subscription_id"]
        subs = r.subscriptions[acct]
        if ev.type == "subscription.canceled":
            subs[sub] = 0.0
            self.flow(ev, seg, "canceled")
        else:
            if ev.type == "subscription.renewed":
                self.flow(ev, seg, "renewed")
            if ev.price_mrr is not None:
                subs[sub] = ev.price_mrr * ev.fx
        total = sum(subs.values())
        if total < HALF_CENT:
            total = 0.0
        m0 = r.recorded_mrr.get(acct, 0.0)
        m1 = total
        if abs(m1 - m0) < HALF_CENT:
            return  # equal MRR: no movement, recorded value stays
        if m0 == 0.0:
            kind = "reactivation" if acct in r.paid_before else "new"
        elif m1 == 0.0:
            kind = "churn"
        elif m1 > m0:
            kind = "expansion"
        else:
            kind = "contraction"
        self.flow(ev, seg, kind, abs(m1 - m0))
        if kind == "new":
            self.flow(ev, seg, "new_count")
            if acct in r.trial_accounts:
                self.flow(ev, seg, "trial_new")
        if kind == "churn":
            r.churn_times[acct].append(ev.ts)
        r.recorded_mrr[acct] = m1
        if m1 > 0:
            r.paid_before.add(acct)
        r.mrr_history[acct].append((ev.ts, m1))

    def apply_opportunity(self, ev: RefEvent, seg: str | None, acct: str) -> None:
        r = self.r
        body = ev.body
        opp = body["opportunity_id"]
        r.opp_account[opp] = acct
        if ev.type == "opportunity.created":
            amount = float(body["amount"]) * ev.fx
            r.opp_open_amount[opp] = amount
            r.opp_last_amount[opp] = amount
            r.opp_first_created.setdefault(opp, (ev.ts, body.get("lead_id")))
            self.flow(ev, seg, "opportunities_created")
        elif ev.type == "opportunity.lost":
            r.opp_open_amount[opp] = None
            self.flow(ev, seg, "deals_lost")
        else:  # won
            if body.get("amount") is not None:
                amount = float(body["amount"]) * ev.fx
                r.opp_last_amount[opp] = amount
            else:
                amount = r.opp_last_amount.get(opp, 0.0)
            r.opp_open_amount[opp] = None
            self.flow(ev, seg, "deals_won")
            self.flow(ev, seg, "won_amount", amount)
            created = r.opp_first_created.get(opp)
            if created is not None:
                created_ts, lead = created
                self.flow(ev, seg, "sales_cycle_sum", (ev.ts - created_ts) / SECOND_US)
                self.flow(ev, seg, "sales_cycle_n")
                if lead is not None and lead in r.lead_first_created:
                    self.flow(ev, seg, "ttc_sum", (ev.ts - r.lead_first_created[lead]) / SECOND_US)
                    self.flow(ev, seg, "ttc_n")


def _div(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return a / b


def _mrr_at(history: list[tuple[int, float]], t0: int) -> float:
    """Recorded MRR after every movement with ts < t0."""
    idx = bisect_left([ts for ts, _ in history], t0)
    return history[idx - 1][1] if idx else 0.0


def compute(
    records: Sequence[tuple[str, bytes]], settings: RefSettings = RefSettings(), as_of_us: int | None = None
) -> RefResult:
    """Every series at the watermark, or (SPEC §5 history) at `as_of_us` over the accepted events at or before
    it: acceptance (lateness, duplicates) is still judged on the whole log, as known now."""
    accepted, outcome_list = ingest(records, settings)
    outcomes: Counter[str] = Counter(o.outcome for o in outcome_list)
    if as_of_us is not None:
        accepted = [e for e in accepted if e.ts <= as_of_us]
    if not accepted:
        return RefResult(series={}, as_of=None, outcomes=outcomes)

    events = sorted(accepted, key=lambda e: (e.ts, e.seq))
    as_of = max(e.ts for e in events) if as_of_us is None else as_of_us
    engine = _Engine(settings)
    for ev in events:
        engine.apply(ev)
    r = engine.r

    # ---- final (as_of) grouping of accounts -------------------------------------------------------------
    def final_segment(acct: str) -> str:
        raw = r.account_segment.get(acct)
        return "unknown" if raw is None else engine.norm(raw)

    acct_seg = {a: final_segment(a) for a in r.accounts}
    existing = set(r.seen_segments) | set(acct_seg.values())
    segments: list[str] = ["all"]
    for s in (*settings.segments, "other", "unknown"):
        if s not in segments and (s in settings.segments or s in existing):
            segments.append(s)

    def groups(segment: str) -> tuple[str, ...]:
        return ("all", segment)

    series: dict[str, float | None] = {}

    # ---- snapshots ------------------------------------------------------------------------------------------
    mrr_now: dict[str, float] = defaultdict(float)
    customers_now: dict[str, int] = defaultdict(int)
    for acct in r.accounts:
        m = r.recorded_mrr.get(acct, 0.0)
        for g in groups(acct_seg[acct]):
            mrr_now[g] += m
            if m > 0:
                customers_now[g] += 1
    open_count: dict[str, int] = defaultdict(int)
    open_amount: dict[str, float] = defaultdict(float)
    for opp, amount in r.opp_open_amount.items():
        if amount is None:
            continue
        for g in groups(acct_seg[r.opp_account[opp]]):
            open_count[g] += 1
            open_amount[g] += amount
    lead_counts: dict[str, Counter[str]] = defaultdict(Counter)
    for lead, stage in r.lead_stage.items():
        for g in groups(acct_seg[r.lead_account[lead]]):
            lead_counts[g][stage] += 1

    for s in segments:
        series[series_key("mrr", segment=s)] = mrr_now[s]
        series[series_key("arr", segment=s)] = 12 * mrr_now[s]
        series[series_key("customers", segment=s)] = float(customers_now[s])
        series[series_key("arpa", segment=s)] = _div(mrr_now[s], customers_now[s])
        series[series_key("open_opportunities", segment=s)] = float(open_count[s])
        series[series_key("open_pipeline_amount", segment=s)] = open_amount[s]
        total_leads = sum(lead_counts[s].values())
        for stage in STAGES:
            n = lead_counts[s][stage]
            series[series_key("leads_in_stage", segment=s, stage=stage)] = float(n)
            series[series_key("leads_in_stage_share", segment=s, stage=stage)] = _div(n, total_leads)

    # ---- windows --------------------------------------------------------------------------------------------
    floor = as_of - as_of % HOUR_US
    for window, days in WINDOWS.items():
        t0 = floor - days * DAY_US + HOUR_US
        sums: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
        for f in r.flows:
            if f.ts >= t0:
                sums["all"][f.name] += f.value
                if f.segment is not None:
                    sums[f.segment][f.name] += f.value
        active: dict[str, set[str]] = defaultdict(set)
        for ts, seg, acct in r.product_touches:
            if ts >= t0:
                active["all"].add(acct)
                active[seg].add(acct)
        # state at t0, grouped by each account's segment at as_of
        mrr_t0: dict[str, float] = defaultdict(float)
        c0: dict[str, int] = defaultdict(int)
        c0_churned: dict[str, int] = defaultdict(int)
        c0_sum_now: dict[str, float] = defaultdict(float)
        c0_sum_min: dict[str, float] = defaultdict(float)
        for acct in r.accounts:
            m_t0 = _mrr_at(r.mrr_history.get(acct, []), t0)
            if m_t0 <= 0:
                continue
            m_now = r.recorded_mrr.get(acct, 0.0)
            churned = any(ts >= t0 for ts in r.churn_times.get(acct, []))
            for g in groups(acct_seg[acct]):
                mrr_t0[g] += m_t0
                c0[g] += 1
                c0_churned[g] += 1 if churned else 0
                c0_sum_now[g] += m_now
                c0_sum_min[g] += min(m_now, m_t0)
        inflation = (1 + settings.inflation_annual) ** (days / 365) - 1

        for s in segments:
            f = sums[s]

            def put(metric: str, value: float | None, _s: str = s, _w: str = window, **labels: str) -> None:
                series[series_key(metric, segment=_s, window=_w, **labels)] = value

            for kind in MOVEMENT_KINDS:
                put("mrr_movement", f[kind], kind=kind)
            put(
                "net_new_mrr",
                f["new"] + f["expansion"] + f["reactivation"] - f["contraction"] - f["churn"],
            )
            new_customers = f["new_count"]
            put("new_customers", new_customers)
            churn_rate = _div(c0_churned[s], c0[s])
            put("customer_churn_rate", churn_rate)
            base = mrr_t0[s]
            put("gross_mrr_churn_rate", _div(f["churn"] + f["contraction"], base))
            put(
                "net_mrr_churn_rate",
                _div(f["churn"] + f["contraction"] - f["expansion"] - f["reactivation"], base),
            )
            put("nrr", _div(c0_sum_now[s], base))
            put("grr", _div(c0_sum_min[s], base))
            put("expansion_rate", _div(f["expansion"], base))
            put("renewal_rate", _div(f["renewed"], f["renewed"] + f["canceled"]))
            growth = _div(mrr_now[s] - base, base)
            put("mrr_growth_rate", growth)
            put("real_mrr_growth_rate", None if growth is None else (1 + growth) / (1 + inflation) - 1)
            arpa = _div(mrr_now[s], customers_now[s])
            cltv = None
            if arpa is not None and churn_rate:
                cltv = arpa * settings.gross_margin / (churn_rate * 30 / days)
            put("cltv", cltv)

            leads, mqls, sqls = f["leads_created"], f["mqls"], f["sqls"]
            opps, won, lost = f["opportunities_created"], f["deals_won"], f["deals_lost"]
            put("leads_created", leads)
            put("mqls", mqls)
            put("sqls", sqls)
            put("opportunities_created", opps)
            put("deals_won", won)
            put("deals_lost", lost)
            put("won_amount", f["won_amount"])
            win_rate = _div(won, won + lost)
            put("win_rate", win_rate)
            put("win_loss_ratio", _div(won, lost))
            avg_deal = _div(f["won_amount"], won)
            put("avg_deal_size", avg_deal)
            cycle = _div(f["sales_cycle_sum"], f["sales_cycle_n"])
            put("sales_cycle_seconds", cycle)
            put("time_to_close_seconds", _div(f["ttc_sum"], f["ttc_n"]))
            velocity = None
            if win_rate is not None and avg_deal is not None and cycle:
                velocity = open_count[s] * avg_deal * win_rate / (cycle / 86400)
            put("pipeline_velocity", velocity)
            conversions = {
                ("lead", "mql"): (mqls, leads),
                ("mql", "sql"): (sqls, mqls),
                ("sql", "opportunity"): (opps, sqls),
                ("opportunity", "won"): (won, opps),
            }
            for (src, dst), (num, den) in conversions.items():
                put("stage_conversion_rate", _div(num, den), **{"from": src, "to": dst})

            spend = f["marketing_spend"]
            put("marketing_spend", spend)
            spend_defined = s == "all" or spend != 0
            put("cost_per_lead", _div(spend, leads) if spend_defined else None)
            put("cac", _div(spend, new_customers) if spend_defined else None)
            put("roi", _div(12 * f["new"] - spend, spend) if spend_defined else None)
            put("signups", f["signups"])
            put("trials_started", f["trials_started"])
            put("activation_rate", _div(f["activated"], f["signups"]))
            put("active_accounts", float(len(active[s])))
            put("trial_conversion_rate", _div(f["trial_new"], f["trials_started"]))

    return RefResult(series=series, as_of=to_datetime(as_of), outcomes=outcomes)
