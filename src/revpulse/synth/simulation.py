"""The simulation's core: its state, the event scheduler and the random draws the business's areas share."""

from __future__ import annotations

import heapq
import math
import random
from collections.abc import Callable, Iterator
from datetime import timedelta
from operator import itemgetter
from typing import Any

from revpulse.synth.accounts import AccountsMixin
from revpulse.synth.billing import BillingMixin
from revpulse.synth.config import DAY, EPOCH, HOUR, REPORTING_CURRENCY, SynthConfig, topic_for
from revpulse.synth.funnel import FunnelMixin
from revpulse.synth.marketing import MarketingMixin
from revpulse.synth.model import Account, Item
from revpulse.synth.product import ProductMixin

_HOUR_WEIGHT: tuple[float, ...] = (
    0.30, 0.25, 0.20, 0.20, 0.25, 0.35, 0.50, 0.70, 0.90, 1.10, 1.20, 1.20,
    1.15, 1.20, 1.25, 1.20, 1.10, 1.00, 0.90, 0.80, 0.70, 0.60, 0.50, 0.40,
)  # fmt: skip
_OFFSETS: tuple[tuple[int, str], ...] = (
    (2 * 3600, "+02:00"),
    (2 * 3600, "+02:00"),
    (2 * 3600, "+02:00"),
    (-5 * 3600, "-05:00"),
    (5 * 3600 + 1800, "+05:30"),
)
_USAGE_SLICE = 20_000  # most usage events generated at once


class Simulation(AccountsMixin, FunnelMixin, BillingMixin, ProductMixin, MarketingMixin):
    """Generates the business's events in event-time order (before any late delivery or duplicate).

    The areas of the business are mixins sharing this object's state. Each day, :meth:`_plan_day` has them schedule
    the day's spontaneous events on the agenda (a heap of ``(time, seq, handler, arg)``); their handlers emit events
    and schedule what follows. :meth:`events` runs the agenda a day at a time and interleaves the day's usage. Every
    random draw comes from one generator seeded with ``config.seed``, in event-time order.
    """

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
        self.end_ms = None if days is None else start_ms + days * DAY
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
        self._out: list[Item] = []
        self._floor = start_ms
        self._dates: dict[int, str] = {}
        self.accounts: list[Account] = []
        self.active: dict[int, Account] = {}  # accounts producing usage (customers and trials)
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
            s = (EPOCH + timedelta(days=day)).strftime("%Y-%m-%d")
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
        acct: Account | None,
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
        self._out.append((ms, topic_for(etype), ev))

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
            t = day_start + int(self.rand() * DAY)
            if self.rand() * 1.25 < _HOUR_WEIGHT[(t // HOUR) % 24]:
                return t

    # ---- daily plan

    def _plan_day(self, ds: int) -> None:
        """Schedule the day's spontaneous events, area by area (their sequels are scheduled by their handlers)."""
        weekday = ((ds + 12 * HOUR) // DAY + 3) % 7  # 1970-01-01 was a Thursday
        weekend = weekday >= 5
        factor = 0.4 if weekend else 1.0
        self._plan_arrivals(ds, factor)
        self._plan_leads(ds, factor)
        self._plan_account_changes(ds)
        self._plan_user_signups(ds, factor)
        self._plan_spend(ds, weekend)

    # ---- main loop

    def events(self) -> Iterator[Item]:
        day = 0
        while self.days is None or day < self.days:
            ds = self.start_ms + day * DAY
            de = ds + DAY
            self._floor = ds
            self._plan_day(ds)
            self._out = out = []
            agenda = self._agenda
            while agenda and agenda[0][0] < de:
                ms, _, fn, arg = heapq.heappop(agenda)
                fn(ms, arg)
            out.sort(key=itemgetter(0))
            pool, cum = self._usage_pool()
            n_usage = self._day_usage(day, ds, len(out), cum[-1] if cum else 0.0)
            realtime = self.realtime_day is not None and day >= self.realtime_day
            weights = [1.0 if realtime else _HOUR_WEIGHT[((ds // HOUR) + h) % 24] for h in range(24)]
            total_w = sum(weights)
            last_day = self.days is not None and day == self.days - 1
            j, acc_w, done = 0, 0.0, 0
            for h in range(24):
                hs = ds + h * HOUR
                acc_w += weights[h]
                n = round(n_usage * acc_w / total_w) - done
                done += n
                if last_day and h == 23 and self.target is not None:
                    n = max(n, self.target - self.base_count - self.dup_count - (len(out) - j))
                if not cum:
                    n = 0
                parts = max(1, -(-n // _USAGE_SLICE))  # keeps the buffered usage small at any volume
                for p in range(parts):
                    ss = hs + p * HOUR // parts
                    se = hs + (p + 1) * HOUR // parts
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
