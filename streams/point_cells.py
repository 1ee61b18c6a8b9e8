"""A shard's history cells packed by (quantity, segment): one machine-integer array a day per pair.

A shard keeps every point not yet final (about 105 midnights) of a few hundred (quantity, segment) pairs: tens of
thousands of cells. As a dict of tuple keys and int objects a cell costs about 160 bytes, scattered over the heap,
and a forked snapshot copy that reads them copies every page they sit on. Packed, a cell costs 8 bytes, and the
arrays are read without writing to them.

The mapping behaves as a `dict[(quantity, segment, hour), int]`, iterated in another order (pair, then hour). A
cell that does not fit a row (an hour not on a midnight, an amount beyond 64 bits, a day too far from the row's
others: only a crafted snapshot has those) is kept in a plain dict beside the rows, so any key and amount works.
"""

from __future__ import annotations

from array import array
from collections.abc import Collection, Container, Iterable, Iterator, Mapping, MutableMapping
from itertools import repeat
from typing import Final

from revpulse.streams.ledger import Cells, Key
from revpulse.streams.plain import INT64_MAX, INT64_MIN

ABSENT: Final = INT64_MIN  # an array slot without a cell (that amount itself goes to the overflow dict)
DAY_HOURS: Final = 24
MAX_ROW_DAYS: Final = 1 << 13  # a row spans at most this many days (64 KiB): a farther day goes to the overflow


class _Row:
    """The cells of one (quantity, segment) pair on midnights: day `first + i` holds `amounts[i]`."""

    __slots__ = ("amounts", "first")

    def __init__(self, first: int) -> None:
        self.first = first
        self.amounts = array("q")


class PackedCells(MutableMapping[Key, int]):
    def __init__(self, values: Mapping[Key, int] | Iterable[tuple[Key, int]] = ()) -> None:
        self._rows: dict[tuple[str, str], _Row] = {}
        self._other: dict[Key, int] = {}
        self._count = 0  # cells in the rows
        self.update(values)

    # -- reading

    def _slot(self, key: Key) -> tuple[_Row, int] | None:
        quantity, segment, hour = key
        row = self._rows.get((quantity, segment))
        if row is None or type(hour) is not int or hour % DAY_HOURS:
            return None
        index = hour // DAY_HOURS - row.first
        if 0 <= index < len(row.amounts):
            return row, index
        return None

    def get(self, key: Key, default: int | None = None) -> int | None:  # type: ignore[override]
        quantity, segment, hour = key
        row = self._rows.get((quantity, segment))
        if row is not None and type(hour) is int:
            day, rest = divmod(hour, DAY_HOURS)
            index = day - row.first
            if not rest and 0 <= index < len(row.amounts):
                amount = row.amounts[index]
                if amount != ABSENT:
                    return amount
        return self._other.get(key, default)

    def __getitem__(self, key: Key) -> int:
        amount = self.get(key)
        if amount is None:
            raise KeyError(key)
        return amount

    def __contains__(self, key: object) -> bool:
        return isinstance(key, tuple) and len(key) == 3 and self.get(key) is not None  # type: ignore[arg-type]

    def __len__(self) -> int:
        return self._count + len(self._other)

    def __iter__(self) -> Iterator[Key]:
        for (quantity, segment), row in list(self._rows.items()):
            first = row.first
            for i, amount in enumerate(row.amounts.tolist()):
                if amount != ABSENT:
                    yield (quantity, segment, (first + i) * DAY_HOURS)
        yield from list(self._other)

    def through(self, hour: int) -> list[Key]:
        """The keys of the cells at or before `hour`, reading only those days of each row."""
        keys = []
        last = hour // DAY_HOURS  # a row's day d is at hour 24·d, at or before `hour` while d ≤ last
        for (quantity, segment), row in self._rows.items():
            first = row.first
            if first > last:
                continue
            for i, amount in enumerate(row.amounts[: last - first + 1].tolist()):
                if amount != ABSENT:
                    keys.append((quantity, segment, (first + i) * DAY_HOURS))
        keys += [key for key in self._other if key[2] <= hour]
        return keys

    def groups(self) -> list[tuple[str, str, list[int]]]:
        """[(quantity, segment, [hour, amount, hour, amount, ...]), ...] over every cell: a snapshot's form."""
        out: dict[tuple[str, str], list[int]] = {}
        for pair, row in self._rows.items():
            first, flat = row.first, []
            for i, amount in enumerate(row.amounts.tolist()):
                if amount != ABSENT:
                    flat += ((first + i) * DAY_HOURS, amount)
            out[pair] = flat
        for (quantity, segment, hour), amount in self._other.items():
            out.setdefault((quantity, segment), []).extend((hour, amount))
        return [(quantity, segment, flat) for (quantity, segment), flat in out.items()]

    def points(self, hours: Collection[int], quantities: Container[str]) -> dict[int, dict[tuple[str, str], int]]:
        """Per hour of `hours`, its cells of `quantities` by (quantity, segment), in one pass over the rows."""
        out: dict[int, dict[tuple[str, str], int]] = {hour: {} for hour in hours}
        days = [(hour // DAY_HOURS, out[hour]) for hour in hours if hour % DAY_HOURS == 0]
        for pair, row in self._rows.items():
            if pair[0] not in quantities:
                continue
            first, amounts = row.first, row.amounts
            for day, cells in days:
                index = day - first
                if 0 <= index < len(amounts) and amounts[index] != ABSENT:
                    cells[pair] = amounts[index]
        for (quantity, segment, hour), amount in self._other.items():
            if hour in out and quantity in quantities:
                out[hour][(quantity, segment)] = amount
        return out

    # -- writing

    def pop_through(self, hour: int, kept: Container[str] = ()) -> dict[tuple[str, str], list[int]]:
        """Remove the cells at or before `hour`, but those of the quantities `kept`: per (quantity, segment), the
        hours removed. A row loses its first days at once."""
        out: dict[tuple[str, str], list[int]] = {}
        last = hour // DAY_HOURS
        for pair, row in list(self._rows.items()):
            first, amounts = row.first, row.amounts
            if first > last or pair[0] in kept:
                continue
            cut = min(last - first + 1, len(amounts))
            hours = [(first + i) * DAY_HOURS for i, amount in enumerate(amounts[:cut].tolist()) if amount != ABSENT]
            self._count -= len(hours)
            out[pair] = hours
            start = cut
            while start < len(amounts) and amounts[start] == ABSENT:
                start += 1
            if start == len(amounts):
                del self._rows[pair]
            else:
                row.amounts = amounts[start:]
                row.first = first + start
        for key in [key for key in self._other if key[2] <= hour and key[0] not in kept]:
            del self._other[key]
            out.setdefault((key[0], key[1]), []).append(key[2])
        return out

    def update(self, cells: Mapping[Key, int] | Iterable[tuple[Key, int]] = (), /) -> None:  # type: ignore[override]
        """As a dict's, in one loop: a cell on its row's days, or on the day after them (a new point), is set in
        place; any other goes through `__setitem__`."""
        rows, others = self._rows, self._other
        for key, amount in cells.items() if isinstance(cells, Mapping) else cells:
            row = rows.get((key[0], key[1]))
            hour = key[2]
            if row is not None and type(hour) is int and type(amount) is int and ABSENT < amount <= INT64_MAX:
                day, rest = divmod(hour, DAY_HOURS)
                amounts = row.amounts
                index = day - row.first
                size = len(amounts)
                if not rest and 0 <= index < size:
                    if amounts[index] == ABSENT:
                        self._count += 1
                    amounts[index] = amount
                elif not rest and index == size and 0 < size < MAX_ROW_DAYS:
                    amounts.append(amount)
                    self._count += 1
                else:
                    self[key] = amount
                    continue
                if others:
                    others.pop(key, None)  # one place for a key
            else:
                self[key] = amount

    def __setitem__(self, key: Key, amount: int) -> None:
        quantity, segment, hour = key
        if (
            type(hour) is int
            and not hour % DAY_HOURS
            and type(amount) is int
            and ABSENT < amount <= INT64_MAX
            and type(quantity) is str
            and type(segment) is str
            and self._set_in_row(key, hour // DAY_HOURS, amount)
        ):
            self._other.pop(key, None)  # one place for a key
            return
        self._delete_in_row(key)
        self._other[key] = amount

    def _set_in_row(self, key: Key, day: int, amount: int) -> bool:
        """Put the cell in its pair's row; False if the day is too far from the row's others."""
        row = self._rows.get((key[0], key[1]))
        if row is None:
            row = self._rows[(key[0], key[1])] = _Row(day)
        amounts = row.amounts
        index = day - row.first
        if not amounts:
            row.first, index = day, 0
            amounts.append(ABSENT)
        elif index < 0:
            if len(amounts) - index > MAX_ROW_DAYS:
                return False
            amounts[0:0] = array("q", repeat(ABSENT, -index))
            row.first, index = day, 0
        elif index >= len(amounts):
            if index >= MAX_ROW_DAYS:
                return False
            amounts.extend(repeat(ABSENT, index + 1 - len(amounts)))
        if amounts[index] == ABSENT:
            self._count += 1
        amounts[index] = amount
        return True

    def _delete_in_row(self, key: Key) -> bool:
        """Remove the cell from its row, if there; trim the row's empty ends, so that cut and finalised days give
        their memory back."""
        slot = self._slot(key)
        if slot is None or slot[0].amounts[slot[1]] == ABSENT:
            return False
        row, index = slot
        amounts = row.amounts
        amounts[index] = ABSENT
        self._count -= 1
        start, end = 0, len(amounts)
        while start < end and amounts[start] == ABSENT:
            start += 1
        while end > start and amounts[end - 1] == ABSENT:
            end -= 1
        if start == end:
            del self._rows[(key[0], key[1])]
        elif start or end < len(amounts):
            row.amounts = amounts[start:end]
            row.first += start
        return True

    def __delitem__(self, key: Key) -> None:
        if not self._delete_in_row(key):
            del self._other[key]

    def clear(self) -> None:
        self._rows.clear()
        self._other.clear()
        self._count = 0


class PointCells(Cells):
    """The history's cells (`Engine.history`): `Cells` over a `PackedCells`."""

    values: PackedCells  # type: ignore[assignment]

    def __init__(self, values: Mapping[Key, int] | None = None) -> None:
        super().__init__()
        self.values = PackedCells(values or {})

    def through(self, hour: int) -> list[Key]:
        return self.values.through(hour)
