"""The history's packed cells: the same answers as a dict under any sequence of changes, any key and amount kept
(the ones that do not fit a row too), and the memory of removed days given back."""

from __future__ import annotations

import contextlib
import random

import pytest

from revpulse.streams.point_cells import ABSENT, MAX_ROW_DAYS, PackedCells, PointCells
from revpulse.streams.state_codec import cell_groups

DAY = 24


def _same(packed: PackedCells, plain: dict[tuple[str, str, int], int]) -> None:
    assert dict(packed) == plain
    assert len(packed) == len(plain)
    assert sorted(packed) == sorted(plain)
    for key, amount in plain.items():
        assert key in packed
        assert packed[key] == amount
        assert packed.get(key) == amount


def _as_sets(groups: list[object]) -> dict[tuple[str, str], set[tuple[int, int]]]:
    out: dict[tuple[str, str], set[tuple[int, int]]] = {}
    for quantity, segment, flat in groups:  # type: ignore[misc]
        out.setdefault((quantity, segment), set()).update(zip(flat[0::2], flat[1::2], strict=True))
    return out


def test_random_changes_give_what_a_dict_gives() -> None:
    rng = random.Random(7)
    pairs = [("h:mrr", "smb"), ("h:mrr", "all"), ("h:+mrr", "enterprise"), ("h:captured", "")]
    packed, plain = PackedCells(), {}
    for step in range(20_000):
        quantity, segment = rng.choice(pairs)
        hour = rng.randrange(19_000, 19_400) * DAY + (rng.randrange(24) if rng.random() < 0.02 else 0)
        key = (quantity, segment, hour)
        action = rng.random()
        if action < 0.05:
            # A midnight's point at once, mostly one day past its rows' ends (a cell there may be a stray one).
            day = hour // DAY + (rng.random() < 0.9)
            point = {(q, s, day * DAY): rng.choice((rng.randrange(1, 10**6), 2**64, ABSENT)) for q, s in pairs}
            packed.update(point if rng.random() < 0.5 else list(point.items()))
            plain.update(point)
        elif action < 0.6:
            amount = rng.choice((rng.randrange(-(10**12), 10**12), 2**70, -(2**63), 2**63 - 1, 0))
            packed[key] = plain[key] = amount
        elif action < 0.9:
            assert packed.pop(key, None) == plain.pop(key, None)
        else:
            with pytest.raises(KeyError) if key not in plain else contextlib.nullcontext():
                del packed[key]
            plain.pop(key, None)
        if step % 2_000 == 0:
            _same(packed, plain)
            hour = rng.randrange(19_000, 19_400) * DAY + rng.choice((0, 5))
            assert sorted(packed.through(hour)) == sorted(key for key in plain if key[2] <= hour)
        if step % 5_000 == 4_999:
            hour = rng.randrange(19_000, 19_400) * DAY + rng.choice((0, 5))
            gone = {key: plain.pop(key) for key in list(plain) if key[2] <= hour and key[0] != "h:+mrr"}
            popped = packed.pop_through(hour, kept={"h:+mrr"})
            assert {pair: sorted(hours) for pair, hours in popped.items()} == {
                pair: sorted(key[2] for key in gone if key[:2] == pair) for pair in {key[:2] for key in gone}
            }
            _same(packed, plain)
    _same(packed, plain)
    assert _as_sets(packed.groups()) == _as_sets(cell_groups(plain))


def test_cells_that_do_not_fit_a_row_are_kept_as_given() -> None:
    packed = PackedCells()
    far = 19_000 + MAX_ROW_DAYS
    cells = {
        ("h:mrr", "all", 19_000 * DAY): 5,
        ("h:mrr", "all", far * DAY): 6,  # too far from the row's first day
        ("h:mrr", "all", 19_000 * DAY + 3): 7,  # not a midnight
        ("h:mrr", "smb", 19_001 * DAY): 2**64,  # beyond 64 bits
        ("h:mrr", "mid", 19_002 * DAY): ABSENT,  # the marker of an empty slot, as an amount
        ("h:mrr", "old", -(10**15) * DAY): 1,
    }
    packed.update(cells)
    _same(packed, cells)
    # A key moves between the row and the overflow as its amount does, and is never in both.
    packed[("h:mrr", "all", 19_000 * DAY)] = 2**65
    packed[("h:mrr", "smb", 19_001 * DAY)] = 3
    cells[("h:mrr", "all", 19_000 * DAY)] = 2**65
    cells[("h:mrr", "smb", 19_001 * DAY)] = 3
    _same(packed, cells)
    assert _as_sets(packed.groups()) == _as_sets(cell_groups(cells))


def test_removing_the_first_and_last_days_shrinks_the_row() -> None:
    packed = PackedCells({("h:mrr", "all", day * DAY): day for day in range(100, 200)})
    for day in range(100, 150):
        del packed[("h:mrr", "all", day * DAY)]
    del packed[("h:mrr", "all", 199 * DAY)]
    row = packed._rows[("h:mrr", "all")]
    assert (row.first, len(row.amounts)) == (150, 49)
    assert dict(packed) == {("h:mrr", "all", day * DAY): day for day in range(150, 199)}
    for day in range(150, 199):
        del packed[("h:mrr", "all", day * DAY)]
    assert packed._rows == {} and len(packed) == 0


def test_a_point_a_midnight_appends_to_the_rows_and_popping_the_first_days_cuts_them() -> None:
    packed = PackedCells()
    for day in range(100, 110):
        packed.update({("h:mrr", "all", day * DAY): day, ("h:+mrr", "all", day * DAY): -day})
    row = packed._rows[("h:mrr", "all")]
    assert (row.first, row.amounts.tolist()) == (100, list(range(100, 110)))
    packed.update({("h:mrr", "all", 110 * DAY): 2**64})  # beyond 64 bits: beside the row
    packed.update({("h:mrr", "all", 110 * DAY): 110})  # back in the row, and only there
    assert packed.pop(("h:mrr", "all", 110 * DAY)) == 110 and ("h:mrr", "all", 110 * DAY) not in packed
    del packed[("h:mrr", "all", 104 * DAY)]
    assert packed.pop_through(103 * DAY + 5, kept={"h:+mrr"}) == {("h:mrr", "all"): [d * DAY for d in range(100, 104)]}
    # Day 104 is empty: the row starts at the next cell.
    assert (row.first, row.amounts.tolist()) == (105, list(range(105, 110)))
    assert len(packed) == 5 + 10
    assert packed.pop_through(200 * DAY) == {
        ("h:mrr", "all"): [d * DAY for d in range(105, 110)],
        ("h:+mrr", "all"): [d * DAY for d in range(100, 110)],
    }
    assert packed._rows == {} and len(packed) == 0


def test_point_cells_add_and_take_touched_as_cells_do() -> None:
    cells = PointCells({("h:mrr", "all", 100 * DAY): 5})
    cells.add(("h:mrr", "all", 100 * DAY), -5)
    cells.add(("h:mrr", "all", 101 * DAY), 3)
    assert cells.items() == {("h:mrr", "all", 101 * DAY): 3}
    assert cells.take_touched() == {("h:mrr", "all", 100 * DAY): 0, ("h:mrr", "all", 101 * DAY): 3}
