"""The simulated entities: accounts, subscriptions, leads and opportunities."""

from __future__ import annotations

from typing import Any

Item = tuple[int, str, dict[str, Any]]  # (event-time ms, topic, event)


class Account:
    """An account: a prospect, trial or customer, with its users and active subscriptions."""

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
        self.subs: list[Sub] = []  # active subscriptions
        self.last_sub: Sub | None = None
        self.trial = False
        self.activated = False
        self.chains = False


class Sub:
    """A subscription of an account; its price is kept in USD."""

    __slots__ = ("acct", "count", "gen", "id", "interval", "mrr")

    def __init__(self, sid: str, acct: Account) -> None:
        self.id = sid
        self.acct = acct
        self.mrr = 0.0  # USD
        self.interval: str | None = None  # None: priced with `mrr`, billed monthly
        self.count = 1
        self.gen = 0  # bumped on cancel / restart, invalidates scheduled renewals and updates


class Lead:
    """A lead of an account, on its way through the funnel."""

    __slots__ = ("acct", "id", "outbound", "source")

    def __init__(self, lid: str, acct: Account, source: str | None) -> None:
        self.id = lid
        self.acct = acct
        self.source = source
        self.outbound = source == "outbound"


class Opp:
    """An opportunity of an account; ``amount`` is the annual contract value in USD."""

    __slots__ = ("acct", "amount", "created", "id", "lead_id", "won_amount")

    def __init__(self, oid: str, acct: Account, amount: float, lead_id: str | None) -> None:
        self.id = oid
        self.acct = acct
        self.amount = amount  # USD, ACV
        self.lead_id = lead_id
        self.created = False
        self.won_amount = amount
