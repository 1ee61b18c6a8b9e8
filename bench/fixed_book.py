"""A synthetic business whose accounts are all there on day 0: the history-growth benchmark's data.

`revpulse.synth` models a growing business (new accounts arrive every day), so a longer simulation there means
more accounts as well as more history. Here the account base is fixed, the rest of the business as in
`revpulse.synth` (same opening book, billing, segments, late deliveries and duplicates), so that a longer span adds
history only:

* no arrivals after day 0 (`_plan_arrivals` does nothing);
* product usage at a flat `usage_per_account` × accounts events a day (≥ 2 per account per day on average, the
  day's business-hours profile kept), spread over the accounts using the product (customers, trials) by segment
  weight, weekends included;
* churn as in `revpulse.synth` (renewals cancel with the segment's monthly churn, some mid-term cancellations) and
  comebacks: besides synth's own (a third of churned accounts, within weeks), a churned account is won back with
  probability 1 / `winback_days` a day, so the number of paying accounts stays level instead of draining away;
* renewals (monthly for most: synth's interval mix), repricing at renewal and mid-term updates as in synth;
* with `new_entities=False` (the default) no new leads, add-on subscriptions or expansion opportunities after the
  opening book: every entity the state is bounded by (accounts, their subscriptions, the opening book's leads and
  opportunities, the channels) is known early, and only comebacks (a new subscription id 70 % of the time) add
  subscriptions. `new_entities=True` keeps synth's leads from existing accounts, add-ons and expansions.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from revpulse.synth.config import SynthConfig, to_ms
from revpulse.synth.delivery import _deliver
from revpulse.synth.model import Account
from revpulse.synth.simulation import Simulation

USAGE_PER_ACCOUNT = 2.0
WINBACK_DAYS = 60.0
# Days kept between a book's end and today: a worker rejects events from the future, and late deliveries and
# renewals run a little past a span's last day.
PAST_MARGIN = timedelta(days=45)


class FixedBook(Simulation):
    """`revpulse.synth.simulation.Simulation` with a fixed account base (see the module's docstring)."""

    def __init__(
        self,
        config: SynthConfig,
        *,
        usage_per_account: float = USAGE_PER_ACCOUNT,
        winback_days: float = WINBACK_DAYS,
        new_entities: bool = False,
    ) -> None:
        self.usage_per_account = usage_per_account
        self.winback_days = winback_days
        self.new_entities = new_entities
        super().__init__(config, start_ms=to_ms(config.start), days=config.days, id_prefix=f"ev{config.seed}-")

    def _plan_arrivals(self, ds: int, factor: float) -> None:
        return

    def _plan_leads(self, ds: int, factor: float) -> None:
        if self.new_entities:
            super()._plan_leads(ds, factor)

    def _on_addon_tick(self, ms: int, acct: Account) -> None:
        if self.new_entities:
            super()._on_addon_tick(ms, acct)

    def _on_expansion_tick(self, ms: int, acct: Account) -> None:
        if self.new_entities:
            super()._on_expansion_tick(ms, acct)

    def _plan_day(self, ds: int) -> None:
        super()._plan_day(ds)
        chance = 1.0 / self.winback_days if self.winback_days > 0 else 0.0
        for acct in self.accounts:
            if acct.last_sub is not None and not acct.subs and self.rand() < chance:
                self._at(self._daytime(ds), self._on_reactivate, acct)  # nothing if it came back meanwhile

    def _day_usage(self, day: int, ds: int, nonusage: int, total_weight: float) -> int:
        return round(self.usage_per_account * len(self.accounts))


def book_start(days: int, today: datetime) -> datetime:
    """The first day of a span of `days`: synth's usual start, or, for a span that would reach `today`, the UTC
    midnight that ends it a margin before (every event of a book is in the past when it is read)."""
    start = SynthConfig().start
    latest = (today - PAST_MARGIN - timedelta(days=days)).astimezone(UTC)
    latest = latest.replace(hour=0, minute=0, second=0, microsecond=0)
    return min(start, latest)


def generate_fixed(
    accounts: int,
    days: int,
    *,
    seed: int = 7,
    usage_per_account: float = USAGE_PER_ACCOUNT,
    winback_days: float = WINBACK_DAYS,
    new_entities: bool = False,
    start: datetime | None = None,
) -> Iterator[tuple[str, dict[str, Any]]]:
    """(topic, event) in delivery order (late deliveries and duplicates as `revpulse.synth.delivery.generate`),
    from `start` (`book_start` for today by default)."""
    start = start or book_start(days, datetime.now(UTC))
    config = SynthConfig(seed=seed, accounts=accounts, days=days, start=start)
    book = FixedBook(config, usage_per_account=usage_per_account, winback_days=winback_days, new_entities=new_entities)
    return _deliver(book, config, None)
