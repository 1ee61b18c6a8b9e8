"""Global totals built from per-entity contributions, kept as hourly slices.

Every entity (account, lead, opportunity) contributes a small dict `{(quantity, segment, hour): amount}`.
When an entity changes — a new event, a late one, a segment learned — its contribution is recomputed and only
the difference is applied here, so the totals always equal processing the accepted events in event-time order.
Amounts are integers (money in nanos, durations in µs), so applying and reverting a contribution is exact.

Three kinds of quantity (each declared in `quantities`):
- flow: summed over the slices of a window (hour = the slice of the event);
- step: a function of t0, stored as deltas at breakpoints (hour = the first t0 slice the delta applies to);
- snapshot: the state at as_of (hour is always 0).
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Mapping, Sequence
from itertools import accumulate
from typing import Final

from revpulse.streams.quantities import FLOWS, QUANTITIES, SNAPSHOTS, STEPS

Key = tuple[str, str, int]  # (quantity, segment, hour)
Contribution = dict[Key, int]

_DECLARED: Final = frozenset(QUANTITIES)
_WINDOWED: Final = FLOWS | STEPS


def _check_read(quantity: str, among: frozenset[str] = _DECLARED, what: str = "ledger quantity") -> None:
    """Refuse to read a quantity that is not declared (of that kind): it has no cells, so it would read as 0.

    Reads only: adds stay unchecked, being the engine's innermost step (a test holds the engine to the list)."""
    if quantity not in among:
        raise KeyError(f"{quantity!r} is not a declared {what}")


def add(contribution: Contribution, quantity: str, segment: str, hour: int, amount: int) -> None:
    """Add to a segment and to `all`: every entity-level quantity counts in both (a segment is never `all`)."""
    key = (quantity, segment, hour)
    contribution[key] = contribution.get(key, 0) + amount
    key = (quantity, "all", hour)
    contribution[key] = contribution.get(key, 0) + amount


def fold(cells: dict[Key, int], horizon: int) -> list[Key]:
    """Move every flow and step cell before hour `horizon` into the slice just before it, in place: no window
    reads a flow there and every step's prefix sum still includes it. The keys moved."""
    old = [key for key in cells if key[2] < horizon - 1 and key[0] in _WINDOWED]
    for key in old:
        into = (key[0], key[1], horizon - 1)
        total = cells.get(into, 0) + cells.pop(key)
        if total:
            cells[into] = total
        else:
            cells.pop(into, None)
    return old


class Totals:
    """Σ of contributions, kept by replacing an entity's old contribution with its new one."""

    def add(self, key: Key, amount: int) -> None:
        raise NotImplementedError

    def apply(self, old: Mapping[Key, int], new: Mapping[Key, int]) -> None:
        """Replace contribution `old` by `new`."""
        for key, amount in new.items():
            before = old.get(key, 0)
            if amount != before:
                self.add(key, amount - before)
        for key, before in old.items():
            if key not in new:
                self.add(key, -before)


class Cells(Totals):
    """One shard's totals: a flat dict of cells (a shard never reads a window), and the cells changed since the
    last `take_touched`, which the shard publishes as its partials. Adding is the engine's innermost step."""

    def __init__(self, values: Mapping[Key, int] | None = None) -> None:
        self.values: dict[Key, int] = dict(values or {})
        self.touched: set[Key] = set()

    def add(self, key: Key, amount: int) -> None:
        values = self.values
        total = values.get(key, 0) + amount
        if total:
            values[key] = total
        else:
            values.pop(key, None)
        self.touched.add(key)

    def get(self, key: Key) -> int:
        _check_read(key[0])
        return self.values.get(key, 0)

    def take_touched(self) -> dict[Key, int]:
        """The current value of every cell changed since the last call (0 for a cell that emptied)."""
        touched, self.touched = self.touched, set()
        values = self.values
        return {key: values.get(key, 0) for key in touched}

    def items(self) -> dict[Key, int]:
        """Every non-empty cell."""
        return dict(self.values)

    def through(self, hour: int) -> list[Key]:
        """The keys of the cells at or before `hour`."""
        return [key for key in self.values if key[2] <= hour]

    def fold(self, horizon: int) -> None:
        """Move every flow and step cell (not the history's) before hour `horizon` into the slice just before it,
        as the rollup's `Ledger` does: no window reads a flow there and every step's prefix sum still includes it.
        The moved cells are touched, so the rollup learns their new values (0 for the old ones)."""
        for key in fold(self.values, horizon):
            self.touched.add(key)
            self.touched.add((key[0], key[1], horizon - 1))


class LiveCells(Cells):
    """A shard's live cells, also summed per (quantity, segment) and day, so that a history point costs a few
    sums per quantity and segment, not a pass over every cell (`history.capture`). Days before `folded_until` are
    summed into `before`. `sums` holds what the last point read per quantity and segment, `dirty` those changed
    since in a day it had counted: the next midnight's point moves the others by a day. All of it is derived from
    the cells, so it needs no saving."""

    def __init__(self, values: Mapping[Key, int] | None = None) -> None:
        super().__init__(values)
        self.days: dict[tuple[str, str], dict[int, int]] = {}
        self.before: dict[tuple[str, str], int] = {}
        self.folded_until = -(2**62)  # the first day not in `before`
        self.captured_day: int | None = None
        self.sums: dict[tuple[str, str], list[int]] = {}
        self.dirty: set[tuple[str, str]] = set()
        self.recording: Contribution | None = None  # while set, every add is also summed here
        for key, amount in self.values.items():
            self._day(key, amount)

    def add(self, key: Key, amount: int) -> None:
        Cells.add(self, key, amount)
        self._day(key, amount)
        recording = self.recording
        if recording is not None:
            recording[key] = recording.get(key, 0) + amount

    def _day(self, key: Key, amount: int) -> None:
        quantity, segment, hour = key
        group = (quantity, segment)
        day = hour // 24
        by_day = self.days.get(group)
        if by_day is None:
            by_day = self.days[group] = {}
        if day < self.folded_until:
            self.before[group] = self.before.get(group, 0) + amount
            self.dirty.add(group)
            return
        by_day[day] = by_day.get(day, 0) + amount
        captured = self.captured_day
        if captured is not None and day < captured:
            self.dirty.add(group)

    def fold_days(self, until: int) -> None:
        """Sum every day before `until` into `before`."""
        if self.folded_until >= until:
            return
        before = self.before
        for group, by_day in self.days.items():
            first = self.folded_until if until - self.folded_until <= 10_000 else min(by_day, default=until)
            for day in range(first, until):
                amount = by_day.pop(day, None)
                if amount:
                    before[group] = before.get(group, 0) + amount
        self.folded_until = until


class Ledger(Totals):
    """Σ of all contributions, per (quantity, segment), per hour: the rollup's global totals.

    Slices older than the horizon (t0 of the longest window) are folded into one slice just before it: no
    window reads a flow there, and every step's prefix sum includes it, so folding changes no answer.
    """

    def __init__(self) -> None:
        self.cells: dict[tuple[str, str], dict[int, int]] = {}
        self.horizon: int | None = None
        # Window sums, once asked for, are kept current by `add` until the window starts move (once an hour):
        # a refresh then reads them instead of summing every slice again.
        self._starts: tuple[int, ...] = ()
        self._sums: dict[tuple[str, str], list[int]] = {}

    def add(self, key: Key, amount: int) -> None:
        quantity, segment, hour = key
        if self.horizon is not None and hour < self.horizon and quantity not in SNAPSHOTS:
            hour = self.horizon - 1
        cell = self.cells.get((quantity, segment))
        if cell is None:
            cell = self.cells[(quantity, segment)] = {}
        sums = self._sums.get((quantity, segment)) if self._sums else None
        if sums is not None:
            for i, t0 in enumerate(self._starts):
                if (hour <= t0) if quantity in STEPS else (hour >= t0):
                    sums[i] += amount
        total = cell.get(hour, 0) + amount
        if total:
            cell[hour] = total
        else:
            cell.pop(hour, None)

    def advance_horizon(self, horizon: int) -> None:
        """Fold every slice before `horizon`; horizons only move forward."""
        if self.horizon is not None and horizon <= self.horizon:
            return
        self.horizon = horizon
        for (quantity, _), cell in self.cells.items():
            if quantity in SNAPSHOTS:
                continue
            old = [hour for hour in cell if hour < horizon - 1]
            if old:
                folded = sum(cell.pop(hour) for hour in old) + cell.get(horizon - 1, 0)
                if folded:
                    cell[horizon - 1] = folded
                else:
                    cell.pop(horizon - 1, None)

    def get(self, key: Key) -> int:
        quantity, segment, hour = key
        _check_read(quantity)
        return self.cells.get((quantity, segment), {}).get(hour, 0)

    def items(self) -> dict[Key, int]:
        """Every non-empty cell."""
        return {(q, seg, hour): value for (q, seg), cell in self.cells.items() for hour, value in cell.items()}

    def snapshot(self, quantity: str, segment: str) -> int:
        _check_read(quantity, SNAPSHOTS, "snapshot quantity")
        return self.cells.get((quantity, segment), {}).get(0, 0)

    def window_sums(self, quantity: str, segment: str, starts: Sequence[int]) -> list[int]:
        """For each window start slice t0: a flow's Σ over slices ≥ t0, or a step's value at t0."""
        _check_read(quantity, _WINDOWED, "flow or step quantity")
        starts = tuple(starts)
        if starts != self._starts:
            self._starts, self._sums = starts, {}
        sums = self._sums.get((quantity, segment))
        if sums is None:
            sums = self._sums[(quantity, segment)] = self._sum_slices(quantity, segment, starts)
        return list(sums)

    def _sum_slices(self, quantity: str, segment: str, starts: tuple[int, ...]) -> list[int]:
        cell = self.cells.get((quantity, segment))
        if not cell:
            return [0 for _ in starts]
        hours = sorted(cell)
        running = list(accumulate(cell[hour] for hour in hours))
        if quantity in STEPS:
            return [running[i - 1] if (i := bisect_right(hours, t0)) else 0 for t0 in starts]
        total = running[-1]
        return [total - (running[i - 1] if (i := bisect_left(hours, t0)) else 0) for t0 in starts]
