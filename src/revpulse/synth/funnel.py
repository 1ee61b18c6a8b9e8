"""The sales funnel: leads and their stages, opportunities and their outcome, expansion opportunities."""

from __future__ import annotations

import math
from typing import Any

from revpulse.synth.config import CHANNELS, DAY, HOUR, LEAD_SOURCE_WEIGHTS, MINUTE, REPORTING_CURRENCY, SECOND
from revpulse.synth.model import Account, Lead, Opp

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
_LOST_REASONS = ("price", "competitor", "no_decision", "timing", "missing_feature", "budget")


class FunnelMixin:
    """The funnel area of :class:`~revpulse.synth.simulation.Simulation` (whose state and scheduler it uses)."""

    # ---- leads

    def _plan_leads(self, ds: int, factor: float) -> None:
        """Leads from existing accounts (new accounts bring their own)."""
        if not self.accounts:
            return
        for _ in range(self._poisson(self.arrival_rate * 0.12 * factor)):
            acct = self.accounts[int(self.rand() * len(self.accounts))]
            self._at(self._daytime(ds), self._on_new_lead, (acct, None))

    def _on_new_lead(self, ms: int, arg: tuple[Account, str | None]) -> None:
        acct, source = arg
        if source is None:
            source = self.rng.choices(CHANNELS, weights=LEAD_SOURCE_WEIGHTS)[0]
        if self.rand() < 0.04:
            source = None
        lead = Lead(f"lead-{self._next('lead'):06d}", acct, source)
        fields: dict[str, Any] = {"lead_id": lead.id}
        if source is not None:
            fields["source"] = source
        elif self.rand() < 0.5:
            fields["source"] = None
        self._emit(ms, "lead.created", acct, fields, seg_p=0.4)
        self._advance_lead(ms, lead, "lead")

    def _stage_at(self, ms: int, lead: Lead, stage: str, lo_days: float, hi_days: float) -> None:
        self._at(ms + self._loguniform_ms(lo_days * DAY, hi_days * DAY), self._on_stage, (lead, stage))

    def _advance_lead(self, ms: int, lead: Lead, stage: str) -> None:
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
                    self._at(ms + self._loguniform_ms(HOUR, 2 * DAY), self._on_trial, lead.acct)
            elif r < 0.87:
                self._stage_at(ms, lead, "disqualified", 2, 10)
        elif stage == "disqualified" and r < 0.05:
            self._stage_at(ms, lead, "lead", 10, 30)  # recycled

    def _on_stage(self, ms: int, arg: tuple[Lead, str]) -> None:
        lead, stage = arg
        self._emit(ms, "lead.stage_changed", lead.acct, {"lead_id": lead.id, "stage": stage})
        if stage == "opportunity":
            acct = lead.acct
            opp = Opp(
                f"opp-{self._next('opp'):05d}",
                acct,
                self._mrr_for(acct.segment) * 12 * self.rng.uniform(0.9, 1.1),
                lead.id if self.rand() < 0.95 else None,
            )
            self._at(ms + self._uniform_ms(5 * SECOND, 30 * MINUTE), self._on_opp_created, (opp, lead))
        elif stage != "customer":
            self._advance_lead(ms, lead, stage)

    def _on_lead_customer(self, ms: int, arg: tuple[Account, str]) -> None:
        acct, lead_id = arg
        self._emit(ms, "lead.stage_changed", acct, {"lead_id": lead_id, "stage": "customer"})

    # ---- opportunities

    def _money(self, acct: Account | None, usd: float, *, whole: bool = False) -> tuple[float | int, str | None]:
        """Amount in the account's billing currency, and the currency code to put on the event (if any)."""
        code = acct.currency if acct is not None else REPORTING_CURRENCY
        value = usd / self.fx[code]
        amount: float | int = round(value) if whole else round(value, 2)
        if code != REPORTING_CURRENCY:
            return amount, code
        return amount, (REPORTING_CURRENCY if self.rand() < 0.08 else None)

    def _on_opp_created(self, ms: int, arg: tuple[Opp, Lead | None]) -> None:
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
        self._at(ms + max(HOUR, int(cycle * DAY)), self._on_opp_close, (opp, won))

    def _on_opp_close(self, ms: int, arg: tuple[Opp, bool]) -> None:
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
            self._at(ms + self._uniform_ms(MINUTE, 90 * MINUTE), self._on_lead_customer, (acct, opp.lead_id))
        self._at(ms + self._loguniform_ms(10 * MINUTE, 2 * DAY), self._on_deal_booked, opp)

    def _on_expansion_tick(self, ms: int, acct: Account) -> None:
        if acct.subs:
            amount = acct.subs[0].mrr * 12 * self.rng.uniform(0.2, 0.6)
            opp = Opp(f"opp-{self._next('opp'):05d}", acct, amount, None)
            self._on_opp_created(ms, (opp, None))
        self._at(ms + HOUR + int(self.rng.expovariate(1 / 400) * DAY), self._on_expansion_tick, acct)
