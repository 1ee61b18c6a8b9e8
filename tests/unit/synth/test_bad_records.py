"""Tests of the bad records: every dead-letter reason of SPEC §1, as SPEC §1 classifies them."""

from __future__ import annotations

from revpulse.synth.bad_records import bad_record_cases, bad_records
from tests.unit.synth.checks import CONFIG, REASONS, TOPICS, classify


def test_bad_records_cover_every_reason() -> None:
    cases = bad_record_cases()
    assert [(t, raw) for t, raw, _ in cases] == bad_records()
    reasons: set[str] = set()
    arrays = 0
    for topic, raw, expected in cases:
        assert topic in TOPICS.values()
        assert classify(raw, CONFIG.currencies) == expected, raw
        reasons |= {r for r in expected if r is not None}
        if raw.lstrip().startswith(b"["):
            arrays += 1
            assert None in expected and any(r is not None for r in expected)
    assert reasons == REASONS
    assert arrays == 1
    # each kind of invalid_event named by the brief is there
    raws = b"\n".join(raw for _, raw, _ in cases)
    for needle in (b'"amount":"1200.00"', b'"stage":"won"', b"2024-01-02 12:00:00", b'"type":17', b"42"):
        assert needle in raws
