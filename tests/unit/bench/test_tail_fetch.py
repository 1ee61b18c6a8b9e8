"""The tail-fetch bench's lines."""

from __future__ import annotations

from bench.tail_fetch import Step


def test_a_step_reads_as_records_then_both_times() -> None:
    assert Step(1_200_012, 12.34, 62.7).line() == " 1,200,012 records: the last 100 in   12.3 ms, one more in   62.7 ms"
