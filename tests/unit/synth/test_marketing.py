"""Tests of the marketing spend."""

from __future__ import annotations

from typing import Any


def test_spend(unique: list[dict[str, Any]]) -> None:
    spend = [ev for ev in unique if ev["type"] == "marketing.spend"]
    assert any("segment" in ev for ev in spend) and any("segment" not in ev for ev in spend)
    assert "account_id" not in spend[0]
