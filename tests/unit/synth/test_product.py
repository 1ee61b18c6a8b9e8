"""Tests of the product events: signups, trials, activations and usage."""

from __future__ import annotations

from collections import Counter
from typing import Any


def test_product(unique: list[dict[str, Any]]) -> None:
    product = [ev for ev in unique if ev["type"].startswith("product.")]
    counts = Counter(ev["type"] for ev in product)
    assert counts["product.signup"] > counts["product.activated"] > 0
    assert counts["product.trial_started"] > 0
    usage = [ev for ev in product if ev["type"] == "product.usage"]
    assert len({ev["account_id"] for ev in usage}) > 100
    assert all(isinstance(ev.get("quantity", 1), int) for ev in usage)
