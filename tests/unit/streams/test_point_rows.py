"""The rollup's point rows: the same cells as a dict of dicts, whatever the keys and amounts."""

from __future__ import annotations

import random

from revpulse.streams.point_rows import MAX_COLUMNS, PointRows

Model = dict[int, dict[tuple[str, str], int]]


def _set(model: Model, pair: tuple[str, str], hour: int, amount: int) -> int:
    point = model.setdefault(hour, {})
    before = point.pop(pair, 0)
    if amount:
        point[pair] = amount
    if not point:
        del model[hour]
    return before


def test_random_changes_read_back_as_a_dict_of_dicts() -> None:
    rng = random.Random(13)
    pairs = [(q, s) for q in ("h:mrr", "h:signups@1d", "h:captured") for s in ("all", "smb", "enterprise")]
    hours = [24 * day for day in range(40)] + [5, 24 * 7 + 1]  # two not on a midnight
    amounts = [0, 0, 1, -1, 7, 2**63 - 1, -(2**63), 2**70, -(2**90)]
    rows, model = PointRows(), {}
    for step in range(20_000):
        pair, hour = rng.choice(pairs), rng.choice(hours)
        amount = rng.choice(amounts) if rng.random() < 0.7 else rng.randrange(-(10**6), 10**6)
        if rng.random() < 0.5:
            assert rows.swap(*pair, hour, amount) == _set(model, pair, hour, amount)
        else:
            rows.add(*pair, hour, amount)
            _set(model, pair, hour, model.get(hour, {}).get(pair, 0) + amount)
        if step % 997 == 0:
            cut = rng.choice(hours)
            assert rows.drop_through(cut) == any(hour <= cut for hour in model)
            model = {hour: point for hour, point in model.items() if hour > cut}
        if step % 101 == 0:
            assert dict(rows) == model
            assert sorted(rows.cells()) == sorted(
                ((q, s, hour), amount) for hour, point in model.items() for (q, s), amount in point.items()
            )
            assert len(rows) == len(model) and all(hour in rows for hour in model)
            grouped = [((q, s, hour), amount) for q, s, flat in rows.groups() for hour, amount in _pairs(flat)]
            assert sorted(grouped) == sorted(rows.cells())


def _pairs(flat: list[int]) -> list[tuple[int, int]]:
    return list(zip(flat[0::2], flat[1::2], strict=True))


def test_groups_list_each_pair_once_with_its_hours_and_the_cells_off_a_midnight_apart() -> None:
    rows = PointRows()
    rows.swap("h:mrr", "all", 48, 5)
    rows.swap("h:mrr", "all", 24, 2**64)  # beyond 64 bits: that row becomes a list
    rows.swap("h:signups@1d", "smb", 48, -3)
    rows.swap("h:mrr", "all", 30, 9)  # not on a midnight: beside the rows
    assert list(rows.groups()) == [
        ("h:mrr", "all", [48, 5, 24, 2**64]),
        ("h:signups@1d", "smb", [48, -3]),
        ("h:mrr", "all", [30, 9]),
    ]


def test_a_point_whose_cells_all_go_to_zero_is_gone() -> None:
    rows = PointRows()
    rows.add("h:mrr", "all", 48, 5)
    rows.add("h:mrr", "smb", 48, 2**64)  # beyond 64 bits: the row becomes a list
    assert rows[48] == {("h:mrr", "all"): 5, ("h:mrr", "smb"): 2**64}
    rows.add("h:mrr", "all", 48, -5)
    assert rows.swap("h:mrr", "smb", 48, 0) == 2**64
    assert 48 not in rows and list(rows) == [] and list(rows.cells()) == []


def test_a_cell_off_a_midnight_of_a_pair_never_seen_on_one_is_removed() -> None:
    rows = PointRows()
    rows.swap("h:mrr", "all", 5, 7)
    assert rows.swap("h:mrr", "all", 5, 0) == 7
    rows.add("h:mrr", "smb", 29, 3)
    rows.add("h:mrr", "smb", 29, -3)
    assert list(rows) == [] and list(rows.cells()) == []


def test_pairs_past_the_column_bound_are_kept_beside_the_rows() -> None:
    rows = PointRows()
    for i in range(MAX_COLUMNS + 10):
        rows.swap("h:mrr", f"segment-{i}", 24, i + 1)
    rows.swap("h:mrr", f"segment-{MAX_COLUMNS + 9}", 48, 3)  # a new point: its row stays short
    assert len(rows[24]) == MAX_COLUMNS + 10 and rows[24][("h:mrr", f"segment-{MAX_COLUMNS + 5}")] == MAX_COLUMNS + 6
    assert rows[48] == {("h:mrr", f"segment-{MAX_COLUMNS + 9}"): 3}
    assert rows.swap("h:mrr", f"segment-{MAX_COLUMNS + 9}", 24, 0) == MAX_COLUMNS + 10  # beside the rows
    assert len(rows[24]) == MAX_COLUMNS + 9
    assert all(len(row) <= MAX_COLUMNS for row in rows._rows.values())
    assert rows.drop_through(24) and list(rows) == [48]
