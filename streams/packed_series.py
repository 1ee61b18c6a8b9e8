"""Every series at one history point, packed: the form a worker keeps its history in between requests.

A worker that serves `/api/history` (the board asks every few seconds) keeps each kept point's series, so that
only a point whose cells changed is computed again: 400 points of a thousand series each. As `Series` named
tuples with their float objects that is about 110 bytes a series, over 40 MiB at 400 points. Packed, the names
(metric, labels) are one tuple shared by every point that publishes the same series, and the values are machine
doubles: about 9 bytes a series.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterator, Sequence
from typing import Final, overload

from revpulse.streams.metrics import Value
from revpulse.streams.series import Series

Names = tuple[tuple[str, tuple[tuple[str, str], ...]], ...]  # (metric, labels) of each series, in order

_NUMBER: Final = 0  # the value is the double at the same index
_ABSENT: Final = 1  # the value is None (undefined: a ratio over nothing)
_OTHER: Final = 2  # the value is kept as it is, in `_other`: anything but a float or None, so types survive


class PackedSeries(Sequence[Series]):
    __slots__ = ("_kinds", "_names", "_numbers", "_other")

    def __init__(self, series: Sequence[Series], like: PackedSeries | None = None) -> None:
        """`series` packed; their names are `like`'s when they are the same series (consecutive points mostly
        are), so that the points share one tuple of names."""
        names = tuple((s.metric, s.labels) for s in series)
        self._names: Names = like._names if like is not None and like._names == names else names
        self._numbers = array("d", bytes(8 * len(series)))
        kinds = bytearray(len(series))
        self._other: dict[int, Value] = {}
        for i, s in enumerate(series):
            value = s.value
            if type(value) is float:
                self._numbers[i] = value
            elif value is None:
                kinds[i] = _ABSENT
            else:
                kinds[i] = _OTHER
                self._other[i] = value
        self._kinds = bytes(kinds)

    @property
    def names(self) -> Names:
        return self._names

    def _value(self, i: int) -> Value:
        kind = self._kinds[i]
        if kind == _NUMBER:
            return self._numbers[i]
        return None if kind == _ABSENT else self._other[i]

    @overload
    def __getitem__(self, index: int) -> Series: ...
    @overload
    def __getitem__(self, index: slice) -> list[Series]: ...
    def __getitem__(self, index: int | slice) -> Series | list[Series]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        if index < 0:
            index += len(self)
        metric, labels = self._names[index]  # IndexError past either end, as a list
        return Series(metric, labels, self._value(index))

    def __len__(self) -> int:
        return len(self._names)

    def __iter__(self) -> Iterator[Series]:
        for i, (metric, labels) in enumerate(self._names):
            yield Series(metric, labels, self._value(i))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Sequence):
            return NotImplemented
        return list(self) == list(other)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"PackedSeries({list(self)!r})"
