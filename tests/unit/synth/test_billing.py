"""Tests of billing: prices, renewals, churn, reactivation, expansion and contraction."""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

from revpulse.synth.config import REPORTING_CURRENCY
from tests.unit.synth.checks import INTERVALS


def test_billing(unique: list[dict[str, Any]]) -> None:
    subs = [ev for ev in unique if ev["type"].startswith("subscription.")]
    starts = [ev for ev in subs if ev["type"] == "subscription.started"]
    assert any("mrr" in ev for ev in starts) and any("amount" in ev for ev in starts)
    assert {ev["interval"] for ev in subs if "interval" in ev} == INTERVALS
    assert any(ev.get("interval_count", 1) > 1 for ev in subs)
    assert any("mrr" in ev and "amount" in ev for ev in subs)  # mrr wins
    renewed = [ev for ev in subs if ev["type"] == "subscription.renewed"]
    assert any("mrr" in ev or "amount" in ev for ev in renewed)
    assert any("mrr" not in ev and "amount" not in ev for ev in renewed)
    assert any(ev.get("currency") == "EUR" for ev in subs)
    assert any(ev.get("currency") == REPORTING_CURRENCY for ev in subs)
    # replay the subscription states: several per account, churn, reactivation, expansion and contraction
    active: dict[str, set[str]] = defaultdict(set)
    mrr: dict[tuple[str, str], float] = {}
    paid_before: set[str] = set()
    months = {"week": 12 / 52, "month": 1.0, "quarter": 3.0, "year": 12.0}
    kinds: Counter[str] = Counter()
    max_subs = 0
    for ev in subs:
        acct, key = ev["account_id"], (ev["account_id"], ev["subscription_id"])
        before = len(active[acct])
        if ev["type"] == "subscription.canceled":
            active[acct].discard(ev["subscription_id"])
            kinds["churn" if before and not active[acct] else "cancel"] += 1
            continue
        if ev.get("mrr") is not None:
            new = ev["mrr"]
        elif ev.get("amount") is not None:
            new = ev["amount"] / (months[ev["interval"]] * ev.get("interval_count", 1))
        else:
            continue
        old = mrr.get(key)
        mrr[key] = new
        active[acct].add(ev["subscription_id"])
        if not before:
            kinds["reactivation" if acct in paid_before else "new"] += 1
        elif old is not None and new > old:
            kinds["expansion"] += 1
        elif old is not None and new < old:
            kinds["contraction"] += 1
        paid_before.add(acct)
        max_subs = max(max_subs, len(active[acct]))
    assert max_subs >= 2
    assert all(kinds[k] > 0 for k in ("new", "churn", "reactivation", "expansion", "contraction"))
    assert kinds["expansion"] > kinds["contraction"]
