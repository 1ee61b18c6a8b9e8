"""The pipeline's own duties: dead letters for every unapplied event, counters, and no crash on a defect."""

from __future__ import annotations

import pytest

from revpulse.streams.engine import Engine
from tests.support.harness import Harness

SIGNUP = b'{"event_id":"%s","type":"product.signup","occurred_at":"2024-01-01T00:00:00Z","account_id":"a"}'


def test_a_defect_in_the_engine_dead_letters_the_event_and_goes_on(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = Engine.accept

    def flaky(self: Engine, topic: str, event: object) -> str:
        if getattr(event, "event_id", None) == "boom":
            raise RuntimeError("defect")
        return original(self, topic, event)  # type: ignore[arg-type]

    monkeypatch.setattr(Engine, "accept", flaky)
    harness.send_raw(b"[" + SIGNUP % b"boom" + b"," + SIGNUP % b"ok" + b"]", "product.events")
    assert [(d.reason, d.payload) for d in harness.dead] == [("processing_error", SIGNUP % b"boom")]
    assert harness.value("signups", window="1d") == 1


def test_late_event_dead_letter_keeps_the_original_record(harness: Harness) -> None:
    late = b'{"event_id":"l","type":"product.signup","occurred_at":"2023-12-01T00:00:00Z","account_id":"a"}'
    harness.send_raw(SIGNUP % b"first", "product.events")
    harness.send_raw(late, "product.events")
    assert [(d.reason, d.payload, d.topic, d.offset) for d in harness.dead] == [("too_late", late, "product.events", 1)]
    samples = {
        tuple(sorted(s.labels.items())): s.value
        for metric in harness.pipeline.registry.collect()
        if metric.name == "revpulse_events"
        for s in metric.samples
        if s.name == "revpulse_events_total"
    }
    assert samples[(("outcome", "late"), ("topic", "product.events"), ("type", "product.signup"))] == 1
    assert samples[(("outcome", "accepted"), ("topic", "product.events"), ("type", "product.signup"))] == 1


def test_no_series_before_the_first_accepted_event(harness: Harness) -> None:
    harness.send_raw(b"nope", "crm.events")
    assert harness.values() == {}
    assert harness.pipeline.as_of_text is None
