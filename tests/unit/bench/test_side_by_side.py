"""bench.side_by_side: the cores each round pins, the rate it reads, and the line it prints."""

from __future__ import annotations

from bench.side_by_side import Round, cores, pipeline_rate


def test_the_checkouts_swap_cores_every_round() -> None:
    assert cores(3, available=2) == [(0, 1), (1, 0), (0, 1)]
    assert cores(2, available=1) == [(0, 0), (0, 0)]


def test_the_pipeline_rate_is_read_from_the_in_process_json() -> None:
    output = b'{"decode":{"events":10,"seconds":0.001,"events_per_second":10000},'
    output += b'"pipeline":{"events":10,"seconds":0.5,"events_per_second":20}}\n'
    assert pipeline_rate(output) == 20.0


def test_a_round_prints_both_rates_and_the_gain() -> None:
    measured = Round(cores=(1, 0), rates=(20_000.0, 23_000.0))
    assert measured.gain == 23_000 / 20_000 - 1
    assert measured.line() == ("A    20,000 events/s (core 1)   B    23,000 events/s (core 0)   B/A +15.0%")
