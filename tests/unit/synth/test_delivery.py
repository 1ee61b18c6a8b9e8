"""Tests of the delivery: event budgets and spans, late deliveries, duplicates, laziness, the live stream."""

from __future__ import annotations

import inspect
import itertools
import json
import math
import tracemalloc
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from revpulse.synth.config import SynthConfig, occurred_at_ms, seconds_until_due
from revpulse.synth.delivery import generate, live
from tests.unit.synth.checks import CONFIG, DAY_MS, N_EVENTS, Stream, check_event


def test_exact_count_and_span(stream: Stream) -> None:
    assert len(stream) == N_EVENTS
    start = occurred_at_ms(CONFIG.start.isoformat())
    end = start + CONFIG.days * DAY_MS
    times = [occurred_at_ms(ev["occurred_at"]) for _, ev in stream]
    assert min(times) >= start and max(times) < end
    # the N events span the whole range, not just its beginning
    assert min(times) < start + DAY_MS
    assert max(times) > end - DAY_MS
    per_week = Counter((t - start) // (7 * DAY_MS) for t in times)
    assert len(per_week) == math.ceil(CONFIG.days / 7)
    assert min(per_week.values()) > N_EVENTS / CONFIG.days * 2


def test_small_and_natural_streams() -> None:
    with pytest.raises(ValueError):
        list(generate(CONFIG, events=-1))
    assert list(generate(CONFIG, events=0)) == []
    assert len(list(generate(CONFIG, events=100))) == 100
    cfg = SynthConfig(accounts=40, days=3, seed=3)
    events = list(generate(cfg))
    start = occurred_at_ms(cfg.start.isoformat())
    assert events
    assert all(start <= occurred_at_ms(ev["occurred_at"]) < start + 3 * DAY_MS for _, ev in events)
    tiny = list(generate(SynthConfig(accounts=1, days=1, currencies={}), events=500))
    assert len(tiny) == 500
    assert all("EUR" not in json.dumps(ev) for _, ev in tiny)


def test_ids_unique_except_duplicates(stream: Stream) -> None:
    first: dict[str, dict[str, Any]] = {}
    for _, ev in stream:
        if ev["event_id"] in first:
            assert first[ev["event_id"]] == ev  # re-sent as is
            assert first[ev["event_id"]] is not ev
        else:
            first[ev["event_id"]] = ev
    counts = Counter(ev["event_id"] for _, ev in stream)
    assert max(counts.values()) == 2


def test_late_and_duplicate_rates(stream: Stream) -> None:
    seen: set[str] = set()
    latest = -1
    late = dups = firsts = 0
    max_lateness = 0
    for _, ev in stream:
        t = occurred_at_ms(ev["occurred_at"])
        if latest >= 0:
            max_lateness = max(max_lateness, latest - t)
        if ev["event_id"] in seen:
            dups += 1
        else:
            seen.add(ev["event_id"])
            firsts += 1
            late += t < latest
        latest = max(latest, t)
    assert late / firsts == pytest.approx(CONFIG.late_fraction, rel=0.2)
    assert dups / firsts == pytest.approx(CONFIG.duplicate_fraction, rel=0.35)
    assert 0 < max_lateness < 3 * DAY_MS  # within 3 days of lateness: never too_late
    # no late delivery, no duplicate: the stream is in time order
    ordered = list(generate(SynthConfig(late_fraction=0, duplicate_fraction=0), events=5_000))
    times = [occurred_at_ms(ev["occurred_at"]) for _, ev in ordered]
    assert times == sorted(times)
    assert len({ev["event_id"] for _, ev in ordered}) == len(ordered)


def test_late_rate_follows_config() -> None:
    cfg = SynthConfig(late_fraction=0.1, duplicate_fraction=0.05, seed=5)
    seen: set[str] = set()
    latest, late, dups = -1, 0, 0
    events = list(generate(cfg, events=20_000))
    for _, ev in events:
        t = occurred_at_ms(ev["occurred_at"])
        if ev["event_id"] in seen:
            dups += 1
        else:
            seen.add(ev["event_id"])
            late += t < latest
        latest = max(latest, t)
    assert late / len(seen) == pytest.approx(0.1, rel=0.1)
    assert dups / len(seen) == pytest.approx(0.05, rel=0.15)


def test_generator_is_lazy_and_bounded() -> None:
    it = generate(CONFIG, events=50_000_000)
    assert inspect.isgenerator(it)
    assert len(list(itertools.islice(it, 1_000))) == 1_000
    tracemalloc.start()
    try:
        for _ in generate(CONFIG, events=60_000):
            pass
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8_000_000  # ~2 MB at any length; a list of these 60k events would take ~30 MB


def test_an_event_budget_is_met_exactly() -> None:
    assert sum(1 for _ in generate(CONFIG, events=200_000)) == 200_000


def test_live() -> None:
    t0 = datetime(2025, 5, 1, 10, 30, 15, tzinfo=UTC)
    t0_ms = occurred_at_ms(t0.isoformat())
    cfg = SynthConfig(accounts=60, seed=2)
    stream = live(cfg, rate=3.0, now=lambda: t0, backfill_days=3)
    backfill = realtime = 0
    latest = -1
    events = []
    for _, ev in stream:
        check_event(ev, cfg.currencies)
        t = occurred_at_ms(ev["occurred_at"])
        assert t >= t0_ms - 3 * DAY_MS
        assert latest - t < 3 * DAY_MS
        latest = max(latest, t)
        if t < t0_ms:
            backfill += 1
            assert realtime == 0 or seconds_until_due(ev, t0) == 0
        else:
            realtime += 1
            events.append(ev)
        if t >= t0_ms + 3_600_000:
            break
    assert backfill > 500
    assert realtime == pytest.approx(3.0 * 3600, rel=0.1)
    assert seconds_until_due(events[-1], t0) == pytest.approx(3600, abs=5)
    assert seconds_until_due(events[-1], t0 + timedelta(hours=2)) == 0
    # a restarted demo never reuses event ids
    later = live(cfg, rate=3.0, now=lambda: t0 + timedelta(minutes=5))
    ids = {ev["event_id"] for _, ev in itertools.islice(later, 200)}
    assert not ids & {ev["event_id"] for ev in events}
    with pytest.raises(ValueError):
        live(cfg, rate=0, now=lambda: t0)
