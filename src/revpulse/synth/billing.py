"""Billing: subscriptions and their prices, renewals, mid-term updates, cancellations, reactivations and add-ons."""

from __future__ import annotations

import math
from typing import Any

from revpulse.synth.config import DAY, HOUR, MONTH, REPORTING_CURRENCY
from revpulse.synth.model import Account, Opp, Sub

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
_INTERVALS: tuple[tuple[str, float, tuple[int, ...]], ...] = (  # interval, weight, interval_count choices
    ("month", 0.45, (1, 1, 1, 1, 1, 1, 1, 1, 2, 6)),
    ("year", 0.30, (1, 1, 1, 1, 1, 1, 1, 1, 1, 2)),
    ("quarter", 0.15, (1,)),
    ("week", 0.10, (1, 1, 2)),
)
_MONTHS_IN: dict[str, float] = {"week": 12 / 52, "month": 1.0, "quarter": 3.0, "year": 12.0}


class BillingMixin:
    """The billing area of :class:`~revpulse.synth.simulation.Simulation` (whose state and scheduler it uses)."""

    def _mrr_for(self, segment: str | None) -> float:
        median, sigma = _MRR_BY_SEGMENT[segment]
        return median * math.exp(self.rng.gauss(0.0, sigma))

    def _price(self, sub: Sub, mrr_usd: float) -> dict[str, Any]:
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

    def _pick_form(self, sub: Sub) -> None:
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

    def _period_ms(self, sub: Sub) -> int:
        if sub.interval == "week":
            return sub.count * 7 * DAY
        months = 1.0 if sub.interval is None else _MONTHS_IN[sub.interval] * sub.count
        return int(months * MONTH)

    def _start_sub(self, ms: int, acct: Account, mrr: float, *, sub: Sub | None = None) -> float:
        """Start a subscription (a new one unless ``sub`` is given); returns its period in months."""
        if sub is None:
            sub = Sub(f"sub-{self._next('sub'):05d}", acct)
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
            self._at(ms + int(self.rng.expovariate(1 / 400) * DAY) + HOUR, self._on_addon_tick, acct)
            self._at(ms + int(self.rng.expovariate(1 / 400) * DAY) + HOUR, self._on_expansion_tick, acct)
        return self._period_ms(sub) / MONTH

    def _schedule_sub(self, ms: int, sub: Sub, *, first_renewal: int | None = None) -> None:
        renewal = first_renewal if first_renewal is not None else ms + self._period_ms(sub)
        self._at(renewal, self._on_renewal, (sub, sub.gen))
        self._at(ms + HOUR + int(self.rng.expovariate(1 / 150) * DAY), self._on_sub_update, (sub, sub.gen))

    def _update_sub(self, ms: int, sub: Sub, mrr: float) -> None:
        if self.rand() < 0.1:
            self._pick_form(sub)
        fields: dict[str, Any] = {"subscription_id": sub.id, **self._price(sub, max(mrr, 5.0))}
        self._emit(ms, "subscription.updated", sub.acct, fields)

    def _cancel_sub(self, ms: int, sub: Sub) -> None:
        acct = sub.acct
        sub.gen += 1
        acct.subs.remove(sub)
        self._emit(ms, "subscription.canceled", acct, {"subscription_id": sub.id})
        if not acct.subs:
            self._refresh_active(acct)
            if self.rand() < 0.35:  # comes back later
                self._at(ms + 2 * DAY + int(self.rng.expovariate(1 / 15) * DAY), self._on_reactivate, acct)

    def _on_deal_booked(self, ms: int, opp: Opp) -> None:
        acct = opp.acct
        mrr = opp.won_amount / 12
        if acct.subs and self.rand() < 0.6:
            sub = acct.subs[0]
            self._update_sub(ms, sub, sub.mrr + mrr)
        else:
            self._fill_users(acct)
            self._start_sub(ms, acct, mrr)

    def _on_renewal(self, ms: int, arg: tuple[Sub, int]) -> None:
        sub, gen = arg
        if sub.gen != gen:
            return
        months = self._period_ms(sub) / MONTH
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

    def _on_sub_update(self, ms: int, arg: tuple[Sub, int]) -> None:
        sub, gen = arg
        if sub.gen != gen:
            return
        r = self.rand()
        if r < 0.05:
            self._cancel_sub(ms, sub)  # canceled mid-term
            return
        factor = self.rng.uniform(1.05, 1.4) if r < 0.67 else self.rng.uniform(0.7, 0.95)
        self._update_sub(ms, sub, sub.mrr * factor)
        self._at(ms + HOUR + int(self.rng.expovariate(1 / 150) * DAY), self._on_sub_update, (sub, gen))

    def _on_reactivate(self, ms: int, acct: Account) -> None:
        if acct.subs:
            return
        last = acct.last_sub
        mrr = (last.mrr if last is not None else self._mrr_for(acct.segment)) * self.rng.uniform(0.7, 1.2)
        if last is not None and self.rand() < 0.3:
            self._start_sub(ms, acct, mrr, sub=last)  # same subscription restarted
        else:
            self._start_sub(ms, acct, mrr)

    def _on_addon_tick(self, ms: int, acct: Account) -> None:
        if acct.subs:
            self._start_sub(ms, acct, acct.subs[0].mrr * self.rng.uniform(0.15, 0.4))
        self._at(ms + HOUR + int(self.rng.expovariate(1 / 400) * DAY), self._on_addon_tick, acct)
