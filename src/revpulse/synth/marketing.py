"""Marketing: the daily spend per channel."""

from __future__ import annotations

from typing import Any

from revpulse.synth.config import HOUR, MINUTE, REPORTING_CURRENCY, SECOND

_SPEND_SHARE: dict[str, float] = {
    "paid_search": 0.30,
    "paid_social": 0.18,
    "content": 0.10,
    "events": 0.15,
    "outbound": 0.15,
    "partner": 0.12,
}
_SPEND_PER_ACCOUNT_DAY = 12.0  # USD of marketing spend per account of the base per weekday


class MarketingMixin:
    """The marketing area of :class:`~revpulse.synth.simulation.Simulation` (whose state and scheduler it uses)."""

    def _plan_spend(self, ds: int, weekend: bool) -> None:
        """One spend per channel (some split by segment), reported late in the day."""
        budget = self.cfg.accounts * _SPEND_PER_ACCOUNT_DAY * (0.6 if weekend else 1.0)
        for channel, share in _SPEND_SHARE.items():
            usd = budget * share * self.rng.uniform(0.75, 1.25)
            if self.rand() < 0.01:
                usd = 0.0  # campaign paused
            t = ds + self._uniform_ms(20 * HOUR, 24 * HOUR - MINUTE)
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
                self._at(t + i * self._uniform_ms(SECOND, MINUTE), self._on_spend, (channel, usd * frac, segment))

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
