"""Tests of the sales funnel: lead stages, opportunities, wins and losses."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from tests.unit.synth.checks import STAGES


def test_funnel(unique: list[dict[str, Any]]) -> None:
    stages: dict[str, list[str]] = defaultdict(list)
    source: dict[str, Any] = {}
    for ev in unique:
        if ev["type"] == "lead.created":
            source[ev["lead_id"]] = ev.get("source")
            stages[ev["lead_id"]].append("lead")
        elif ev["type"] == "lead.stage_changed":
            stages[ev["lead_id"]].append(ev["stage"])
    assert {s for seq in stages.values() for s in seq} == STAGES
    assert any("sql" in seq and "mql" not in seq and source.get(lid) == "outbound" for lid, seq in stages.items())
    assert any(seq[:3] == ["lead", "mql", "sql"] for seq in stages.values())
    assert len({v for v in source.values() if v}) >= 6
    created = [ev for ev in unique if ev["type"] == "opportunity.created"]
    with_lead = sum(1 for ev in created if ev.get("lead_id"))
    assert 0.5 * len(created) < with_lead < len(created)
    won = [ev for ev in unique if ev["type"] == "opportunity.won"]
    lost = [ev for ev in unique if ev["type"] == "opportunity.lost"]
    assert any(ev.get("amount") is None for ev in won) and any(ev.get("amount") for ev in won)
    assert any(ev.get("reason") for ev in lost)
    assert 0.15 < len(won) / (len(won) + len(lost)) < 0.5
    known = {ev["opportunity_id"] for ev in created}
    assert any(ev["opportunity_id"] not in known for ev in won + lost)  # opened before the stream
