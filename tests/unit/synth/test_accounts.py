"""Tests of the account base: segments and their changes."""

from __future__ import annotations

from collections import defaultdict
from typing import Any


def test_segments(unique: list[dict[str, Any]]) -> None:
    carried: dict[str, set[str]] = defaultdict(set)
    accounts: set[str] = set()
    for ev in unique:
        if "account_id" in ev:
            accounts.add(ev["account_id"])
        if ev.get("segment") and "account_id" in ev:
            carried[ev["account_id"]].add(ev["segment"])
    values = set().union(*carried.values())
    assert {"smb", "mid_market", "enterprise", "startup"} <= values
    assert len(accounts - set(carried)) >= 3  # accounts never carrying a segment → unknown
    changed = [a for a, segs in carried.items() if len(segs) > 1]
    assert changed  # account.updated changing a segment
    updates = [ev for ev in unique if ev["type"] == "account.updated"]
    assert any("segment" in ev for ev in updates) and any("segment" not in ev for ev in updates)
