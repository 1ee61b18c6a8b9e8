"""History points as pure functions of event time: what a point at a literal midnight holds (values by hand), the
day-sum capture against the cell-by-cell definition, and the midnights a watermark passes."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from revpulse.streams import history
from revpulse.streams.history import DAY_US, PointView, capture, difference, midnights, state_at
from revpulse.streams.ledger import LiveCells
from revpulse.streams.point_cells import PointCells
from revpulse.streams.windows import HOUR_US

D = datetime(2024, 3, 10, tzinfo=UTC)
D_US = round(D.timestamp() * 1_000_000)
DH = D_US // HOUR_US


def hour(at: datetime) -> int:
    return round(at.timestamp() * 1_000_000) // HOUR_US


def test_a_point_holds_each_windows_flows_steps_at_t0_and_snapshots() -> None:
    cells = {
        # t0 of 1d is 2024-03-09 01:00: the slice of 00:00 that day is in 7d and longer only.
        ("leads_created", "smb", hour(datetime(2024, 3, 9, 0, tzinfo=UTC))): 1,
        ("leads_created", "smb", hour(datetime(2024, 3, 9, 1, tzinfo=UTC))): 2,
        # The slice of D itself: at capture it holds only events at D exactly, which count.
        ("leads_created", "smb", DH): 4,
        # 2024-01-01 is 69 days before D: in 90d only.
        ("leads_created", "smb", hour(datetime(2024, 1, 1, 12, tzinfo=UTC))): 8,
        # A step counts in a window whose t0 is at or after its slice.
        ("mrr_at_t0", "all", hour(datetime(2024, 3, 3, 1, tzinfo=UTC))): 100,  # t0 of 7d exactly
        ("mrr_at_t0", "all", hour(datetime(2024, 3, 9, 2, tzinfo=UTC))): 10,  # after t0 of 1d
        ("mrr_now", "all", 0): 110,
    }
    point = state_at(cells.items(), D_US)
    assert point == {
        ("h:leads_created@1d", "smb", DH): 2 + 4,
        ("h:leads_created@7d", "smb", DH): 1 + 2 + 4,
        ("h:leads_created@30d", "smb", DH): 1 + 2 + 4,
        ("h:leads_created@90d", "smb", DH): 1 + 2 + 4 + 8,
        ("h:mrr_at_t0@1d", "all", DH): 100,
        ("h:mrr_at_t0@7d", "all", DH): 100,
        ("h:mrr_now", "all", DH): 110,
    }
    view = PointView({(quantity, segment): value for (quantity, segment, _), value in point.items()})
    assert view.snapshot("mrr_now", "all") == 110
    assert view.window_sums("leads_created", "smb", [0, 0, 0, 0]) == [6, 7, 7, 15]
    assert view.window_sums("mrr_at_t0", "all", [0, 0, 0, 0]) == [100, 100, 0, 0]


def test_midnights_are_those_after_the_first_instant_up_to_the_second() -> None:
    assert list(midnights(D_US - 1, D_US + 2 * DAY_US)) == [D_US, D_US + DAY_US, D_US + 2 * DAY_US]
    assert list(midnights(D_US, D_US + DAY_US - 1)) == []


def test_difference_keeps_only_what_moved() -> None:
    before = {("h:mrr_now", "all", DH): 5, ("h:mrr_now", "smb", DH): 5}
    after = {("h:mrr_now", "all", DH): 7, ("h:mrr_now", "mid_market", DH): 2, ("h:mrr_now", "smb", DH): 5}
    assert difference(after, before) == {("h:mrr_now", "all", DH): 2, ("h:mrr_now", "mid_market", DH): 2}


QUANTITIES = ("signups", "mrr_at_t0", "customers_now", "active_accounts")
changes = st.lists(
    st.tuples(
        st.sampled_from(QUANTITIES),
        st.sampled_from(("all", "smb")),
        st.integers(min_value=DH - 140 * 24, max_value=DH),
        st.integers(min_value=-5, max_value=5),
    ),
    max_size=60,
)


@settings(max_examples=150, deadline=None)
@given(first=changes, second=changes, fold_at=st.integers(min_value=DH - 130 * 24, max_value=DH - 95 * 24))
def test_capture_from_day_sums_equals_the_cell_by_cell_point(first: list, second: list, fold_at: int) -> None:
    """Cells added before and after an earlier capture, and folded as a shard folds them, read the same point."""
    live = LiveCells()
    for quantity, segment, at, amount in first:
        live.add((quantity, segment, 0 if quantity == "customers_now" else at), amount)
    capture(live, D_US - 3 * DAY_US)  # days before D − 94 go into the sums kept apart
    live.fold(fold_at)
    for quantity, segment, at, amount in second:
        live.add((quantity, segment, 0 if quantity == "customers_now" else at), amount)
    assert capture(live, D_US) == state_at(live.values.items(), D_US)
    assert capture(LiveCells(live.values), D_US) == state_at(live.values.items(), D_US)


@settings(max_examples=100, deadline=None)
@given(batches=st.lists(changes, min_size=5, max_size=5))
def test_points_on_consecutive_midnights_move_by_a_day_and_see_late_changes(batches: list) -> None:
    """A point the day after the last reuses its sums where nothing changed in the days they counted, and
    recomputes the quantities and segments a late change touched."""
    live = LiveCells()
    for i, batch in enumerate(batches):
        for quantity, segment, at, amount in batch:
            live.add((quantity, segment, 0 if quantity == "customers_now" else at), amount)
        day = D_US - (len(batches) - 1 - i) * DAY_US
        assert capture(live, day) == state_at(live.values.items(), day)


def test_finals_drop_final_cells_route_revisions_to_overlays_and_name_the_cells_to_delete() -> None:
    mrr, won = history.SNAPSHOT_KEY["mrr_now"], history.WINDOW_KEY[("deals_won", "7d")]
    cells = PointCells({(mrr, "smb", 24): 5, (won, "all", 24): 1, (mrr, "smb", 48): 6, (mrr, "smb", 72): 7})
    cells.values[(history.OVERLAY[mrr], "smb", 24)] = 2  # a revision already made: it stays with the shard
    finals = history.Finals()
    assert finals.key((mrr, "smb", 24)) == (mrr, "smb", 24)
    finals.finalize(cells, 48)
    assert dict(cells.values) == {(mrr, "smb", 72): 7, (history.OVERLAY[mrr], "smb", 24): 2}
    assert finals.hour == 48 and finals.pairs == [(mrr, "smb"), (won, "all")]
    assert finals.shapes == {24: 0b11, 48: 0b01}
    assert finals.key((mrr, "smb", 48)) == (history.OVERLAY[mrr], "smb", 48)
    assert finals.key((mrr, "smb", 72)) == (mrr, "smb", 72)
    assert finals.cut_before(24) == [(mrr, "smb", 24), (won, "all", 24)]
    assert finals.shapes == {48: 0b01} and finals.cut == 24
