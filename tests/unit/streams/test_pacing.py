"""Which input partitions a router pauses to keep them in step in event time (`pacing.paused`)."""

from __future__ import annotations

from revpulse.streams.pacing import paused

HOUR = 3600 * 1_000_000
LATEST = {"crm/0": 10 * HOUR, "billing/0": 12 * HOUR, "product/0": 9 * HOUR + HOUR // 2}


def test_partitions_more_than_the_slack_ahead_of_the_earliest_with_records_left_pause() -> None:
    assert paused(LATEST, {"crm/0", "billing/0", "product/0"}, HOUR) == {"billing/0"}
    # product read to its end: it holds nothing back, crm is the floor now.
    assert paused(LATEST, {"crm/0", "billing/0"}, HOUR) == {"billing/0"}
    assert paused(LATEST, {"billing/0"}, HOUR) == set()


def test_a_partition_without_a_valid_event_yet_neither_holds_back_nor_is_held() -> None:
    assert paused(LATEST, {"marketing/0", "billing/0"}, HOUR) == set()
    assert paused({}, {"crm/0"}, HOUR) == set()


def test_the_earliest_partition_is_never_paused() -> None:
    behind = set(LATEST)
    floor = min(behind, key=LATEST.__getitem__)
    assert floor not in paused(LATEST, behind, 0)
