"""The ledger's window sums: exact values by hand, and kept current by `add` once asked for."""

from __future__ import annotations

from streams.ledger import Ledger

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
