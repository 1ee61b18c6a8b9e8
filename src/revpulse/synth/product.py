"""Product: signups, trials, activations and usage."""

from __future__ import annotations

import math
from operator import itemgetter
from typing import Any

from revpulse.synth.config import DAY, HOUR, MINUTE, TOPIC_PRODUCT
from revpulse.synth.model import Account, Item

_USAGE_WEIGHT: dict[str | None, float] = {
    "smb": 1.0,
    "mid_market": 3.0,
    "enterprise": 8.0,
    "startup": 0.7,
    None: 1.0,
}
_USAGE_PER_WEIGHT_DAY = 3.0
_WEEKEND_FACTOR = 0.45
_FEATURES = ("dashboards", "reports", "api", "export", "integrations", "alerts", "workflows", "search")
_FEATURE_POOL: tuple[str, ...] = tuple(
    f for f, w in zip(_FEATURES, (6, 5, 4, 2, 2, 2, 2, 3), strict=True) for _ in range(w)
)


class ProductMixin:
    """The product area of :class:`~revpulse.synth.simulation.Simulation` (whose state and scheduler it uses)."""

    def _on_signup(self, ms: int, acct: Account) -> None:
        user = self._add_users(acct, 1)[0]
        self._emit(ms, "product.signup", acct, {"user_id": user})
        if self.rand() < 0.85:
            self._at(ms + self._loguniform_ms(MINUTE, 12 * HOUR), self._on_trial, acct)
        elif self.rand() < 0.3:
            self._at(ms + self._loguniform_ms(HOUR, 5 * DAY), self._on_new_lead, (acct, acct.channel))

    def _on_trial(self, ms: int, acct: Account) -> None:
        if acct.trial or acct.subs:
            return
        if not acct.users:
            self._add_users(acct, 1)
        acct.trial = True
        self._refresh_active(acct)
        self._emit(ms, "product.trial_started", acct, {"user_id": acct.users[0]})
        if self.rand() < 0.45:
            self._at(ms + self._loguniform_ms(HOUR, 6 * DAY), self._on_activated, (acct, acct.users[0]))
        self._at(ms + 14 * DAY + self._uniform_ms(0, HOUR), self._on_trial_end, acct)

    def _on_activated(self, ms: int, arg: tuple[Account, str]) -> None:
        acct, user = arg
        fields: dict[str, Any] = {"user_id": user}
        if self.rand() < 0.5:
            fields["feature"] = self.rng.choice(_FEATURES)
        self._emit(ms, "product.activated", acct, fields)
        if acct.trial:
            acct.activated = True

    def _on_trial_end(self, ms: int, acct: Account) -> None:
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
            self._at(ms + self._loguniform_ms(HOUR, 3 * DAY), self._on_new_lead, (acct, acct.channel))

    def _plan_user_signups(self, ds: int, factor: float) -> None:
        customers = [a for a in self.active.values() if a.subs]
        if customers:
            for _ in range(self._poisson(len(customers) / 25 * factor)):
                acct = customers[int(self.rand() * len(customers))]
                self._at(self._daytime(ds), self._on_user_signup, acct)

    def _on_user_signup(self, ms: int, acct: Account) -> None:
        user = self._add_users(acct, 1)[0]
        self._emit(ms, "product.signup", acct, {"user_id": user})
        if self.rand() < 0.6:
            self._at(ms + self._loguniform_ms(30 * MINUTE, 3 * DAY), self._on_activated, (acct, user))

    # ---- usage

    def _usage(self, hs: int, he: int, n: int, pool: list[Account], cum: list[float]) -> list[Item]:
        rand = self.rand
        stamp = self._stamp
        prefix = self.id_prefix
        seq = self._seq
        span = he - hs
        feats, nf = _FEATURE_POOL, len(_FEATURE_POOL)
        out: list[Item] = []
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

    def _usage_pool(self) -> tuple[list[Account], list[float]]:
        pool = list(self.active.values()) or self.accounts
        cum: list[float] = []
        total = 0.0
        for acct in pool:
            total += _USAGE_WEIGHT[acct.segment] * (1.0 if acct.subs else 0.4)
            cum.append(total)
        return pool, cum

    def _day_usage(self, day: int, ds: int, nonusage: int, total_weight: float) -> int:
        weekend = ((ds + 12 * HOUR) // DAY + 3) % 7 >= 5
        if self.realtime_day is not None and day >= self.realtime_day:
            return max(0, round(self.rate * DAY / 1000) - nonusage)
        if self.target is None or self.days is None:
            return round(total_weight * _USAGE_PER_WEIGHT_DAY * (_WEEKEND_FACTOR if weekend else 1.0))
        produced = self.base_count + self.dup_count
        remaining = (self.target - produced) / (1 + self.cfg.duplicate_fraction)
        weights = [
            _WEEKEND_FACTOR if ((self.start_ms + d * DAY + 12 * HOUR) // DAY + 3) % 7 >= 5 else 1.0
            for d in range(day, self.days)
        ]
        return max(0, round(remaining * weights[0] / sum(weights)) - nonusage)
