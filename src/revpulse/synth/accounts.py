"""The account base: the opening book, arrivals, users, segment changes and renames."""

from __future__ import annotations

from typing import Any

from revpulse.synth.config import CHANNELS, DAY, HOUR, LEAD_SOURCE_WEIGHTS, MINUTE, MONTH, REPORTING_CURRENCY
from revpulse.synth.model import Account, Opp

_SEGMENT_MIX: tuple[tuple[str | None, float], ...] = (
    ("smb", 0.58),
    ("mid_market", 0.27),
    ("enterprise", 0.09),
    ("startup", 0.03),
    (None, 0.03),
)
_USERS: dict[str | None, tuple[int, int]] = {
    "smb": (2, 8),
    "mid_market": (8, 40),
    "enterprise": (30, 150),
    "startup": (1, 4),
    None: (2, 10),
}
_NEXT_SEGMENT: dict[str, str] = {"smb": "mid_market", "mid_market": "enterprise", "startup": "smb"}
_NAME_A = ("Blue", "North", "Quantum", "Silver", "Rapid", "Green", "Iron", "Clear", "Bold", "Bright", "Nova")
_NAME_B = ("Harbor", "Labs", "Systems", "Analytics", "Logistics", "Foods", "Health", "Robotics", "Media", "Works")
_NAME_C = ("Inc", "GmbH", "Ltd", "LLC", "SA", "BV", "Group")


class AccountsMixin:
    """The accounts area of :class:`~revpulse.synth.simulation.Simulation` (whose state and scheduler it uses)."""

    def _new_account(self) -> Account:
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
        channel = self.rng.choices(CHANNELS, weights=LEAD_SOURCE_WEIGHTS)[0]
        rnd = self.rng
        name = f"{rnd.choice(_NAME_A)} {rnd.choice(_NAME_B)} {rnd.choice(_NAME_C)}"
        acct = Account(len(self.accounts) + 1, segment, currency, channel, name)
        self.accounts.append(acct)
        return acct

    def _add_users(self, acct: Account, n: int) -> list[str]:
        start = len(acct.users)
        new = [f"u-{acct.num:05d}-{start + i + 1}" for i in range(n)]
        acct.users.extend(new)
        return new

    def _fill_users(self, acct: Account) -> None:
        lo, hi = _USERS[acct.segment]
        want = lo + int(self.rand() * (hi - lo + 1))
        if len(acct.users) < want:
            self._add_users(acct, want - len(acct.users))

    def _refresh_active(self, acct: Account) -> None:
        if acct.subs or acct.trial:
            self.active[acct.num] = acct
        else:
            self.active.pop(acct.num, None)

    def _account_updated(self, ms: int, acct: Account, *, name: bool, segment: bool) -> None:
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
                t = s + self._uniform_ms(0, 5 * HOUR)
                if self.rand() < 0.8:
                    self._at(t, self._on_account_intro, acct)
                t += self._uniform_ms(MINUTE, 50 * MINUTE)
                self._fill_users(acct)
                self._at(t, self._on_book_sub, (acct, False))
                if self.rand() < 0.12:
                    self._at(t + self._uniform_ms(MINUTE, HOUR), self._on_book_sub, (acct, True))
            elif r < 0.63:  # mid-trial (signed up before start)
                self._add_users(acct, 1)
                self._at(s + self._uniform_ms(0, DAY), self._on_trial, acct)
            elif r < 0.78:  # backlog of prospects entering the funnel
                self._at(s + self._uniform_ms(0, 14 * DAY), self._on_arrival, acct)
            elif r < 0.86:  # an opportunity opened before start
                lead_id = f"lead-pre-{acct.num:05d}" if self.rand() < 0.5 else None
                opp = Opp(f"opp-pre-{acct.num:05d}", acct, self._mrr_for(acct.segment) * 12, lead_id)
                won = self.rand() < 0.4
                self._at(s + self._loguniform_ms(HOUR, 30 * DAY), self._on_opp_close, (opp, won))
            elif self.rand() < 0.5:  # dormant
                self._at(s + self._uniform_ms(0, DAY), self._on_account_intro, acct)

    def _on_account_intro(self, ms: int, acct: Account) -> None:
        self._account_updated(ms, acct, name=True, segment=True)

    def _on_book_sub(self, ms: int, arg: tuple[Account, bool]) -> None:
        acct, addon = arg
        mrr = self._mrr_for(acct.segment) * (self.rng.uniform(0.15, 0.4) if addon else 1.0)
        months = self._start_sub(ms, acct, mrr)
        sub = acct.subs[-1]
        # the book's subscriptions are somewhere in their current period
        sub.gen += 1
        self._schedule_sub(ms, sub, first_renewal=ms + self._uniform_ms(HOUR, months * MONTH))

    # ---- arrivals

    def _plan_arrivals(self, ds: int, factor: float) -> None:
        for _ in range(self._poisson(self.arrival_rate * factor)):
            self._at(self._daytime(ds), self._on_arrival, None)

    def _on_arrival(self, ms: int, acct: Account | None) -> None:
        if acct is None:
            acct = self._new_account()
        if self.rand() < (0.7 if acct.segment is not None else 0.4):
            self._account_updated(ms, acct, name=True, segment=True)
        if self.rand() < 0.3:
            self._at(ms + self._uniform_ms(MINUTE, 30 * MINUTE), self._on_signup, acct)
        else:
            self._at(ms + self._uniform_ms(MINUTE, 20 * MINUTE), self._on_new_lead, (acct, acct.channel))

    # ---- segment changes and renames

    def _plan_account_changes(self, ds: int) -> None:
        n = len(self.accounts)
        if not n:
            return
        for _ in range(self._poisson(n / 600)):
            acct = self.accounts[int(self.rand() * n)]
            if acct.segment in _NEXT_SEGMENT:
                self._at(self._daytime(ds), self._on_segment_change, acct)
        for _ in range(self._poisson(n / 1500)):
            self._at(self._daytime(ds), self._on_rename, self.accounts[int(self.rand() * n)])

    def _on_rename(self, ms: int, acct: Account) -> None:
        acct.name = f"{acct.name.split(' ')[0]} {self.rng.choice(_NAME_B)} {self.rng.choice(_NAME_C)}"
        self._account_updated(ms, acct, name=True, segment=self.rand() < 0.3)

    def _on_segment_change(self, ms: int, acct: Account) -> None:
        if acct.segment not in _NEXT_SEGMENT:
            return
        acct.segment = _NEXT_SEGMENT[acct.segment]
        self._account_updated(ms, acct, name=self.rand() < 0.3, segment=True)
