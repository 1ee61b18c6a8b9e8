"""The stream the synthetic business's tests share: generated once for the package."""

from __future__ import annotations

from typing import Any

import pytest

from revpulse.synth.config import occurred_at_ms
from revpulse.synth.delivery import generate
from tests.unit.synth.checks import CONFIG, N_EVENTS, Stream


@pytest.fixture(scope="package")
def stream() -> Stream:
    return list(generate(CONFIG, events=N_EVENTS))


@pytest.fixture(scope="package")
def unique(stream: Stream) -> list[dict[str, Any]]:
    """First delivery of every event, sorted by occurred_at (ties: delivery order)."""
    seen: set[str] = set()
    out: list[tuple[int, int, dict[str, Any]]] = []
    for i, (_, ev) in enumerate(stream):
        if ev["event_id"] not in seen:
            seen.add(ev["event_id"])
            out.append((occurred_at_ms(ev["occurred_at"]), i, ev))
    out.sort(key=lambda t: (t[0], t[1]))
    return [ev for _, _, ev in out]
