"""The history part: ratios to the shortest span, the targets at the longest, the late rate and the tables; and
its data: a fixed account base with at least two usage events per account a day."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest

from bench.fixed_book import FixedBook, book_start, generate_fixed
from bench.growth import Target, markdown, median_row, rate_after, ratios, verdicts
from revpulse.synth.config import SynthConfig, occurred_at_ms, to_ms


def _row(days: int, pss: float, state: float, snap: int, eps: int, late: int, restart: float) -> dict[str, object]:
    return {
        "days": days,
        "events": days * 2_100,
        "peak_pss_mib": pss,
        "state_pss_mib": state,
        "peak_worker_pss_mib": pss - 10,
        "snapshot_bytes_per_account": snap,
        "snapshot_topic": {"records": 10, "bytes": 2_500_000, "highwater": 10},
        "partials_topic": {"records": 50, "bytes": 1_000_000, "highwater": 50},
        "events_per_second": eps,
        "late_events_per_second": late,
        "restart_seconds": restart,
    }


ROWS = [
    _row(90, 200.0, 100.0, 4_000, 30_000, 32_000, 8.0),
    _row(180, 240.0, 140.0, 4_400, 27_000, 30_000, 9.0),
    _row(720, 260.0, 160.0, 6_000, 24_000, 20_000, 10.5),
]


def test_a_span_read_three_times_is_the_median_of_each_figure() -> None:
    runs = [
        _row(90, 244.5, 190.0, 5_855, 25_940, 22_800, 9.26),
        _row(90, 316.1, 262.0, 5_855, 28_826, 28_967, 9.12),
        _row(90, 283.0, 229.0, 5_857, 25_358, 24_498, 9.31),
    ]
    runs[1]["snapshot_topic"] = {"records": 12, "bytes": 2_600_000, "highwater": 12}
    row = median_row(runs)
    assert row["peak_pss_mib"] == 283.0 and row["state_pss_mib"] == 229.0
    assert row["snapshot_bytes_per_account"] == 5_855 and isinstance(row["snapshot_bytes_per_account"], int)
    assert row["events_per_second"] == 25_940 and row["restart_seconds"] == 9.26
    assert row["snapshot_topic"] == {"records": 10, "bytes": 2_500_000, "highwater": 10}
    assert row["days"] == 90 and row["runs"] == 3
    assert row["each"]["peak_pss_mib"] == [244.5, 316.1, 283.0]
    assert row["each"].keys() == {"peak_pss_mib", "snapshot_bytes_per_account", "events_per_second", "restart_seconds"}


def test_ratios_are_to_the_shortest_span() -> None:
    [first, second, last] = ratios(ROWS)
    assert set(first.values()) == {1.0}
    assert second == {
        "peak_pss_mib": 1.2,
        "snapshot_bytes_per_account": 1.1,
        "events_per_second": 0.9,
        "restart_seconds": 1.125,
        "state_pss_mib": 1.4,
        "late_events_per_second": 0.9375,
    }
    assert last["peak_pss_mib"] == 1.3 and last["late_events_per_second"] == 0.625


def test_targets_at_the_longest_span() -> None:
    checks = {v["figure"]: (v["ratio"], v["target"], v["met"]) for v in verdicts(ROWS)}
    assert checks == {
        "peak_pss_mib": (1.3, "≤ 1.25×", False),
        "snapshot_bytes_per_account": (1.5, "≤ 1.25×", False),
        "events_per_second": (0.8, "≥ 0.8×", True),  # the bound itself is met
        "restart_seconds": (1.312, "≤ 1.25×", False),
    }


def test_a_target_bounds_from_one_side() -> None:
    assert Target("x", "x", most=1.25).met(1.25) and not Target("x", "x", most=1.25).met(1.2501)
    assert Target("x", "x", least=0.8).met(0.8) and not Target("x", "x", least=0.8).met(0.79)


def test_rate_after_takes_the_events_from_the_first_poll_past_the_fraction() -> None:
    series = [(0.0, 0), (1.0, 30), (2.0, 74), (3.0, 76), (5.0, 100)]
    assert rate_after(series, 0.75) == pytest.approx((100 - 76) / 2)
    assert rate_after(series, 0.0) == 20.0
    assert rate_after([(0.0, 5)], 0.75) == 0.0


def test_markdown_tables() -> None:
    part = {
        "accounts": 1_000,
        "idle_pss_mib": 100.0,
        "snapshot_interval": 5.0,
        "sample_interval": 0.2,
        "rows": ROWS,
        "verdicts": verdicts(ROWS),
    }
    lines = markdown(part).splitlines()
    assert lines[0] == "### Growth with history — the same 1,000 accounts, 1 worker"
    assert lines[4] == "| 90 | 189,000 | 200 | 100 | 190 | 4,000 | 2.5 | 1 | 30,000 | 32,000 | 8 |"
    assert lines[6] == "| 720 | 1,512,000 | 260 | 160 | 250 | 6,000 | 2.5 | 1 | 24,000 | 20,000 | 10.5 |"
    assert "| 720 | 1.30× | 1.60× | 1.50× | 0.80× | 0.62× | 1.31× |" in lines
    assert "| peak memory (PSS, copies included) | 1.30× | ≤ 1.25× | **no** |" in lines
    assert "| events/s | 0.80× | ≥ 0.8× | yes |" in lines
    assert lines[-1] == "Idle worker: 100 MiB PSS. Snapshots every 5 s; PSS sampled every 0.2 s."


def test_the_fixed_book_adds_no_account_and_uses_the_product_at_least_twice_a_day() -> None:
    accounts, days = 120, 20
    config = SynthConfig(accounts=accounts, days=days)
    book = FixedBook(config)
    assert len(book.accounts) == accounts  # the opening book
    list(book.events())
    assert len(book.accounts) == accounts  # none arrived
    events = {event["event_id"]: event for _, event in generate_fixed(accounts, days)}  # duplicates once
    usage = Counter(event["type"] for event in events.values())["product.usage"]
    assert usage == 2 * accounts * days
    assert {event["account_id"] for event in events.values() if "account_id" in event} <= {
        account.id for account in book.accounts
    }


def test_new_leads_addons_and_expansions_only_when_asked() -> None:
    def created(**options: bool) -> Counter[str]:
        kinds = ("lead.created", "opportunity.created", "subscription.started")
        return Counter(e["type"] for _, e in generate_fixed(300, 120, **options) if e["type"] in kinds)

    fixed, growing = created(), created(new_entities=True)
    assert all(fixed[kind] < growing[kind] for kind in growing), (fixed, growing)


def test_a_span_that_would_reach_today_starts_early_enough_to_end_in_the_past() -> None:
    today = datetime(2026, 12, 6, 14, 30, tzinfo=UTC)
    assert book_start(720, today) == datetime(2024, 1, 1, tzinfo=UTC), "synth's usual start where it fits"
    # 1,440 days and the margin before today: 2026-12-06 − 45 − 1,440 days, at midnight.
    assert book_start(1440, today) == datetime(2022, 11, 12, tzinfo=UTC)
    start = datetime(2021, 3, 1, tzinfo=UTC)
    times = [occurred_at_ms(event["occurred_at"]) for _, event in generate_fixed(20, 10, start=start)]
    assert to_ms(start) <= min(times) < to_ms(start + timedelta(days=1))
    assert max(times) < to_ms(start + timedelta(days=12))
