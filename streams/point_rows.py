"""The rollup's history points as rows: one array of amounts per midnight, a column per (quantity, segment).

A rollup keeps every kept point (400 midnights by default) summed over shards, and each shard's cells of the
points not final yet (about 105 midnights): hundreds of thousands of cells. As dicts of tuple keys and int
objects a cell costs about 150 bytes, and those small long-lived objects, freed a day at a time, leave holes
all over the heap. In a row a cell costs 8 bytes.

`PointRows` is a mapping of hour → {(quantity, segment): amount}, without zero amounts and without empty
points, like the dict of dicts it replaces; `add` and `swap` change one cell. A row is an `array('q')` until an
amount beyond 64 bits lands in it, then a list. Cells that do not fit a row (an hour not on a midnight, a
column past `MAX_COLUMNS`: only crafted partials have those) are kept in a plain dict beside the rows, so any key
and amount works and a crafted partial cannot make every row long.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Final, TypeAlias

from revpulse.streams.ledger import Key

DAY_HOURS: Final = 24
# Columns a row may have (16 KiB): a deployment has a few hundred pairs, a few thousand with many segments.
MAX_COLUMNS: Final = 2048
Pair = tuple[str, str]
if TYPE_CHECKING:
    Row: TypeAlias = array[int] | list[int]


class PointRows(Mapping[int, dict[Pair, int]]):
    __slots__ = ("_columns", "_counts", "_other", "_pairs", "_rows")

    def __init__(self) -> None:
        self._columns: dict[Pair, int] = {}  # pair -> its index in every row
        self._pairs: list[Pair] = []  # index -> pair
        self._rows: dict[int, Row] = {}  # hour of a midnight -> amounts by column (0: no cell)
        self._counts: dict[int, int] = {}  # hour -> its row's cells that are not 0
        self._other: dict[int, dict[Pair, int]] = {}  # hour -> the cells that do not fit a row

    # -- the mapping: hour -> that point's cells

    def __getitem__(self, hour: int) -> dict[Pair, int]:
        row = self._rows.get(hour)
        other = self._other.get(hour)
        if row is None and other is None:
            raise KeyError(hour)
        cells = {} if row is None else {self._pairs[i]: amount for i, amount in enumerate(row) if amount}
        if other:
            cells.update(other)
        return cells

    def __iter__(self) -> Iterator[int]:
        yield from self._rows
        yield from (hour for hour in self._other if hour not in self._rows)

    def __len__(self) -> int:
        return len(self._rows) + sum(1 for hour in self._other if hour not in self._rows)

    def __contains__(self, hour: object) -> bool:
        return hour in self._rows or hour in self._other

    def cells(self) -> Iterator[tuple[Key, int]]:
        """Every cell as ((quantity, segment, hour), amount)."""
        pairs = self._pairs
        for hour, row in self._rows.items():
            for i, amount in enumerate(row):
                if amount:
                    quantity, segment = pairs[i]
                    yield (quantity, segment, hour), amount
        for hour, other in self._other.items():
            for (quantity, segment), amount in other.items():
                yield (quantity, segment, hour), amount

    def groups(self) -> Iterator[tuple[str, str, list[int]]]:
        """Every cell grouped per (quantity, segment), a group at a time: (quantity, segment, [hour, amount, ...]),
        as `state_codec.cell_groups` lists them, without ever holding every cell as objects at once."""
        rows = self._rows.items()
        for column, (quantity, segment) in enumerate(self._pairs):
            flat: list[int] = []
            for hour, row in rows:
                if column < len(row) and row[column]:
                    flat += (hour, row[column])
            if flat:
                yield quantity, segment, flat
        others: dict[Pair, list[int]] = {}
        for hour, other in self._other.items():
            for pair, amount in other.items():
                others.setdefault(pair, []).extend((hour, amount))
        for (quantity, segment), flat in others.items():
            yield quantity, segment, flat

    # -- changing cells

    def swap(self, quantity: str, segment: str, hour: int, amount: int) -> int:
        """Set a cell (0 removes it); returns what it held before (0 if nothing)."""
        pair = (quantity, segment)
        column = self._columns.get(pair)
        if column is None:
            if hour % DAY_HOURS or len(self._pairs) >= MAX_COLUMNS:
                return self._swap_other(pair, hour, amount)
            if not amount:
                return 0  # a pair without a column has no cell at a midnight
            column = self._columns[pair] = len(self._pairs)
            self._pairs.append(pair)
        elif hour % DAY_HOURS:
            return self._swap_other(pair, hour, amount)
        row = self._rows.get(hour)
        if row is None or column >= len(row):
            if not amount:
                return 0  # the row ends before the column: the cell is not there
            if row is None:
                row = self._rows[hour] = array("q")
                self._counts[hour] = 0
            row.extend([0] * (column + 1 - len(row)))
        return self._put(hour, row, column, amount)

    def add(self, quantity: str, segment: str, hour: int, amount: int) -> None:
        """Add to a cell (a cell that sums to 0 is removed)."""
        column = self._columns.get((quantity, segment))
        row = self._rows.get(hour)
        if column is None or row is None or column >= len(row):
            self.swap(quantity, segment, hour, self._cell((quantity, segment), hour) + amount)
        else:
            self._put(hour, row, column, row[column] + amount)

    def drop_through(self, hour: int) -> bool:
        """Remove the points at or before `hour`; whether there were any."""
        gone = [h for h in self if h <= hour]
        for h in gone:
            self._rows.pop(h, None)
            self._counts.pop(h, None)
            self._other.pop(h, None)
        return bool(gone)

    def clear(self) -> None:
        self._rows.clear()
        self._counts.clear()
        self._other.clear()

    def _put(self, hour: int, row: Row, column: int, amount: int) -> int:
        """Set the cell at `column` of the row of `hour` (which reaches it); returns what it held before."""
        before = row[column]
        if before == amount:
            return before
        try:
            row[column] = amount
        except OverflowError:
            row = self._rows[hour] = list(row)
            row[column] = amount
        if not before:
            self._counts[hour] += 1
        elif not amount:
            self._uncount(hour)
        return before

    def _cell(self, pair: Pair, hour: int) -> int:
        column = self._columns.get(pair)
        row = self._rows.get(hour)
        if column is not None and row is not None:
            return row[column] if column < len(row) else 0
        other = self._other.get(hour)
        return 0 if other is None else other.get(pair, 0)

    def _uncount(self, hour: int) -> None:
        count = self._counts[hour] - 1
        if count:
            self._counts[hour] = count
        else:
            del self._rows[hour], self._counts[hour]

    def _swap_other(self, pair: Pair, hour: int, amount: int) -> int:
        other = self._other.setdefault(hour, {})
        before = other.pop(pair, 0)
        if amount:
            other[pair] = amount
        elif not other:
            del self._other[hour]
        return before
