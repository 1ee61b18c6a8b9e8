"""Deterministic synthetic event streams of a believable SaaS business (standard library only).

Used by ``revpulse demo`` (:func:`live`), by tests and by the benchmark (:func:`generate`), and to exercise the
dead-letter path (:func:`bad_records`). Every generated event is valid per SPEC §1; the only deliberate
irregularities are out-of-order (late) deliveries, within 3 days of event time, and re-sent duplicates (same
``event_id``, same body).

Business model (``accounts`` = size of the account base at ``start``):

* **Opening book.** About 60 % of the accounts are paying customers whose ``subscription.started`` arrive in the
  first 6 hours (an import of the existing book, preceded by an ``account.updated`` with name and segment for most
  of them); 12 % of those also have an add-on subscription. A few accounts are mid-trial, some are a backlog of
  prospects that enter the funnel over the first two weeks, some have an opportunity opened before ``start`` that
  closes in the first month (its ``won``/``lost`` refers to an opportunity the stream never created), the rest are
  dormant.
* **Segments.** ``smb`` (58 %), ``mid_market`` (27 %), ``enterprise`` (9 %), ``startup`` (3 %, not a configured
  segment → ``other``), none at all (3 %, → ``unknown``). ``account.updated`` sets the segment on arrival and
  occasionally changes it (smb → mid_market → enterprise, startup → smb) or just renames the account; lead,
  opportunity and subscription events sometimes carry the account's segment themselves.
* **New accounts** arrive every day (≈ 2.5 % of ``accounts`` per weekday, fewer on weekends): 30 % product-led
  (``product.signup`` → ``trial_started`` → maybe ``activated`` → self-serve subscription, or a lead for sales),
  70 % sales-led (``lead.created`` with a ``source`` channel). Some leads come from existing accounts.
* **Funnel.** ``lead`` → ``mql`` → ``sql`` → ``opportunity`` (+ ``opportunity.created`` with ``lead_id`` 95 % of the
  time) → ``customer`` on a win; ``disqualified`` at each step, a few disqualified leads are recycled back to
  ``lead``; outbound leads skip ``mql``. Sales cycle and win rate depend on the segment; wins carry the final
  amount (ACV) 75 % of the time, losses a reason 85 % of the time. Customers also get expansion opportunities
  (no lead).
* **Billing.** A win books a subscription (``mrr``, or ``amount`` + ``interval`` week/month/quarter/year with
  ``interval_count``; rarely both, ``mrr`` winning) or expands an existing one. Subscriptions renew at the end of
  each period (12 % with a price change) or are canceled (churn probability per segment); mid-term
  ``subscription.updated`` expand (two thirds) or contract them; customers add add-on subscriptions (rarely first seen
  as an update of an unknown subscription); a third of churned accounts come back (reactivation, sometimes
  restarting the same ``subscription_id``). 15 % of the accounts bill in a configured foreign currency.
* **Product.** ``product.usage`` (by far the most frequent type) from customers and trials, weighted by segment,
  with a business-hours / weekday profile; customers' new users sign up and activate.
* **Marketing.** One ``marketing.spend`` per spend channel per day (``paid_search`` and ``outbound`` split by
  segment, ``events`` sometimes in a foreign currency, the rest without segment), weekend budgets lower.

Opportunity amounts are annual contract values (a won deal books MRR = amount / 12). ``occurred_at`` is mostly
RFC 3339 with ``Z`` (some with a fraction), 10 % with an offset (+02:00, -05:00, +05:30) and a fraction, 8 % epoch
milliseconds. Optional fields are sometimes ``null`` (and a few segment-less accounts send ``"segment": ""``),
which SPEC §1 treats as absent; ``currency: "USD"`` is sometimes explicit.

Volume: without ``events``, usage is ≈ 3 events per day per weighted active account (≈ 120k events for the
default config). With ``events=N``, the usage volume adapts so that the N events span the whole time range.
"""

from __future__ import annotations

import heapq
import json
import math
import random
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from operator import itemgetter
from typing import Any

from revpulse.schemas.models import EVENT_TYPES
from revpulse.settings import Topics
from revpulse.topics import topic_of

__all__ = [
    "CHANNELS",
    "EVENT_TYPES",
    "REPORTING_CURRENCY",
    "TOPIC_BILLING",
    "TOPIC_CRM",
    "TOPIC_MARKETING",
    "TOPIC_PRODUCT",
    "SynthConfig",
    "bad_record_cases",
    "bad_records",
    "generate",
    "live",
    "occurred_at_ms",
    "seconds_until_due",
    "topic_for",
]

TOPIC_CRM = "crm.events"
TOPIC_BILLING = "billing.events"
TOPIC_PRODUCT = "product.events"
TOPIC_MARKETING = "marketing.events"
REPORTING_CURRENCY = "USD"

_TOPIC_OF: dict[str, str] = {t: str(topic_of(t, Topics())) for t in EVENT_TYPES}

#: Lead sources; the ones in ``_SPEND_SHARE`` also receive marketing spend.
CHANNELS: tuple[str, ...] = (
    "paid_search",
    "paid_social",
    "content",
    "events",
    "outbound",
    "partner",
    "organic",
    "referral",
)
_LEAD_SOURCE_WEIGHTS = (24, 15, 14, 6, 13, 6, 14, 8)
_SPEND_SHARE: dict[str, float] = {
    "paid_search": 0.30,
    "paid_social": 0.18,
    "content": 0.10,
    "events": 0.15,
    "outbound": 0.15,
    "partner": 0.12,
}
_SPEND_PER_ACCOUNT_DAY = 12.0  # USD of marketing spend per account of the base per weekday

_MS = 1
_SEC = 1000 * _MS
_MIN = 60 * _SEC
_HOUR = 60 * _MIN
_DAY = 24 * _HOUR
_MONTH_MS = 30.436875 * _DAY
_LATE_MIN = _MIN  # shortest delay of a late delivery
_LATE_MAX = 3 * _DAY - _HOUR  # longest delay: lateness always stays under 3 days of event time

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_DEFAULT_START = datetime(2024, 1, 1, tzinfo=UTC)

_SEGMENT_MIX: tuple[tuple[str | None, float], ...] = (
    ("smb", 0.58),
    ("mid_market", 0.27),
    ("enterprise", 0.09),
    ("startup", 0.03),
    (None, 0.03),
)
# median MRR in USD, log-normal sigma
_MRR_BY_SEGMENT: dict[str | None, tuple[float, float]] = {
    "smb": (250.0, 0.6),
    "mid_market": (1500.0, 0.5),
    "enterprise": (7000.0, 0.5),
    "startup": (120.0, 0.5),
    None: (300.0, 0.7),
}
_MONTHLY_CHURN: dict[str | None, float] = {
    "smb": 0.035,
    "mid_market": 0.018,
    "enterprise": 0.008,
    "startup": 0.06,
    None: 0.03,
}
_WIN_RATE: dict[str | None, float] = {
    "smb": 0.36,
    "mid_market": 0.28,
    "enterprise": 0.22,
    "startup": 0.40,
    None: 0.30,
}
_CYCLE_DAYS: dict[str | None, float] = {  # median sales cycle
    "smb": 12.0,
    "mid_market": 30.0,
    "enterprise": 60.0,
    "startup": 8.0,
    None: 15.0,
}
_USAGE_WEIGHT: dict[str | None, float] = {
    "smb": 1.0,
    "mid_market": 3.0,
    "enterprise": 8.0,
    "startup": 0.7,
    None: 1.0,
}
_USERS: dict[str | None, tuple[int, int]] = {
    "smb": (2, 8),
    "mid_market": (8, 40),
    "enterprise": (30, 150),
    "startup": (1, 4),
    None: (2, 10),
}
_NEXT_SEGMENT: dict[str, str] = {"smb": "mid_market", "mid_market": "enterprise", "startup": "smb"}
_USAGE_PER_WEIGHT_DAY = 3.0
_USAGE_SLICE = 20_000  # most usage events generated at once
_LOST_REASONS = ("price", "competitor", "no_decision", "timing", "missing_feature", "budget")
_FEATURES = ("dashboards", "reports", "api", "export", "integrations", "alerts", "workflows", "search")
_FEATURE_POOL: tuple[str, ...] = tuple(
    f for f, w in zip(_FEATURES, (6, 5, 4, 2, 2, 2, 2, 3), strict=True) for _ in range(w)
)
_INTERVALS: tuple[tuple[str, float, tuple[int, ...]], ...] = (  # interval, weight, interval_count choices
    ("month", 0.45, (1, 1, 1, 1, 1, 1, 1, 1, 2, 6)),
    ("year", 0.30, (1, 1, 1, 1, 1, 1, 1, 1, 1, 2)),
    ("quarter", 0.15, (1,)),
    ("week", 0.10, (1, 1, 2)),
)
_MONTHS_IN: dict[str, float] = {"week": 12 / 52, "month": 1.0, "quarter": 3.0, "year": 12.0}
_HOUR_WEIGHT: tuple[float, ...] = (
    0.30, 0.25, 0.20, 0.20, 0.25, 0.35, 0.50, 0.70, 0.90, 1.10, 1.20, 1.20,
    1.15, 1.20, 1.25, 1.20, 1.10, 1.00, 0.90, 0.80, 0.70, 0.60, 0.50, 0.40,
)  # fmt: skip
_WEEKEND_FACTOR = 0.45
_OFFSETS: tuple[tuple[int, str], ...] = (
    (2 * 3600, "+02:00"),
    (2 * 3600, "+02:00"),
    (2 * 3600, "+02:00"),
    (-5 * 3600, "-05:00"),
    (5 * 3600 + 1800, "+05:30"),
)
_NAME_A = ("Blue", "North", "Quantum", "Silver", "Rapid", "Green", "Iron", "Clear", "Bold", "Bright", "Nova")
_NAME_B = ("Harbor", "Labs", "Systems", "Analytics", "Logistics", "Foods", "Health", "Robotics", "Media", "Works")
_NAME_C = ("Inc", "GmbH", "Ltd", "LLC", "SA", "BV", "Group")


class _Rates(Mapping[str, float]):
    """An immutable, hashable copy of the FX rates (keeps :class:`SynthConfig` hashable)."""

    __slots__ = ("_items",)

    def __init__(self, rates: Mapping[str, float]) -> None:
        self._items: dict[str, float] = dict(rates)

    def __getitem__(self, key: str) -> float:
        return self._items[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __hash__(self) -> int:
        return hash(frozenset(self._items.items()))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Mapping) and self._items == dict(other)

    def __repr__(self) -> str:
        return repr(self._items)


@dataclass(frozen=True)
class SynthConfig:
    """What to simulate. ``accounts`` is the size of the account base at ``start`` (new accounts keep arriving).

    ``currencies`` are the foreign currencies (units of USD per unit) some accounts bill in and some spend is
    reported in; the worker must be configured with the same FX rates (``REVPULSE_FX_RATES``).
    """

    seed: int = 7
    accounts: int = 500
    start: datetime = _DEFAULT_START
    days: int = 60
    late_fraction: float = 0.02
    duplicate_fraction: float = 0.005
    currencies: Mapping[str, float] = field(default_factory=lambda: {"EUR": 1.08})

    def __post_init__(self) -> None:
        object.__setattr__(self, "currencies", _Rates(self.currencies))
        if self.accounts < 1:
            raise ValueError("accounts must be >= 1")
        if self.days < 1:
            raise ValueError("days must be >= 1")
        if self.start.tzinfo is None or self.start.utcoffset() is None:
            raise ValueError("start must be timezone-aware")
        for name in ("late_fraction", "duplicate_fraction"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise ValueError(f"{name} must be in [0, 1)")
        for code, rate in self.currencies.items():
            if not re.fullmatch(r"[A-Z]{3}", code) or code == REPORTING_CURRENCY:
                raise ValueError(f"bad currency code {code!r}")
            if not (isinstance(rate, int | float) and math.isfinite(rate) and rate > 0):
                raise ValueError(f"bad FX rate for {code}: {rate!r}")


def topic_for(event_type: str) -> str:
    """Default input topic of a known event type (SPEC §1)."""
    return _TOPIC_OF[event_type]


# --------------------------------------------------------------------------------------------------- time helpers


def _to_ms(dt: datetime) -> int:
    """Epoch milliseconds of an aware datetime, rounded up to the next whole millisecond."""
    return -(-(dt - _EPOCH) // timedelta(microseconds=1) // 1000)


def occurred_at_ms(value: str | int) -> int:
    """Epoch milliseconds of an ``occurred_at`` (RFC 3339 string with offset, or integer epoch ms)."""
    if isinstance(value, bool):
        raise ValueError("occurred_at must not be a boolean")
    if isinstance(value, int):
        return value
    dt = datetime.fromisoformat(value)
    if dt.tzinfo is None:
        raise ValueError("occurred_at needs an offset")
    return (dt - _EPOCH) // timedelta(milliseconds=1)


def seconds_until_due(event: Mapping[str, Any], now: datetime) -> float:
    """How long a :func:`live` caller should wait before sending ``event`` (0 when it is already due)."""
    return max(0.0, (occurred_at_ms(event["occurred_at"]) - _to_ms(now)) / 1000)


# ------------------------------------------------------------------------------------------------ the simulation

_Item = tuple[int, str, dict[str, Any]]  # (event-time ms, topic, event)


class _Account:
    __slots__ = (
        "activated",
        "chains",
        "channel",
        "currency",
        "id",
        "last_sub",
        "name",
        "num",
        "segment",
        "subs",
        "trial",
        "users",
    )

    def __init__(self, num: int, segment: str | None, currency: str, channel: str, name: str) -> None:
        self.num = num
        self.id = f"acc-{num:05d}"
        self.segment = segment
        self.currency = currency
        self.channel = channel
        self.name = name
        self.users: list[str] = []
        self.subs: list[_Sub] = []  # active subscriptions
        self.last_sub: _Sub | None = None
        self.trial = False
        self.activated = False
        self.chains = False


class _Sub:
    __slots__ = ("acct", "count", "gen", "id", "interval", "mrr")

    def __init__(self, sid: str, acct: _Account) -> None:
        self.id = sid
        self.acct = acct
        self.mrr = 0.0  # USD
        self.interval: str | None = None  # None: priced with `mrr`, billed monthly
        self.count = 1
        self.gen = 0  # bumped on cancel / restart, invalidates scheduled renewals and updates


class _Lead:
    __slots__ = ("acct", "id", "outbound", "source")

    def __init__(self, lid: str, acct: _Account, source: str | None) -> None:
        self.id = lid
        self.acct = acct
        self.source = source
        self.outbound = source == "outbound"


class _Opp:
    __slots__ = ("acct", "amount", "created", "id", "lead_id", "won_amount")

    def __init__(self, oid: str, acct: _Account, amount: float, lead_id: str | None) -> None:
        self.id = oid
        self.acct = acct
        self.amount = amount  # USD, ACV
        self.lead_id = lead_id
        self.created = False
        self.won_amount = amount


class _Sim:
    """Generates the business's events in event-time order (before any late delivery or duplicate)."""

    def __init__(
        self,
        config: SynthConfig,
        *,
        start_ms: int,
        days: int | None,
        id_prefix: str,
        target: int | None = None,
        realtime_day: int | None = None,
        rate: float = 0.0,
    ) -> None:
        self.cfg = config
        self.rng = random.Random(config.seed)
        self.rand = self.rng.random
        self.start_ms = start_ms
        self.days = days
        self.end_ms = None if days is None else start_ms + days * _DAY
        self.id_prefix = id_prefix
        self.target = target
        self.realtime_day = realtime_day
        self.rate = rate
        self.fx: dict[str, float] = {REPORTING_CURRENCY: 1.0, **dict(config.currencies)}
        self.foreign = sorted(config.currencies)
        self.base_count = 0  # base events handed out
        self.dup_count = 0  # duplicates scheduled by the delivery stage (it updates this)
        self._seq = 0
        self._aseq = 0
        self._agenda: list[tuple[int, int, Callable[[int, Any], None], Any]] = []
        self._out: list[_Item] = []
        self._floor = start_ms
        self._dates: dict[int, str] = {}
        self.accounts: list[_Account] = []
        self.active: dict[int, _Account] = {}  # accounts producing usage (customers and trials)
        self._n = {"lead": 0, "opp": 0, "sub": 0}
        self.arrival_rate = config.accounts * 0.025
        self._open_book()

    # ---- ids, time, emission

    def _next(self, kind: str) -> int:
        self._n[kind] += 1
        return self._n[kind]

    def _date(self, day: int) -> str:
        s = self._dates.get(day)
        if s is None:
            s = (_EPOCH + timedelta(days=day)).strftime("%Y-%m-%d")
            self._dates[day] = s
        return s

    def _stamp(self, ms: int) -> tuple[int, str | int]:
        """Pick an ``occurred_at`` representation; returns the (possibly truncated) instant and the value."""
        r = self.rand()
        if r < 0.74:
            t = ms - ms % 1000
            if t >= self._floor:
                d, sod = divmod(t // 1000, 86400)
                h, rem = divmod(sod, 3600)
                m, s = divmod(rem, 60)
                return t, f"{self._date(d)}T{h:02d}:{m:02d}:{s:02d}Z"
            r = 0.8
        if r < 0.82:
            d, sod = divmod(ms // 1000, 86400)
            h, rem = divmod(sod, 3600)
            m, s = divmod(rem, 60)
            return ms, f"{self._date(d)}T{h:02d}:{m:02d}:{s:02d}.{ms % 1000:03d}Z"
        if r < 0.92:
            off, suffix = _OFFSETS[int(self.rand() * len(_OFFSETS))]
            d, sod = divmod(ms // 1000 + off, 86400)
            h, rem = divmod(sod, 3600)
            m, s = divmod(rem, 60)
            return ms, f"{self._date(d)}T{h:02d}:{m:02d}:{s:02d}.{ms % 1000:03d}{suffix}"
        return ms, ms

    def _emit(
        self,
        ms: int,
        etype: str,
        acct: _Account | None,
        fields: dict[str, Any] | None = None,
        seg_p: float = 0.0,
    ) -> None:
        ms, ts = self._stamp(ms)
        self._seq += 1
        ev: dict[str, Any] = {"event_id": f"{self.id_prefix}{self._seq:08x}", "type": etype, "occurred_at": ts}
        if acct is not None:
            ev["account_id"] = acct.id
            if seg_p and acct.segment is not None and self.rand() < seg_p:
                ev["segment"] = acct.segment
        if fields:
            ev.update(fields)
        self._out.append((ms, _TOPIC_OF[etype], ev))

    def _at(self, ms: int, fn: Callable[[int, Any], None], arg: Any = None) -> None:
        self._aseq += 1
        heapq.heappush(self._agenda, (ms, self._aseq, fn, arg))

    # ---- random helpers

    def _uniform_ms(self, lo: float, hi: float) -> int:
        return int(lo + (hi - lo) * self.rand())

    def _loguniform_ms(self, lo: float, hi: float) -> int:
        return int(lo * (hi / lo) ** self.rand())

    def _poisson(self, lam: float) -> int:
        if lam <= 0:
            return 0
        if lam > 40:
            return max(0, round(self.rng.gauss(lam, math.sqrt(lam))))
        limit, k, p = math.exp(-lam), 0, self.rand()
        while p > limit:
            k += 1
            p *= self.rand()
        return k

    def _daytime(self, day_start: int) -> int:
        """A random instant of the day slice, following the business-hours profile."""
        while True:
            t = day_start + int(self.rand() * _DAY)
            if self.rand() * 1.25 < _HOUR_WEIGHT[(t // _HOUR) % 24]:
                return t

    def _money(self, acct: _Account | None, usd: float, *, whole: bool = False) -> tuple[float | int, str | None]:
        """Amount in the account's billing currency, and the currency code to put on the event (if any)."""
        code = acct.currency if acct is not None else REPORTING_CURRENCY
        value = usd / self.fx[code]
        amount: float | int = round(value) if whole else round(value, 2)
        if code != REPORTING_CURRENCY:
            return amount, code
        return amount, (REPORTING_CURRENCY if self.rand() < 0.08 else None)

    def _mrr_for(self, segment: str | None) -> float:
        median, sigma = _MRR_BY_SEGMENT[segment]
        return median * math.exp(self.rng.gauss(0.0, sigma))

    # ---- accounts

    def _new_account(self) -> _Account:
        r, acc = self.rand(), 0.0
        segment: str | None = None
        for candidate, w in _SEGMENT_MIX:
            acc += w
            if r < acc:
                segment = candidate
                break
        currency = REPORTING_CURRENCY
        if self.foreign and self.rand() < 0.15:
            currency = self.foreign[int(self.rand() * len(self.foreign))]
        channel = self.rng.choices(CHANNELS, weights=_LEAD_SOURCE_WEIGHTS)[0]
        rnd = self.rng
        name = f"{rnd.choice(_NAME_A)} {rnd.choice(_NAME_B)} {rnd.choice(_NAME_C)}"
        acct = _Account(len(self.accounts) + 1, segment, currency, channel, name)
        self.accounts.append(acct)
        return acct

    def _add_users(self, acct: _Account, n: int) -> list[str]:
        start = len(acct.users)
        new = [f"u-{acct.num:05d}-{start + i + 1}" for i in range(n)]
        acct.users.extend(new)
        return new

    def _fill_users(self, acct: _Account) -> None:
        lo, hi = _USERS[acct.segment]
        want = lo + int(self.rand() * (hi - lo + 1))
        if len(acct.users) < want:
            self._add_users(acct, want - len(acct.users))

    def _refresh_active(self, acct: _Account) -> None:
        if acct.subs or acct.trial:
            self.active[acct.num] = acct
        else:
            self.active.pop(acct.num, None)

    def _account_updated(self, ms: int, acct: _Account, *, name: bool, segment: bool) -> None:
        fields: dict[str, Any] = {}
        if segment:
            if acct.segment is not None:
                fields["segment"] = acct.segment
            elif self.rand() < 0.3:
                fields["segment"] = "" if self.rand() < 0.5 else None  # empty / null = absent
        if name or not fields:
            fields["name"] = acct.name
        self._emit(ms, "account.updated", acct, fields)

    # ---- opening book

    def _open_book(self) -> None:
        s = self.start_ms
        for _ in range(self.cfg.accounts):
            acct = self._new_account()
            r = self.rand()
            if r < 0.60:  # paying customer
                t = s + self._uniform_ms(0, 5 * _HOUR)
                if self.rand() < 0.8:
                    self._at(t, self._on_account_intro, acct)
                t += self._uniform_ms(_MIN, 50 * _MIN)
                self._fill_users(acct)
                self._at(t, self._on_book_sub, (acct, False))
                if self.rand() < 0.12:
                    self._at(t + self._uniform_ms(_MIN, _HOUR), self._on_book_sub, (acct, True))
            elif r < 0.63:  # mid-trial (signed up before start)
                self._add_users(acct, 1)
                self._at(s + self._uniform_ms(0, _DAY), self._on_trial, acct)
            elif r < 0.78:  # backlog of prospects entering the funnel
                self._at(s + self._uniform_ms(0, 14 * _DAY), self._on_arrival, acct)
            elif r < 0.86:  # an opportunity opened before start
                lead_id = f"lead-pre-{acct.num:05d}" if self.rand() < 0.5 else None
                opp = _Opp(f"opp-pre-{acct.num:05d}", acct, self._mrr_for(acct.segment) * 12, lead_id)
                won = self.rand() < 0.4
                self._at(s + self._loguniform_ms(_HOUR, 30 * _DAY), self._on_opp_close, (opp, won))
            elif self.rand() < 0.5:  # dormant
                self._at(s + self._uniform_ms(0, _DAY), self._on_account_intro, acct)

    def _on_account_intro(self, ms: int, acct: _Account) -> None:
        self._account_updated(ms, acct, name=True, segment=True)

    def _on_book_sub(self, ms: int, arg: tuple[_Account, bool]) -> None:
        acct, addon = arg
        mrr = self._mrr_for(acct.segment) * (self.rng.uniform(0.15, 0.4) if addon else 1.0)
        months = self._start_sub(ms, acct, mrr)
        sub = acct.subs[-1]
        # the book's subscriptions are somewhere in their current period
        sub.gen += 1
        self._schedule_sub(ms, sub, first_renewal=ms + self._uniform_ms(_HOUR, months * _MONTH_MS))

    # ---- daily plan

    def _plan_day(self, day: int, ds: int) -> None:
        weekday = ((ds + 12 * _HOUR) // _DAY + 3) % 7  # 1970-01-01 was a Thursday
        weekend = weekday >= 5
        factor = 0.4 if weekend else 1.0
        for _ in range(self._poisson(self.arrival_rate * factor)):
            self._at(self._daytime(ds), self._on_arrival, None)
        if self.accounts:
            for _ in range(self._poisson(self.arrival_rate * 0.12 * factor)):
                acct = self.accounts[int(self.rand() * len(self.accounts))]
                self._at(self._daytime(ds), self._on_new_lead, (acct, None))
            n = len(self.accounts)
            for _ in range(self._poisson(n / 600)):
                acct = self.accounts[int(self.rand() * n)]
                if acct.segment in _NEXT_SEGMENT:
                    self._at(self._daytime(ds), self._on_segment_change, acct)
            for _ in range(self._poisson(n / 1500)):
                self._at(self._daytime(ds), self._on_rename, self.accounts[int(self.rand() * n)])
        customers = [a for a in self.active.values() if a.subs]
        if customers:
            for _ in range(self._poisson(len(customers) / 25 * factor)):
                acct = customers[int(self.rand() * len(customers))]
                self._at(self._daytime(ds), self._on_user_signup, acct)
        # marketing spend, reported late in the day
        budget = self.cfg.accounts * _SPEND_PER_ACCOUNT_DAY * (0.6 if weekend else 1.0)
        for channel, share in _SPEND_SHARE.items():
            usd = budget * share * self.rng.uniform(0.75, 1.25)
            if self.rand() < 0.01:
                usd = 0.0  # campaign paused
            t = ds + self._uniform_ms(20 * _HOUR, 24 * _HOUR - _MIN)
            parts: list[tuple[str | None, float]]
            if channel == "paid_search" and self.rand() < 0.6:
                parts = [("smb", 0.55), ("mid_market", 0.3), (None, 0.15)]
            elif channel == "outbound":
                parts = [("mid_market", 0.6), ("enterprise", 0.4)]
            elif channel == "events" and self.rand() < 0.6:
                parts = [("enterprise", 1.0)]
            elif channel == "paid_social" and self.rand() < 0.2:
                parts = [("smb", 1.0)]
            else:
                parts = [(None, 1.0)]
            for i, (segment, frac) in enumerate(parts):
                self._at(t + i * self._uniform_ms(_SEC, _MIN), self._on_spend, (channel, usd * frac, segment))

    def _on_spend(self, ms: int, arg: tuple[str, float, str | None]) -> None:
        channel, usd, segment = arg
        fields: dict[str, Any] = {"channel": channel}
        code = REPORTING_CURRENCY
        if channel == "events" and self.foreign and self.rand() < 0.3:
            code = self.foreign[int(self.rand() * len(self.foreign))]
        fields["amount"] = round(usd / self.fx[code], 2)
        if code != REPORTING_CURRENCY:
            fields["currency"] = code
        if segment is not None:
            fields["segment"] = segment
        self._emit(ms, "marketing.spend", None, fields)

    def _on_rename(self, ms: int, acct: _Account) -> None:
        acct.name = f"{acct.name.split(' ')[0]} {self.rng.choice(_NAME_B)} {self.rng.choice(_NAME_C)}"
        self._account_updated(ms, acct, name=True, segment=self.rand() < 0.3)

    def _on_segment_change(self, ms: int, acct: _Account) -> None:
        if acct.segment not in _NEXT_SEGMENT:
            return
        acct.segment = _NEXT_SEGMENT[acct.segment]
        self._account_updated(ms, acct, name=self.rand() < 0.3, segment=True)

    # ---- acquisition and funnel

    def _on_arrival(self, ms: int, acct: _Account | None) -> None:
        if acct is None:
            acct = self._new_account()
        if self.rand() < (0.7 if acct.segment is not None else 0.4):
            self._account_updated(ms, acct, name=True, segment=True)
        if self.rand() < 0.3:
            self._at(ms + self._uniform_ms(_MIN, 30 * _MIN), self._on_signup, acct)
        else:
            self._at(ms + self._uniform_ms(_MIN, 20 * _MIN), self._on_new_lead, (acct, acct.channel))

    def _on_new_lead(self, ms: int, arg: tuple[_Account, str | None]) -> None:
        acct, source = arg
        if source is None:
            source = self.rng.choices(CHANNELS, weights=_LEAD_SOURCE_WEIGHTS)[0]
        if self.rand() < 0.04:
            source = None
        lead = _Lead(f"lead-{self._next('lead'):06d}", acct, source)
        fields: dict[str, Any] = {"lead_id": lead.id}
        if source is not None:
            fields["source"] = source
        elif self.rand() < 0.5:
            fields["source"] = None
        self._emit(ms, "lead.created", acct, fields, seg_p=0.4)
        self._advance_lead(ms, lead, "lead")

    def _stage_at(self, ms: int, lead: _Lead, stage: str, lo_days: float, hi_days: float) -> None:
        self._at(ms + self._loguniform_ms(lo_days * _DAY, hi_days * _DAY), self._on_stage, (lead, stage))

    def _advance_lead(self, ms: int, lead: _Lead, stage: str) -> None:
        r = self.rand()
        if stage == "lead":
            if lead.outbound:
                if r < 0.35:
                    self._stage_at(ms, lead, "sql", 1, 6)
                elif r < 0.6:
                    self._stage_at(ms, lead, "disqualified", 2, 10)
            elif r < 0.55:
                self._stage_at(ms, lead, "mql", 1 / 24, 4)
            elif r < 0.75:
                self._stage_at(ms, lead, "disqualified", 1, 7)
        elif stage == "mql":
            if r < 0.45:
                self._stage_at(ms, lead, "sql", 1, 7)
            elif r < 0.7:
                self._stage_at(ms, lead, "disqualified", 3, 14)
        elif stage == "sql":
            if r < 0.75:
                self._stage_at(ms, lead, "opportunity", 1, 5)
                if self.rand() < 0.2 and not lead.acct.trial and not lead.acct.subs:
                    self._at(ms + self._loguniform_ms(_HOUR, 2 * _DAY), self._on_trial, lead.acct)
            elif r < 0.87:
                self._stage_at(ms, lead, "disqualified", 2, 10)
        elif stage == "disqualified" and r < 0.05:
            self._stage_at(ms, lead, "lead", 10, 30)  # recycled

    def _on_stage(self, ms: int, arg: tuple[_Lead, str]) -> None:
        lead, stage = arg
        self._emit(ms, "lead.stage_changed", lead.acct, {"lead_id": lead.id, "stage": stage})
        if stage == "opportunity":
            acct = lead.acct
            opp = _Opp(
                f"opp-{self._next('opp'):05d}",
                acct,
                self._mrr_for(acct.segment) * 12 * self.rng.uniform(0.9, 1.1),
                lead.id if self.rand() < 0.95 else None,
            )
            self._at(ms + self._uniform_ms(5 * _SEC, 30 * _MIN), self._on_opp_created, (opp, lead))
        elif stage != "customer":
            self._advance_lead(ms, lead, stage)

    def _on_opp_created(self, ms: int, arg: tuple[_Opp, _Lead | None]) -> None:
        opp, _lead = arg
        acct = opp.acct
        amount, code = self._money(acct, opp.amount, whole=self.rand() < 0.4)
        fields: dict[str, Any] = {"opportunity_id": opp.id, "amount": amount}
        if opp.lead_id is not None:
            fields["lead_id"] = opp.lead_id
        if code is not None:
            fields["currency"] = code
        self._emit(ms, "opportunity.created", acct, fields, seg_p=0.4)
        opp.created = True
        cycle = _CYCLE_DAYS[acct.segment] * math.exp(self.rng.gauss(0.0, 0.5))
        won = self.rand() < _WIN_RATE[acct.segment]
        if not won:
            cycle *= self.rng.uniform(0.5, 1.2)
        self._at(ms + max(_HOUR, int(cycle * _DAY)), self._on_opp_close, (opp, won))

    def _on_opp_close(self, ms: int, arg: tuple[_Opp, bool]) -> None:
        opp, won = arg
        acct = opp.acct
        if not won:
            fields: dict[str, Any] = {"opportunity_id": opp.id}
            if self.rand() < 0.85:
                fields["reason"] = self.rng.choice(_LOST_REASONS)
            self._emit(ms, "opportunity.lost", acct, fields)
            return
        fields = {"opportunity_id": opp.id}
        r = self.rand()
        if r < 0.75 or (not opp.created and r < 0.95):
            opp.won_amount = opp.amount * self.rng.uniform(0.85, 1.05)
            amount, code = self._money(acct, opp.won_amount, whole=self.rand() < 0.4)
            fields["amount"] = amount
            if code is not None:
                fields["currency"] = code
        elif r < 0.8:
            fields["amount"] = None
        self._emit(ms, "opportunity.won", acct, fields)
        if opp.lead_id is not None and not opp.lead_id.startswith("lead-pre-"):
            self._at(ms + self._uniform_ms(_MIN, 90 * _MIN), self._on_lead_customer, (acct, opp.lead_id))
        self._at(ms + self._loguniform_ms(10 * _MIN, 2 * _DAY), self._on_deal_booked, opp)

    def _on_lead_customer(self, ms: int, arg: tuple[_Account, str]) -> None:
        acct, lead_id = arg
        self._emit(ms, "lead.stage_changed", acct, {"lead_id": lead_id, "stage": "customer"})

    def _on_deal_booked(self, ms: int, opp: _Opp) -> None:
        acct = opp.acct
        mrr = opp.won_amount / 12
        if acct.subs and self.rand() < 0.6:
            sub = acct.subs[0]
            self._update_sub(ms, sub, sub.mrr + mrr)
        else:
            self._fill_users(acct)
            self._start_sub(ms, acct, mrr)

    # ---- product-led

    def _on_signup(self, ms: int, acct: _Account) -> None:
        user = self._add_users(acct, 1)[0]
        self._emit(ms, "product.signup", acct, {"user_id": user})
        if self.rand() < 0.85:
            self._at(ms + self._loguniform_ms(_MIN, 12 * _HOUR), self._on_trial, acct)
        elif self.rand() < 0.3:
            self._at(ms + self._loguniform_ms(_HOUR, 5 * _DAY), self._on_new_lead, (acct, acct.channel))

    def _on_trial(self, ms: int, acct: _Account) -> None:
        if acct.trial or acct.subs:
            return
        if not acct.users:
            self._add_users(acct, 1)
        acct.trial = True
        self._refresh_active(acct)
        self._emit(ms, "product.trial_started", acct, {"user_id": acct.users[0]})
        if self.rand() < 0.45:
            self._at(ms + self._loguniform_ms(_HOUR, 6 * _DAY), self._on_activated, (acct, acct.users[0]))
        self._at(ms + 14 * _DAY + self._uniform_ms(0, _HOUR), self._on_trial_end, acct)

    def _on_activated(self, ms: int, arg: tuple[_Account, str]) -> None:
        acct, user = arg
        fields: dict[str, Any] = {"user_id": user}
        if self.rand() < 0.5:
            fields["feature"] = self.rng.choice(_FEATURES)
        self._emit(ms, "product.activated", acct, fields)
        if acct.trial:
            acct.activated = True

    def _on_trial_end(self, ms: int, acct: _Account) -> None:
        if not acct.trial:
            return
        acct.trial = False
        self._refresh_active(acct)
        if acct.subs:
            return
        self_serve = acct.segment in ("smb", "startup", None) or self.rand() < 0.3
        if acct.activated and self_serve and self.rand() < 0.45:
            self._fill_users(acct)
            self._start_sub(ms, acct, self._mrr_for(acct.segment) * 0.7)
        elif self.rand() < 0.35:
            self._at(ms + self._loguniform_ms(_HOUR, 3 * _DAY), self._on_new_lead, (acct, acct.channel))

    def _on_user_signup(self, ms: int, acct: _Account) -> None:
        user = self._add_users(acct, 1)[0]
        self._emit(ms, "product.signup", acct, {"user_id": user})
        if self.rand() < 0.6:
            self._at(ms + self._loguniform_ms(30 * _MIN, 3 * _DAY), self._on_activated, (acct, user))

    # ---- billing

    def _price(self, sub: _Sub, mrr_usd: float) -> dict[str, Any]:
        acct = sub.acct
        code = acct.currency
        local = mrr_usd / self.fx[code]
        fields: dict[str, Any] = {}
        if sub.interval is None:
            fields["mrr"] = round(local, 2)
            if self.rand() < 0.03:  # list price alongside; `mrr` wins
                fields["amount"] = round(local * self.rng.uniform(1.0, 1.25), 2)
                fields["interval"] = "month"
        else:
            periods = _MONTHS_IN[sub.interval] * sub.count
            amount = local * periods
            fields["amount"] = round(amount) if amount > 5000 and self.rand() < 0.5 else round(amount, 2)
            fields["interval"] = sub.interval
            if sub.count != 1 or self.rand() < 0.3:
                fields["interval_count"] = sub.count
        if code != REPORTING_CURRENCY:
            fields["currency"] = code
        elif self.rand() < 0.08:
            fields["currency"] = REPORTING_CURRENCY
        sub.mrr = mrr_usd
        return fields

    def _pick_form(self, sub: _Sub) -> None:
        if self.rand() < 0.45:
            sub.interval, sub.count = None, 1
            return
        r, acc = self.rand(), 0.0
        for interval, w, counts in _INTERVALS:
            acc += w
            if r < acc or interval == "week":
                sub.interval = interval
                sub.count = counts[int(self.rand() * len(counts))]
                return

    def _period_ms(self, sub: _Sub) -> int:
        if sub.interval == "week":
            return sub.count * 7 * _DAY
        months = 1.0 if sub.interval is None else _MONTHS_IN[sub.interval] * sub.count
        return int(months * _MONTH_MS)

    def _start_sub(self, ms: int, acct: _Account, mrr: float, *, sub: _Sub | None = None) -> float:
        """Start a subscription (a new one unless ``sub`` is given); returns its period in months."""
        if sub is None:
            sub = _Sub(f"sub-{self._next('sub'):05d}", acct)
            self._pick_form(sub)
        sub.gen += 1
        fields: dict[str, Any] = {"subscription_id": sub.id, **self._price(sub, max(mrr, 5.0))}
        # an add-on first seen as an update of an unknown subscription (which creates it)
        etype = "subscription.updated" if acct.subs and self.rand() < 0.04 else "subscription.started"
        self._emit(ms, etype, acct, fields, seg_p=0.3)
        acct.subs.append(sub)
        acct.last_sub = sub
        self._refresh_active(acct)
        self._schedule_sub(ms, sub)
        if not acct.chains:
            acct.chains = True
            self._at(ms + int(self.rng.expovariate(1 / 400) * _DAY) + _HOUR, self._on_addon_tick, acct)
            self._at(ms + int(self.rng.expovariate(1 / 400) * _DAY) + _HOUR, self._on_expansion_tick, acct)
        return self._period_ms(sub) / _MONTH_MS

    def _schedule_sub(self, ms: int, sub: _Sub, *, first_renewal: int | None = None) -> None:
        renewal = first_renewal if first_renewal is not None else ms + self._period_ms(sub)
        self._at(renewal, self._on_renewal, (sub, sub.gen))
        self._at(ms + _HOUR + int(self.rng.expovariate(1 / 150) * _DAY), self._on_sub_update, (sub, sub.gen))

    def _update_sub(self, ms: int, sub: _Sub, mrr: float) -> None:
        if self.rand() < 0.1:
            self._pick_form(sub)
        fields: dict[str, Any] = {"subscription_id": sub.id, **self._price(sub, max(mrr, 5.0))}
        self._emit(ms, "subscription.updated", sub.acct, fields)

    def _cancel_sub(self, ms: int, sub: _Sub) -> None:
        acct = sub.acct
        sub.gen += 1
        acct.subs.remove(sub)
        self._emit(ms, "subscription.canceled", acct, {"subscription_id": sub.id})
        if not acct.subs:
            self._refresh_active(acct)
            if self.rand() < 0.35:  # comes back later
                self._at(ms + 2 * _DAY + int(self.rng.expovariate(1 / 15) * _DAY), self._on_reactivate, acct)

    def _on_renewal(self, ms: int, arg: tuple[_Sub, int]) -> None:
        sub, gen = arg
        if sub.gen != gen:
            return
        months = self._period_ms(sub) / _MONTH_MS
        p_cancel = 1 - (1 - _MONTHLY_CHURN[sub.acct.segment]) ** months
        if sub.interval == "year":
            p_cancel *= 1.3
        if self.rand() < p_cancel:
            self._cancel_sub(ms, sub)
            return
        fields: dict[str, Any] = {"subscription_id": sub.id}
        r = self.rand()
        if r < 0.12:
            factor = self.rng.uniform(1.03, 1.15) if self.rand() < 0.85 else self.rng.uniform(0.85, 0.97)
            fields.update(self._price(sub, sub.mrr * factor))
        elif r < 0.16:
            fields.update(self._price(sub, sub.mrr))  # price restated, unchanged
        self._emit(ms, "subscription.renewed", sub.acct, fields)
        self._at(ms + self._period_ms(sub), self._on_renewal, (sub, gen))

    def _on_sub_update(self, ms: int, arg: tuple[_Sub, int]) -> None:
        sub, gen = arg
        if sub.gen != gen:
            return
        r = self.rand()
        if r < 0.05:
            self._cancel_sub(ms, sub)  # canceled mid-term
            return
        factor = self.rng.uniform(1.05, 1.4) if r < 0.67 else self.rng.uniform(0.7, 0.95)
        self._update_sub(ms, sub, sub.mrr * factor)
        self._at(ms + _HOUR + int(self.rng.expovariate(1 / 150) * _DAY), self._on_sub_update, (sub, gen))

    def _on_reactivate(self, ms: int, acct: _Account) -> None:
        if acct.subs:
            return
        last = acct.last_sub
        mrr = (last.mrr if last is not None else self._mrr_for(acct.segment)) * self.rng.uniform(0.7, 1.2)
        if last is not None and self.rand() < 0.3:
            self._start_sub(ms, acct, mrr, sub=last)  # same subscription restarted
        else:
            self._start_sub(ms, acct, mrr)

    def _on_addon_tick(self, ms: int, acct: _Account) -> None:
        if acct.subs:
            self._start_sub(ms, acct, acct.subs[0].mrr * self.rng.uniform(0.15, 0.4))
        self._at(ms + _HOUR + int(self.rng.expovariate(1 / 400) * _DAY), self._on_addon_tick, acct)

    def _on_expansion_tick(self, ms: int, acct: _Account) -> None:
        if acct.subs:
            amount = acct.subs[0].mrr * 12 * self.rng.uniform(0.2, 0.6)
            opp = _Opp(f"opp-{self._next('opp'):05d}", acct, amount, None)
            self._on_opp_created(ms, (opp, None))
        self._at(ms + _HOUR + int(self.rng.expovariate(1 / 400) * _DAY), self._on_expansion_tick, acct)

    # ---- usage

    def _usage(self, hs: int, he: int, n: int, pool: list[_Account], cum: list[float]) -> list[_Item]:
        rand = self.rand
        stamp = self._stamp
        prefix = self.id_prefix
        seq = self._seq
        span = he - hs
        feats, nf = _FEATURE_POOL, len(_FEATURE_POOL)
        out: list[_Item] = []
        append = out.append
        self._floor = hs
        for acct in self.rng.choices(pool, cum_weights=cum, k=n):
            ms, ts = stamp(hs + int(rand() * span))
            seq += 1
            ev: dict[str, Any] = {
                "event_id": f"{prefix}{seq:08x}",
                "type": "product.usage",
                "occurred_at": ts,
                "account_id": acct.id,
            }
            r = rand()
            users = acct.users
            if r < 0.95 and users:
                ev["user_id"] = users[int(rand() * len(users))]
            ev["feature"] = feats[int(rand() * nf)]
            if r < 0.9:
                ev["quantity"] = 1 + int(-4.0 * math.log(1.0 - rand()))
            append((ms, TOPIC_PRODUCT, ev))
        self._seq = seq
        out.sort(key=itemgetter(0))
        return out

    def _usage_pool(self) -> tuple[list[_Account], list[float]]:
        pool = list(self.active.values()) or self.accounts
        cum: list[float] = []
        total = 0.0
        for acct in pool:
            total += _USAGE_WEIGHT[acct.segment] * (1.0 if acct.subs else 0.4)
            cum.append(total)
        return pool, cum

    def _day_usage(self, day: int, ds: int, nonusage: int, total_weight: float) -> int:
        weekend = ((ds + 12 * _HOUR) // _DAY + 3) % 7 >= 5
        if self.realtime_day is not None and day >= self.realtime_day:
            return max(0, round(self.rate * _DAY / 1000) - nonusage)
        if self.target is None or self.days is None:
            return round(total_weight * _USAGE_PER_WEIGHT_DAY * (_WEEKEND_FACTOR if weekend else 1.0))
        produced = self.base_count + self.dup_count
        remaining = (self.target - produced) / (1 + self.cfg.duplicate_fraction)
        weights = [
            _WEEKEND_FACTOR if ((self.start_ms + d * _DAY + 12 * _HOUR) // _DAY + 3) % 7 >= 5 else 1.0
            for d in range(day, self.days)
        ]
        return max(0, round(remaining * weights[0] / sum(weights)) - nonusage)

    # ---- main loop

    def events(self) -> Iterator[_Item]:
        day = 0
        while self.days is None or day < self.days:
            ds = self.start_ms + day * _DAY
            de = ds + _DAY
            self._floor = ds
            self._plan_day(day, ds)
            self._out = out = []
            agenda = self._agenda
            while agenda and agenda[0][0] < de:
                ms, _, fn, arg = heapq.heappop(agenda)
                fn(ms, arg)
            out.sort(key=itemgetter(0))
            pool, cum = self._usage_pool()
            n_usage = self._day_usage(day, ds, len(out), cum[-1] if cum else 0.0)
            realtime = self.realtime_day is not None and day >= self.realtime_day
            weights = [1.0 if realtime else _HOUR_WEIGHT[((ds // _HOUR) + h) % 24] for h in range(24)]
            total_w = sum(weights)
            last_day = self.days is not None and day == self.days - 1
            j, acc_w, done = 0, 0.0, 0
            for h in range(24):
                hs = ds + h * _HOUR
                acc_w += weights[h]
                n = round(n_usage * acc_w / total_w) - done
                done += n
                if last_day and h == 23 and self.target is not None:
                    n = max(n, self.target - self.base_count - self.dup_count - (len(out) - j))
                if not cum:
                    n = 0
                parts = max(1, -(-n // _USAGE_SLICE))  # keeps the buffered usage small at any volume
                for p in range(parts):
                    ss = hs + p * _HOUR // parts
                    se = hs + (p + 1) * _HOUR // parts
                    k = j
                    while k < len(out) and out[k][0] < se:
                        k += 1
                    chunk = out[j:k]
                    j = k
                    m = n * (p + 1) // parts - n * p // parts
                    if m > 0:
                        chunk.extend(self._usage(ss, se, m, pool, cum))
                        chunk.sort(key=itemgetter(0))
                    self.base_count += len(chunk)
                    yield from chunk
            self._out = []
            day += 1


# -------------------------------------------------------------------------------------------- delivery (reorder)


def _deliver(sim: _Sim, config: SynthConfig, limit: int | None) -> Iterator[tuple[str, dict[str, Any]]]:
    """Delivery order: the time-ordered stream, with some events held back (late) and some re-sent (duplicates).

    A late event is held for 1 minute to 3 days - 1 hour (log-uniform) of event time and released just before
    the first event whose time reaches its release time, once an event later than it has been delivered: it is
    always out of order, and its lateness (the largest ``occurred_at`` delivered before it minus its own) stays
    under 3 days. A duplicate is a copy of a delivered event re-sent at a random
    point before its own ``occurred_at`` + 3 days - 1 hour.
    """
    if limit is not None and limit <= 0:
        return
    rng = random.Random(f"revpulse-synth-delivery-{config.seed}")
    rand = rng.random
    late_p, dup_p = config.late_fraction, config.duplicate_fraction
    ratio = _LATE_MAX / _LATE_MIN
    held: list[tuple[int, int, str, dict[str, Any], bool, int]] = []  # release, seq, topic, event, dup, occurred
    seq = 0
    count = 0
    clock = sim.start_ms
    stop = limit if limit is not None else -1

    def resend(topic: str, ev: dict[str, Any], occurred: int) -> None:
        nonlocal seq
        seq += 1
        release = clock + int(rand() * max(0, occurred + _LATE_MAX - clock))
        heapq.heappush(held, (release, seq, topic, dict(ev), True, occurred))
        sim.dup_count += 1

    for ms, topic, ev in sim.events():
        while held and held[0][0] <= ms and held[0][5] < clock:  # after a later event was delivered
            _, _, h_topic, h_ev, is_dup, occurred = heapq.heappop(held)
            yield h_topic, h_ev
            count += 1
            if count == stop:
                return
            if not is_dup and dup_p and rand() < dup_p:
                resend(h_topic, h_ev, occurred)
        if late_p and rand() < late_p:
            seq += 1
            heapq.heappush(held, (ms + int(_LATE_MIN * ratio ** rand()), seq, topic, ev, False, ms))
            continue
        clock = ms
        yield topic, ev
        count += 1
        if count == stop:
            return
        if dup_p and rand() < dup_p:
            resend(topic, ev, ms)
    while held:
        _, _, h_topic, h_ev, is_dup, occurred = heapq.heappop(held)
        yield h_topic, h_ev
        count += 1
        if count == stop:
            return
        if not is_dup and dup_p and rand() < dup_p:
            resend(h_topic, h_ev, occurred)


# ------------------------------------------------------------------------------------------------------- public


def generate(config: SynthConfig, *, events: int | None = None) -> Iterator[tuple[str, dict[str, Any]]]:
    """(topic, event) in delivery order over ``[config.start, config.start + config.days)``.

    Deterministic for a given ``(config, events)``. Without ``events`` the volume is the business's natural one
    and the stream ends with the time span. With ``events=N`` the usage volume adapts so that exactly N events
    (duplicates included) are delivered and they span the whole range (if the business's non-usage events alone
    exceed N, the stream simply stops after N). Memory stays bounded: one day of non-usage events, one hour of
    usage and the held-back late/duplicate events.
    """
    if events is not None and events < 0:
        raise ValueError("events must be >= 0")
    sim = _Sim(
        config,
        start_ms=_to_ms(config.start),
        days=config.days,
        id_prefix=f"ev{config.seed}-",
        target=events,
    )
    return _deliver(sim, config, events)


def live(
    config: SynthConfig,
    *,
    rate: float,
    now: Callable[[], datetime],
    backfill_days: int = 30,
) -> Iterator[tuple[str, dict[str, Any]]]:
    """Endless stream for the demo: a history backfill ending at ``now()``, then events near wall-clock time.

    ``now()`` is read once, at the start (T0). The first part replays ``backfill_days`` days of business history
    before T0 at the natural volume (``config.start`` and ``config.days`` are ignored); after T0 the stream
    continues with event times advancing at about ``rate`` events per second (non-usage business events keep their
    own rate; usage fills up to ``rate``, flat over the day).

    **The caller paces**: the generator never sleeps. Before sending an event, wait ``seconds_until_due(event,
    now())`` (0 for the backfill and for late or duplicate re-sends, whose ``occurred_at`` is in the past). A
    caller that cannot keep up just falls behind wall-clock time. Event ids carry a per-run prefix (from T0) so
    that restarting the demo never produces ids that look like duplicates of a previous run.
    """
    if rate <= 0 or not math.isfinite(rate):
        raise ValueError("rate must be a positive number")
    if backfill_days < 0:
        raise ValueError("backfill_days must be >= 0")
    t0 = _to_ms(now())
    t0 -= t0 % 1000
    sim = _Sim(
        config,
        start_ms=t0 - backfill_days * _DAY,
        days=None,
        id_prefix=f"live{t0:x}-",
        realtime_day=backfill_days,
        rate=rate,
    )
    return _deliver(sim, config, None)


# --------------------------------------------------------------------------------------------------- bad records

_BAD_AT = datetime(2024, 1, 2, 12, 0, tzinfo=UTC)


def bad_record_cases(*, at: datetime = _BAD_AT) -> list[tuple[str, bytes, tuple[str | None, ...]]]:
    """Raw bad records with the outcome SPEC §1 prescribes: ``(topic, bytes, outcomes)``.

    ``outcomes`` has one entry for a single record (its dead-letter reason) and one entry per element for a JSON
    array (``None`` = a valid event, applied). The valid event is a ``lead.created`` at ``at`` for the account
    ``acc-bad-1`` (a key no generated stream uses). The unknown currency is ``XTS`` (ISO 4217's testing code),
    assumed absent from the FX rates.
    """
    ts = at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

    def ev(event_id: str, etype: Any, **fields: Any) -> dict[str, Any]:
        out: dict[str, Any] = {"event_id": event_id, "type": etype, "occurred_at": ts, "account_id": "acc-bad-1"}
        out.update(fields)
        return out

    def enc(value: Any) -> bytes:
        return json.dumps(value, separators=(",", ":")).encode()

    valid = ev("bad-valid-1", "lead.created", lead_id="lead-bad-1", source="organic")
    cases: list[tuple[str, bytes, tuple[str | None, ...]]] = [
        (TOPIC_CRM, b'{"event_id": "bad-1", "type": "lead.created", "occurred_at": ', ("invalid_json",)),
        (TOPIC_BILLING, b"subscription.started acc-bad-1 99.0", ("invalid_json",)),
        (TOPIC_PRODUCT, b'"product.usage"', ("invalid_event",)),
        (TOPIC_CRM, b"42", ("invalid_event",)),
        (TOPIC_CRM, enc({k: v for k, v in ev("bad-4", "x").items() if k != "type"}), ("invalid_event",)),
        (TOPIC_CRM, enc(ev("bad-5", 17, lead_id="lead-bad-5")), ("invalid_event",)),
        (TOPIC_CRM, enc(ev("bad-6", "lead.teleported", lead_id="lead-bad-6")), ("unknown_type",)),
        (TOPIC_BILLING, enc(ev("bad-7", "invoice.paid", amount=10.0)), ("unknown_type",)),
        (
            TOPIC_CRM,
            enc(ev("bad-8", "opportunity.created", opportunity_id="opp-bad-8", amount="1200.00")),
            ("invalid_event",),
        ),
        (
            TOPIC_BILLING,
            enc(ev("bad-9", "subscription.started", subscription_id="sub-bad-9", mrr=-5)),
            ("invalid_event",),
        ),
        (
            TOPIC_CRM,
            enc({**ev("bad-10", "lead.created", lead_id="lead-bad-10"), "occurred_at": "2024-01-02 12:00:00"}),
            ("invalid_event",),
        ),
        (
            TOPIC_CRM,
            enc({**ev("bad-11", "lead.created", lead_id="lead-bad-11"), "occurred_at": "2024-01-02T12:00:00"}),
            ("invalid_event",),
        ),
        (TOPIC_CRM, enc(ev("bad-12", "lead.stage_changed", lead_id="lead-bad-12", stage="won")), ("invalid_event",)),
        (
            TOPIC_BILLING,
            enc(ev("bad-13", "subscription.started", subscription_id="sub-bad-13", amount=100, interval="fortnight")),
            ("invalid_event",),
        ),
        (TOPIC_CRM, enc(ev("bad-14", "lead.created")), ("invalid_event",)),
        (TOPIC_CRM, enc({**ev("bad-15", "lead.created", lead_id="lead-bad-15"), "account_id": ""}), ("invalid_event",)),
        (
            TOPIC_BILLING,
            enc(ev("bad-16", "subscription.started", subscription_id="sub-bad-16", mrr=99.0, currency="XTS")),
            ("unknown_currency",),
        ),
        (
            TOPIC_CRM,
            enc([valid, ev("bad-17", "opportunity.created", opportunity_id="opp-bad-17", amount="5000")]),
            (None, "invalid_event"),
        ),
    ]
    return cases


def bad_records(*, at: datetime = _BAD_AT) -> list[tuple[str, bytes]]:
    """A handful of raw bad records ``(topic, bytes)`` covering every dead-letter reason of SPEC §1 except
    ``too_late``, plus one JSON array mixing a valid event with a bad one (see :func:`bad_record_cases`)."""
    return [(topic, raw) for topic, raw, _ in bad_record_cases(at=at)]
