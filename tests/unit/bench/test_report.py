"""The throughput tables: the long part's (no Faust baseline, the Quix Streams peer) as the main part's."""

from __future__ import annotations

from typing import Any

from bench.report import markdown


def _rate(events: int, seconds: float) -> dict[str, Any]:
    return {"events": events, "seconds": seconds, "events_per_second": round(events / seconds)}


def _part(peer: dict[str, Any]) -> dict[str, Any]:
    return {
        "dataset": "synth-a2500-d456-s7-e977000",
        "ceiling": _rate(977_000, 2.0),
        "quix_peer": peer,
        "revpulse_1_worker": _rate(900_000, 90.0) | {"workers": 1, "peak_rss_mb": [499.0]},
        "ratio_to_ceiling": 0.02,
        "correctness": None,
        "more_workers": [
            _rate(950_000, 50.0) | {"workers": 2, "peak_rss_mb": [300.0, 310.5], "correctness": {"ok": True}}
        ],
    }


def _results(part: dict[str, Any]) -> dict[str, Any]:
    machine = {"cpus": 2, "python": "3.11", "commit": "abc", "load_before": "0", "load_after": "0"}
    return {"started": "now", "preset": "full", "machine": machine, "long": part}


def test_the_long_part_shows_the_peer_beside_the_ceiling_and_the_worker() -> None:
    peer = {
        "version": "3.28.0",
        "aggregate": "a window",
        "events": 977_000,
        "seconds": 97.7,
        "events_per_second": 10_000,
    }
    text = markdown(_results(_part(peer)))
    assert "### Throughput — synth-a2500-d456-s7-e977000" in text
    assert "| peer: Quix Streams 3.28.0, one windowed aggregate | 10,000 | 977,000 | 0.02 | a window |" in text
    assert "| RevPulse, 1 worker, all metrics | 10,000 | 900,000 | 0.02 | peak RSS 499.0 MB |" in text
    assert (
        "| RevPulse, 2 workers, all metrics | 19,000 | 950,000 | 0.04 | 1.90× 1 worker; peak RSS 300.0 MB / 310.5 MB; "
        "metrics equal to the reference |"
    ) in text
    assert "Faust" not in text


def test_a_peer_that_did_not_run_says_why() -> None:
    text = markdown(_results(_part({"error": "CalledProcessError: no network"})))
    assert "| peer: Quix Streams | — | — |  | did not run: CalledProcessError: no network |" in text
