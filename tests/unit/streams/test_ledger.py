"""The ledgers: the rollup's window sums (exact values by hand, kept current by `add` once asked for), and a
shard's cells."""

from __future__ import annotations

import pytest

from revpulse.streams.ledger import Cells, Ledger

STARTS = (100, 110)


def test_flow_sums_slices_from_each_start_and_step_sums_up_to_it() -> None:
    ledger = Ledger()
    for hour, amount in ((90, 1), (100, 2), (105, 4), (110, 8), (120, 16)):
        ledger.add(("signups", "all", hour), amount)
        ledger.add(("mrr_at_t0", "all", hour), amount)
    assert ledger.window_sums("signups", "all", STARTS) == [2 + 4 + 8 + 16, 8 + 16]
    assert ledger.window_sums("mrr_at_t0", "all", STARTS) == [1 + 2, 1 + 2 + 4 + 8]
    assert ledger.window_sums("renewed", "all", STARTS) == [0, 0]


def test_sums_follow_adds_after_they_were_asked_for() -> None:
    kept = Ledger()
    kept.window_sums("signups", "smb", STARTS)
    kept.window_sums("mrr_at_t0", "smb", STARTS)
    changes = [(99, 3), (100, 5), (110, -2), (111, 7), (100, -5)]
    for hour, amount in changes:
        kept.add(("signups", "smb", hour), amount)
        kept.add(("mrr_at_t0", "smb", hour), amount)
    assert kept.window_sums("signups", "smb", STARTS) == [5 - 2 + 7 - 5, -2 + 7]
    assert kept.window_sums("mrr_at_t0", "smb", STARTS) == [3 + 5 - 5, 3 + 5 - 2 - 5]
    # New starts: summed again from the slices.
    assert kept.window_sums("signups", "smb", (111,)) == [7]


def test_a_slice_before_the_horizon_counts_at_the_horizon() -> None:
    ledger = Ledger()
    ledger.add(("mrr_at_t0", "all", 50), 4)
    ledger.advance_horizon(100)
    assert ledger.window_sums("mrr_at_t0", "all", STARTS) == [4, 4]
    ledger.add(("mrr_at_t0", "all", 10), 1)  # folded into slice 99: before every start
    ledger.add(("signups", "all", 10), 1)  # a flow there is in no window
    assert ledger.window_sums("mrr_at_t0", "all", STARTS) == [5, 5]
    assert ledger.window_sums("signups", "all", STARTS) == [0, 0]


def test_cells_publish_what_changed() -> None:
    cells = Cells()
    cells.apply({}, {("signups", "smb", 5): 2, ("signups", "all", 5): 2})
    cells.apply({("signups", "smb", 5): 2}, {("signups", "smb", 6): 1})
    assert cells.take_touched() == {("signups", "smb", 5): 0, ("signups", "all", 5): 2, ("signups", "smb", 6): 1}
    assert cells.take_touched() == {}
    assert cells.items() == {("signups", "all", 5): 2, ("signups", "smb", 6): 1}


def test_reading_an_undeclared_quantity_fails_instead_of_reading_zero() -> None:
    ledger, cells = Ledger(), Cells()
    with pytest.raises(KeyError, match="'signup' is not a declared flow or step quantity"):
        ledger.window_sums("signup", "all", STARTS)
    with pytest.raises(KeyError, match="'mrr_now' is not a declared flow or step quantity"):
        ledger.window_sums("mrr_now", "all", STARTS)  # a snapshot has no window sums
    with pytest.raises(KeyError, match="'mrr' is not a declared snapshot quantity"):
        ledger.snapshot("mrr", "all")
    with pytest.raises(KeyError, match="'signup' is not a declared ledger quantity"):
        ledger.get(("signup", "all", 1))
    with pytest.raises(KeyError, match="'signup' is not a declared ledger quantity"):
        cells.get(("signup", "all", 1))
    # Adds stay unchecked (the engine's innermost step); test_quantities holds the engine to the declarations.
    cells.add(("signup", "all", 1), 1)
    assert (ledger.snapshot("mrr_now", "all"), cells.get(("signups", "all", 1))) == (0, 0)


def test_a_shards_cells_fold_into_the_slice_before_the_horizon_and_publish_the_move() -> None:
    cells = Cells()
    cells.apply({}, {("signups", "smb", 5): 2, ("signups", "smb", 9): 1, ("mrr_at_t0", "all", 3): 7})
    cells.apply({}, {("mrr_now", "all", 0): 40, ("signups", "smb", 10): 4, ("mrr_at_t0", "all", 10): -2})
    cells.take_touched()
    cells.fold(10)
    assert cells.items() == {
        ("signups", "smb", 9): 3,
        ("signups", "smb", 10): 4,
        ("mrr_at_t0", "all", 9): 7,
        ("mrr_at_t0", "all", 10): -2,
        ("mrr_now", "all", 0): 40,  # a snapshot has no slices
    }
    assert cells.take_touched() == {
        ("signups", "smb", 5): 0,
        ("signups", "smb", 9): 3,
        ("mrr_at_t0", "all", 3): 0,
        ("mrr_at_t0", "all", 9): 7,
    }
