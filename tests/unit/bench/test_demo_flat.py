"""The long-running demo's figures: slopes after the warm-up, the demo's processes, the tables."""

from __future__ import annotations

import pytest

from bench.demo_flat import (
    MEMORY_FIGURES,
    listener,
    markdown,
    memory_table,
    process_of,
    slope,
    summarize,
    topic_table,
    trend,
)

MIB = 2**20
KEYS = [key for key, _ in MEMORY_FIGURES]


def test_slope_is_the_least_squares_fit() -> None:
    assert slope([(0.0, 1.0), (1.0, 3.0), (2.0, 5.0)]) == 2.0
    assert slope([(0.0, 0.0), (1.0, 1.0), (2.0, 0.0), (3.0, 1.0)]) == pytest.approx(0.2)
    assert slope([(5.0, 1.0)]) == 0.0 and slope([(1.0, 1.0), (1.0, 2.0)]) == 0.0


SAMPLES = [
    {"t": 0.0, "x": 0},
    {"t": 1800.0, "x": 500},  # warm-up
    {"t": 3600.0, "x": 600},
    {"t": 5400.0, "x": 650},
    {"t": 7200.0, "x": 700},
]


def test_trend_after_the_warm_up_and_over_the_last_half() -> None:
    figures = trend(SAMPLES, "x", warmup=1800.0)
    assert figures["at_warmup_end"] == 500.0 and figures["at_end"] == 700.0 and figures["peak"] == 700.0
    # after the warm-up: 500, 600, 650, 700 at 0.5, 1, 1.5, 2 h: least squares 130/h
    assert figures["per_hour"] == pytest.approx(130.0)
    # the last half (t ≥ 3600 s): 600, 650, 700 at 1, 1.5, 2 h
    assert figures["late_per_hour"] == pytest.approx(100.0)


def test_the_demos_processes_are_told_apart_by_their_command_lines() -> None:
    broker = ["/x/tansu", "broker", "--listener-url", "tcp://127.0.0.1:40123", "--advertised-listener-url", "u"]
    worker = ["/venv/bin/python", "-m", "revpulse.cli", "worker"]
    assert process_of(broker, "broker") and not process_of(broker, "worker")
    assert process_of(worker, "worker") and not process_of(worker, "broker")
    assert listener(broker) == "127.0.0.1:40123"


def test_summary_and_tables() -> None:
    samples = [
        {
            "t": float(t),
            "broker_rss": (100 + t // 60) * MIB,
            "broker_pss": (90 + t // 60) * MIB,
            "worker_rss": 200 * MIB,
            "worker_own_pss": 170 * MIB,
            "worker_pss": 180 * MIB,
            "events": 1000 * t,
            "broker_cpu": 0.5 * t,
            "worker_cpu": 0.25 * t,
        }
        for t in range(0, 3601, 600)
    ]
    # The topics are read apart, seldom: at 0, 20 and 40 minutes, then at the end.
    topic_samples = [
        {"t": float(t), "read_seconds": 5.0 + t / 600, "topics": {"p-snapshots": {"records": 2 * t, "bytes": 1000 * t}}}
        for t in (0, 1200, 2400, 3600)
    ]
    roles = {"p-snapshots": "internal: snapshots"}
    result = summarize(samples, topic_samples, roles, minutes=60.0, warmup=10.0, rate=200.0, interval=600.0)
    assert result["events_per_second_after_warmup"] == 1000.0
    assert result["memory"]["broker_rss"]["per_hour"] == pytest.approx(60 * MIB)
    assert result["memory"]["worker_pss"]["per_hour"] == pytest.approx(0.0)
    memory = memory_table(result["memory"]).splitlines()
    assert memory[2] == "| broker RSS | 110 | 160 | 160 | 60 | 60 |"
    assert memory[5] == "| worker PSS (the process alone) | 170 | 170 | 170 | 0 | 0 |"
    assert memory[6] == "| worker PSS (copies incl.) | 180 | 180 | 180 | 0 | 0 |"
    row = "| p-snapshots | internal: snapshots | 7,200 | 3.6 | 3.6 | 7,200 |"
    assert topic_table(result["topics"]).splitlines()[2] == row
    assert result["topic_reads"] == [(0.0, 5.0), (1200.0, 7.0), (2400.0, 9.0), (3600.0, 11.0)]
    text = markdown(result)
    assert "Topics read 4 times; the longest read took 11.0 s." in text
    assert "CPU after the warm-up (cores; over the last half): broker 0.50 (0.50), worker 0.25 (0.25)." in text


def test_no_completed_read_of_the_topics_leaves_the_memory_figures() -> None:
    samples = [
        {"t": float(t), **dict.fromkeys(KEYS, MIB), "events": t, "broker_cpu": 1.0, "worker_cpu": 1.0}
        for t in (0, 60, 120)
    ]
    result = summarize(samples, [], {"p-shards": "internal"}, minutes=2.0, warmup=1.0, rate=1.0, interval=60.0)
    assert result["topics"] == {} and result["topic_reads"] == []
    assert result["memory"]["broker_rss"]["at_end"] == MIB and result["events_per_second_after_warmup"] == 1.0
