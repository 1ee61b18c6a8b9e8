"""SPEC §1's event rules, re-stated independently of the worker's own validation code, and the shared test config."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from revpulse.schemas.models import EVENT_TYPES
from revpulse.synth.config import REPORTING_CURRENCY, SynthConfig

Stream = list[tuple[str, dict[str, Any]]]

CONFIG = SynthConfig()
N_EVENTS = 30_000
DAY_MS = 86_400_000
STAGES = frozenset({"lead", "mql", "sql", "opportunity", "customer", "disqualified"})
INTERVALS = frozenset({"week", "month", "quarter", "year"})
TOPICS = {"lead": "crm.events", "opportunity": "crm.events", "account": "crm.events"}
TOPICS |= {"subscription": "billing.events", "product": "product.events", "marketing": "marketing.events"}
RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})")
REASONS = {"invalid_json", "invalid_event", "unknown_type", "unknown_currency"}


class Invalid(Exception):
    """An event SPEC §1 rejects; ``args[0]`` is the dead-letter reason."""


def _present(ev: Mapping[str, Any], key: str) -> bool:
    return ev.get(key) is not None  # null means absent


def _check_id(ev: Mapping[str, Any], key: str, *, required: bool = True) -> None:
    if not _present(ev, key):
        if required:
            raise Invalid("invalid_event", f"missing {key}")
        return
    if not isinstance(ev[key], str) or not ev[key]:
        raise Invalid("invalid_event", f"{key} must be a non-empty string")


def _check_money(ev: Mapping[str, Any], key: str, *, required: bool) -> None:
    if not _present(ev, key):
        if required:
            raise Invalid("invalid_event", f"missing {key}")
        return
    v = ev[key]
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or v < 0:
        raise Invalid("invalid_event", f"{key} must be a finite number >= 0")


def _check_price(ev: Mapping[str, Any], *, required: bool) -> None:
    """`mrr`, or `amount` + `interval` (+ `interval_count`); `required` for started/updated."""
    has_mrr = _present(ev, "mrr")
    if has_mrr:
        _check_money(ev, "mrr", required=True)
    if _present(ev, "amount"):
        _check_money(ev, "amount", required=True)
    if _present(ev, "interval") and ev["interval"] not in INTERVALS:
        raise Invalid("invalid_event", "bad interval")
    wants_amount = required or _present(ev, "amount") or _present(ev, "interval")
    if not has_mrr and wants_amount and not (_present(ev, "amount") and _present(ev, "interval")):
        raise Invalid("invalid_event", "a price needs mrr, or amount + interval")
    if _present(ev, "interval_count"):
        n = ev["interval_count"]
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise Invalid("invalid_event", "bad interval_count")


def check_event(ev: Any, currencies: Mapping[str, float]) -> None:
    """Raise :class:`Invalid` with the first reason of SPEC §1 that applies, or return for a valid event."""
    if not isinstance(ev, dict) or not isinstance(ev.get("type"), str):
        raise Invalid("invalid_event", "not an object with a string type")
    etype = ev["type"]
    if etype not in EVENT_TYPES:
        raise Invalid("unknown_type", etype)
    _check_id(ev, "event_id")
    ts = ev.get("occurred_at")
    if isinstance(ts, bool) or not isinstance(ts, int | str):
        raise Invalid("invalid_event", "bad occurred_at")
    if isinstance(ts, str):
        if not RFC3339.fullmatch(ts):
            raise Invalid("invalid_event", "bad occurred_at")
        try:
            datetime.fromisoformat(ts)
        except ValueError as exc:
            raise Invalid("invalid_event", "bad occurred_at") from exc
    marketing = etype.startswith("marketing.")
    _check_id(ev, "account_id", required=not marketing)
    for key in ("segment", "source", "reason", "name", "user_id", "feature"):
        if _present(ev, key) and not isinstance(ev[key], str):
            raise Invalid("invalid_event", f"{key} must be a string")
    if etype == "lead.created":
        _check_id(ev, "lead_id")
    elif etype == "lead.stage_changed":
        _check_id(ev, "lead_id")
        if ev.get("stage") not in STAGES:
            raise Invalid("invalid_event", "bad stage")
    elif etype == "opportunity.created":
        _check_id(ev, "opportunity_id")
        _check_id(ev, "lead_id", required=False)
        _check_money(ev, "amount", required=True)
    elif etype == "opportunity.won":
        _check_id(ev, "opportunity_id")
        _check_money(ev, "amount", required=False)
    elif etype == "opportunity.lost":
        _check_id(ev, "opportunity_id")
    elif etype.startswith("subscription."):
        _check_id(ev, "subscription_id")
        if etype in ("subscription.started", "subscription.updated"):
            _check_price(ev, required=True)
        elif etype == "subscription.renewed":
            _check_price(ev, required=False)
    elif etype == "marketing.spend":
        _check_id(ev, "channel")
        _check_money(ev, "amount", required=True)
    elif _present(ev, "quantity"):
        q = ev["quantity"]
        if isinstance(q, bool) or not isinstance(q, int | float):
            raise Invalid("invalid_event", "bad quantity")
    if _present(ev, "currency"):
        code = ev["currency"]
        if not isinstance(code, str) or not re.fullmatch(r"[A-Z]{3}", code):
            raise Invalid("invalid_event", "bad currency")
        if code != REPORTING_CURRENCY and code not in currencies:
            raise Invalid("unknown_currency", code)


def classify(raw: bytes, currencies: Mapping[str, float]) -> tuple[str | None, ...]:
    """Outcome of a raw record: one reason (or None = accepted) per event, per SPEC §1."""
    try:
        value = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return ("invalid_json",)
    elements = value if isinstance(value, list) else [value]
    outcomes: list[str | None] = []
    for element in elements:
        try:
            check_event(element, currencies)
        except Invalid as exc:
            outcomes.append(exc.args[0])
        else:
            outcomes.append(None)
    return tuple(outcomes)
