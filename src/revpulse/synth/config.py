"""What to simulate: the configuration, topics, channels, time units and time helpers."""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from revpulse.schemas.models import EVENT_TYPES
from revpulse.settings import Topics
from revpulse.topics import topic_of

TOPIC_CRM = "crm.events"
TOPIC_BILLING = "billing.events"
TOPIC_PRODUCT = "product.events"
TOPIC_MARKETING = "marketing.events"
REPORTING_CURRENCY = "USD"

_TOPIC_OF: dict[str, str] = {t: str(topic_of(t, Topics())) for t in EVENT_TYPES}

#: Lead sources; the ones with a spend share (:mod:`revpulse.synth.marketing`) also receive marketing spend.
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
LEAD_SOURCE_WEIGHTS = (24, 15, 14, 6, 13, 6, 14, 8)

# durations in milliseconds (MONTH: the average Gregorian month)
SECOND = 1000
MINUTE = 60 * SECOND
HOUR = 60 * MINUTE
DAY = 24 * HOUR
MONTH = 30.436875 * DAY

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_DEFAULT_START = datetime(2024, 1, 1, tzinfo=UTC)


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


def to_ms(dt: datetime) -> int:
    """Epoch milliseconds of an aware datetime, rounded up to the next whole millisecond."""
    return -(-(dt - EPOCH) // timedelta(microseconds=1) // 1000)


def occurred_at_ms(value: str | int) -> int:
    """Epoch milliseconds of an ``occurred_at`` (RFC 3339 string with offset, or integer epoch ms)."""
    if isinstance(value, bool):
        raise ValueError("occurred_at must not be a boolean")
    if isinstance(value, int):
        return value
    dt = datetime.fromisoformat(value)
    if dt.tzinfo is None:
        raise ValueError("occurred_at needs an offset")
    return (dt - EPOCH) // timedelta(milliseconds=1)


def seconds_until_due(event: Mapping[str, Any], now: datetime) -> float:
    """How long a :func:`~revpulse.synth.delivery.live` caller should wait before sending ``event`` (0 when it is
    already due)."""
    return max(0.0, (occurred_at_ms(event["occurred_at"]) - to_ms(now)) / 1000)
