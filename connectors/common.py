"""What the CRM mappers share: provider time and money to SPEC §1 values, a deal's last known values, event dicts.

Every mapper emits `occurred_at` as integer epoch milliseconds: the providers give milliseconds (HubSpot,
Salesforce), seconds or ISO 8601 strings (Pipedrive), and one unit keeps the canonical stream uniform.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from revpulse.connectors.base import CanonicalEvent, Unmappable, preview

WON = "won"
LOST = "lost"

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)
_CURRENCY = re.compile(r"[A-Z]{3}")
# Epoch milliseconds of 0001-01-01T00:00:00Z and 9999-12-31T23:59:59.999Z: the times RFC 3339 can write.
MIN_MS = (datetime(1, 1, 1, tzinfo=UTC) - _EPOCH) // _MS
MAX_MS = (datetime(9999, 12, 31, 23, 59, 59, 999000, tzinfo=UTC) - _EPOCH) // _MS
MAX_ID_LENGTH = 256


def as_elements(body: Any) -> list[Any]:
    """A JSON array's items, or the body itself as the only element."""
    return list(body) if isinstance(body, list) else [body]


def epoch_ms(value: Any, what: str) -> int:
    """Epoch milliseconds from an integer of milliseconds or an ISO 8601 / RFC 3339 string.

    A string without an offset is UTC: that is how Pipedrive writes `won_time` / `lost_time` in its older
    "YYYY-MM-DD HH:MM:SS" form. The result lies in years 0001–9999 (what RFC 3339 can write); whether the time is
    plausible (not before 1970, not in the future) is the event validator's call, not the mapper's.
    """
    if isinstance(value, int) and not isinstance(value, bool):
        ms = value
    elif isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except (ValueError, OverflowError):
            raise Unmappable(f"{what} {preview(value)} is not an ISO 8601 time") from None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        # Timedelta arithmetic, not float seconds: exact to the microsecond, then floored to milliseconds.
        ms = (parsed - _EPOCH) // _MS
    else:
        raise Unmappable(f"{what} must be epoch milliseconds or an ISO 8601 string, got {preview(value)}")
    if not MIN_MS <= ms <= MAX_MS:
        raise Unmappable(f"{what} {preview(value)} is out of range: not a time in the years 0001 to 9999")
    return ms


def amount(value: Any, what: str) -> float | int:
    """A money amount ≥ 0; null or an empty string (a cleared CRM field) is 0.

    Numeric strings are accepted because HubSpot sends every property value as a string. How large an amount
    may be is the event validator's call; here it only has to be a finite number.
    """
    if value is None or value == "":
        return 0
    number = value
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            raise Unmappable(f"{what} {preview(value)} is not a number") from None
    elif isinstance(value, bool) or not isinstance(value, int | float):
        raise Unmappable(f"{what} must be a number, got {preview(value)}")
    # An int is compared as an int: math.isfinite would overflow on one beyond the float range.
    if (not isinstance(number, int) and not math.isfinite(number)) or number < 0:
        raise Unmappable(f"{what} {preview(value)} is not a finite amount ≥ 0")
    return number


def currency(value: Any, what: str) -> str | None:
    """An ISO 4217 code, or None when the CRM has none (RevPulse then uses its reporting currency)."""
    if value is None or value == "":
        return None
    if not isinstance(value, str) or not _CURRENCY.fullmatch(value):
        raise Unmappable(f"{what} {preview(value)} is not an upper-case ISO 4217 code")
    return value


def next_event_id(event_id: str, emitted: list[CanonicalEvent], suffix: str) -> str:
    """The id of the next canonical event of one provider change: its own id first, then suffixed (`…:won`).

    One change can mean two events (a deal created already won); both ids stay stable across redeliveries.
    """
    return f"{event_id}:{suffix}" if emitted else event_id


def text_id(value: Any, what: str) -> str:
    """A provider id as a non-empty string of at most 256 characters (providers mix integer and string ids).

    SPEC §1 caps ids at 256 characters, so a longer one could never become a valid event; refusing it here also
    keeps a hostile id out of the mapper's state.
    """
    if isinstance(value, bool) or not isinstance(value, int | str) or value == "":
        raise Unmappable(f"{what} must be a non-empty string or integer id, got {preview(value)}")
    text = str(value)
    if len(text) > MAX_ID_LENGTH:
        raise Unmappable(f"{what} {preview(value)} is longer than {MAX_ID_LENGTH} characters")
    return text


@dataclass(slots=True)
class Deal:
    """A deal's last known values: CRMs send changes only, but a win must carry the amount of the latest change.

    `account_id` is the account its canonical events carry (None while no change has named one).
    """

    account_id: str | None = None
    amount: float | int | None = None
    currency: str | None = None
    outcome: str | None = None  # WON, LOST, or None while open

    def settle(self, outcome: str | None) -> bool:
        """Record the closed outcome (None = open); True when the deal newly became won or lost.

        A repeat of the same outcome is no new close; a close after a re-open is, as the CRM reports it.
        """
        closed = outcome is not None and outcome != self.outcome
        self.outcome = outcome
        return closed


def event(kind: str, event_id: str, occurred_at: int, account_id: str, **fields: Any) -> CanonicalEvent:
    """A canonical SPEC §1 event; fields that are None are left out (absent, never null)."""
    doc: CanonicalEvent = {"event_id": event_id, "type": kind, "occurred_at": occurred_at, "account_id": account_id}
    doc.update((name, value) for name, value in fields.items() if value is not None)
    return doc


def opportunity_created(event_id: str, occurred_at: int, opportunity_id: str, deal: Deal) -> CanonicalEvent:
    """An opportunity with its last known amount (0 when none is known: the SPEC requires one)."""
    return event(
        "opportunity.created",
        event_id,
        occurred_at,
        _account(deal, opportunity_id),
        opportunity_id=opportunity_id,
        amount=0 if deal.amount is None else deal.amount,
        currency=deal.currency,
    )


def opportunity_closed(
    event_id: str, occurred_at: int, opportunity_id: str, deal: Deal, reason: str | None = None
) -> CanonicalEvent:
    """`opportunity.won` with the last known amount (absent when unknown, so RevPulse's default applies), or lost."""
    if deal.outcome == WON:
        return event(
            "opportunity.won",
            event_id,
            occurred_at,
            _account(deal, opportunity_id),
            opportunity_id=opportunity_id,
            amount=deal.amount,
            currency=None if deal.amount is None else deal.currency,
        )
    return event(
        "opportunity.lost",
        event_id,
        occurred_at,
        _account(deal, opportunity_id),
        opportunity_id=opportunity_id,
        reason=reason,
    )


def _account(deal: Deal, opportunity_id: str) -> str:
    if deal.account_id is None:
        raise Unmappable(f"account unknown: no change seen so far links opportunity {opportunity_id} to an account")
    return deal.account_id
