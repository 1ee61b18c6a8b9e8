"""The global rollup: sums of shards' absolute partial values, idempotent, and reset on a change of hands."""

from __future__ import annotations

from revpulse.streams import history
from revpulse.streams.rollup import Pending, Rollup
from revpulse.streams.wire import CUT, FINAL, RESET, SEGMENT_SEEN, WATERMARK, Point


def test_sums_shards_and_reapplying_changes_nothing() -> None:
    rollup = Rollup()
    rollup.update(0, {("signups", "all", 10): 3, (WATERMARK, "", 0): 500})
    rollup.update(1, {("signups", "all", 10): 4, (WATERMARK, "", 0): 900, (SEGMENT_SEEN, "other", 0): 1})
    rollup.update(0, {("signups", "all", 10): 3})
    assert rollup.ledger.get(("signups", "all", 10)) == 7
    assert rollup.watermark == 900 and rollup.segments_seen == {"other"}
    rollup.update(1, {("signups", "all", 10): 0})
    assert rollup.ledger.get(("signups", "all", 10)) == 3


def test_reset_forgets_what_the_previous_owner_said() -> None:
    rollup = Rollup()
    rollup.update(2, {("signups", "all", 10): 5, ("signups", "all", 11): 1})
    rollup.update(3, {("signups", "all", 10): 2})
    # the new owner's state has nothing at hour 11: only a reset can say so
    rollup.update(2, {(RESET, "", 0): 1, ("signups", "all", 10): 6})
    assert rollup.ledger.get(("signups", "all", 10)) == 8
    assert rollup.ledger.get(("signups", "all", 11)) == 0


def test_version_moves_only_when_something_changed() -> None:
    rollup = Rollup()
    rollup.update(0, {("signups", "all", 10): 3, (WATERMARK, "", 0): 500, (SEGMENT_SEEN, "smb", 0): 1})
    assert rollup.version == 1
    # the echo of what was taken, an empty batch, an older watermark, a segment already seen, a reset of nothing
    rollup.update(0, {("signups", "all", 10): 3})
    rollup.update(0, {})
    rollup.update(0, {(WATERMARK, "", 0): 400, (SEGMENT_SEEN, "smb", 0): 1})
    rollup.update(1, {(RESET, "", 0): 1})
    assert rollup.version == 1
    for update in ({("signups", "all", 10): 4}, {(WATERMARK, "", 0): 600}, {(SEGMENT_SEEN, "other", 0): 1}):
        rollup.update(0, update)
    rollup.update(0, {(RESET, "", 0): 1})
    assert rollup.version == 5


SIGNUPS_1D = history.WINDOW_KEY[("signups", "1d")]


def test_a_final_point_is_held_once_and_survives_a_change_of_hands() -> None:
    rollup = Rollup()
    rollup.update(0, {(SIGNUPS_1D, "all", 240): 3, (SIGNUPS_1D, "all", 264): 5})
    rollup.update(1, {(SIGNUPS_1D, "all", 240): 4})
    rollup.update(0, {(FINAL, "", 0): 240})
    assert rollup.points[240] == {(SIGNUPS_1D, "all"): 7}
    # shard 0's cell of the final point is in the sum only
    assert rollup.shard_cells(0) == {(SIGNUPS_1D, "all", 264): 5}
    # a copy of the final cell (a replay, a new owner) changes nothing; a revision of it comes as an overlay
    rollup.update(0, {(SIGNUPS_1D, "all", 240): 99, (history.OVERLAY[SIGNUPS_1D], "all", 240): 2})
    assert rollup.points[240] == {(SIGNUPS_1D, "all"): 9}
    # a new owner resets the shard: the final point stays, the rest is what the new owner says (overlay included)
    rollup.update(0, {(RESET, "", 0): 241, (SIGNUPS_1D, "all", 264): 6, (history.OVERLAY[SIGNUPS_1D], "all", 240): 2})
    assert rollup.points[240] == {(SIGNUPS_1D, "all"): 9}
    assert rollup.points[264] == {(SIGNUPS_1D, "all"): 6}
    rollup.update(0, {(CUT, "", 0): 250})
    assert list(rollup.points) == [264]


def test_pending_partials_never_move_a_value_before_a_reset() -> None:
    rollup = Rollup()
    pending = Pending(rollup)
    pending.add(0, ("signups", "all", 10), 3)
    pending.add(0, ("signups", "all", 11), 1)
    pending.add(0, (RESET, "", 0), 1)
    pending.add(0, ("signups", "all", 10), 4)  # merged by key, it would land before the reset and be forgotten
    pending.apply()
    assert rollup.shard_cells(0) == {("signups", "all", 10): 4}
    assert rollup.ledger.get(("signups", "all", 10)) == 4


def test_a_point_derived_from_a_shards_live_cells_has_the_segments_it_saw() -> None:
    """A shard whose watermark has not passed midnight D saw all it saw by D; one that captured D says itself
    what it had seen by then (here nothing: it saw `other` after D)."""
    day = 20_000 * history.DAY_US
    hour = history.midnight_hour(day)
    rollup = Rollup()
    rollup.update(0, {(WATERMARK, "", 0): day, ("signups", "unknown", hour - 5): 1, (SEGMENT_SEEN, "unknown", 0): 1})
    rollup.update(1, {(WATERMARK, "", 0): day + 1, (history.CAPTURED, "", hour): 1, (SEGMENT_SEEN, "other", 0): 1})
    point = rollup.point(hour)
    assert point[(history.SEEN, "unknown")] == 1
    assert (history.SEEN, "other") not in point


def test_a_point_record_is_the_shards_whole_segment_there_and_follows_what_came_before() -> None:
    rollup = Rollup()
    pending = Pending(rollup)
    mrr, signups = history.SNAPSHOT_KEY["mrr_now"], history.WINDOW_KEY[("signups", "7d")]
    rollup.update(0, {(mrr, "smb", 240): 3, (signups, "smb", 240): 2, (signups, "all", 240): 9})
    rollup.update(1, {(signups, "smb", 240): 1})
    pending.add(0, (mrr, "smb", 240), 4)  # older than the point record: it must not outlive it
    pending.add_record(Point(0, "smb", 240, {signups: 5}))
    pending.apply()
    # shard 0's smb cells there are the record's (mrr gone); its `all` cell and shard 1's stay
    assert rollup.shard_cells(0) == {(signups, "smb", 240): 5, (signups, "all", 240): 9}
    assert rollup.points[240] == {(signups, "smb"): 6, (signups, "all"): 9}
    pending.add_record(Point(0, "all", 240, {}))  # a tombstone: none left
    pending.apply()
    assert rollup.points[240] == {(signups, "smb"): 6}
