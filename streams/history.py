"""History (SPEC §5): the state every series is computed from, at each UTC midnight, as ledger cells of its own.

A point at midnight D holds, per segment, what `series` reads at as_of = D over the events with occurred_at ≤ D:
each snapshot quantity's value, each step's value at every window's t0 and each flow's sum over every window.
They are cells `(h:<quantity>[@<window>], segment, hour of D)`, so a shard keeps, snapshots and publishes them
like any other cell, and the rollup sums them over shards. Shards capture a point when their watermark passes D
(then every event they accepted is ≤ D, so their live cells are the state at D) and revise it when an event
≤ D arrives later (see `Engine`); a point older than watermark − 90 d − allowed lateness is final.

A final point leaves the shard: its cells are dropped from the shard's state (not sent as zeros) and a `FINAL`
partial tells every rollup to keep that shard's cells of it in the global sum only, so shards and rollups hold the
points still revisable per shard and the final ones once. An event accepted that far back (the first of its key,
or from a topic read far behind) still revises a final point, through overlay cells (`OVERLAY`) summed on top.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from itertools import accumulate, repeat
from typing import Final

from revpulse.streams.ledger import Key, LiveCells
from revpulse.streams.point_cells import PointCells
from revpulse.streams.quantities import ACTIVE_ACCOUNTS, FLOWS, QUANTITIES, SNAPSHOTS, STEPS
from revpulse.streams.windows import HOUR_US, WINDOWS

DAY_US: Final = 24 * HOUR_US
PREFIX: Final = "h:"
# (CAPTURED, "", hour of D) = 1: the shard captured D; without it the rollup derives the shard's point from its
# live cells (a shard whose watermark has not passed D) or counts nothing (D before the shard's first event).
CAPTURED: Final = "h:captured"
# (SEEN, segment, hour of D) = 1: `other` or `unknown` had been resolved to by D, so its series exist at D.
SEEN: Final = "h:seen"
SEEN_SEGMENTS: Final = ("other", "unknown")  # the segments whose series exist only once seen

SNAPSHOT_KEY: Final = {q: f"{PREFIX}{q}" for q in SNAPSHOTS}
WINDOW_KEY: Final = {(q, w): f"{PREFIX}{q}@{w}" for q in FLOWS | STEPS for w in WINDOWS}
# The flows whose every slice a shard's live cells keep, even of forgotten events (not `active_accounts`, whose
# one cell per account and segment moves to its latest slice).
EVENT_FLOWS: Final = FLOWS - {ACTIVE_ACCOUNTS}
EVENT_FLOW_KEYS: Final = frozenset(WINDOW_KEY[(q, w)] for q in EVENT_FLOWS for w in WINDOWS)
_BASE: Final = frozenset({CAPTURED, SEEN, *SNAPSHOT_KEY.values(), *WINDOW_KEY.values()})
# A final point's revision: cell (OVERLAY[q], segment, hour) adds to the point's q. Kept and sent like any other
# cell by the shard, which holds no other cell of that point any more.
OVERLAY: Final = {quantity: f"{PREFIX}+{quantity.removeprefix(PREFIX)}" for quantity in _BASE}
BASE_OF: Final = {overlay: quantity for quantity, overlay in OVERLAY.items()}
QUANTITIES_OF_HISTORY: Final = _BASE | frozenset(BASE_OF)
POINT_QUANTITIES: Final = _BASE  # a point's own cells, which the partials topic carries one record a point
# Points between finalisations: finalising scans a shard's history cells, so it waits for this many more days.
FINAL_STEP_DAYS: Final = 15
_WINDOW_KEYS: Final = {q: tuple(WINDOW_KEY[(q, w)] for w in WINDOWS) for q in FLOWS | STEPS}
_LENGTHS: Final = tuple(WINDOWS.values())
_DAYS: Final = tuple(hours // 24 for hours in _LENGTHS)
_SPAN: Final = max(_DAYS) + 1  # the days `capture` reads one by one; those before are summed

assert not any(q.startswith(PREFIX) for q in QUANTITIES), "history cells are told apart by their prefix"


def is_history(quantity: str) -> bool:
    return quantity.startswith(PREFIX)


def midnight_hour(day_us: int) -> int:
    return day_us // HOUR_US


def midnights(after_us: int, until_us: int) -> range:
    """The UTC midnights D with after_us < D ≤ until_us, in µs."""
    first = (after_us // DAY_US + 1) * DAY_US
    return range(first, until_us + 1, DAY_US)


def state_at(cells: Iterable[tuple[Key, int]], day_us: int) -> dict[Key, int]:
    """The point at midnight `day_us` from cells (a shard's, or one entity's contribution) of events all ≤ it.

    A flow sums its slices from each window's t0 up to the slice of D (which then holds only events at D
    exactly); a step is its prefix sum at each t0; a snapshot is its value. History cells are skipped."""
    dh = day_us // HOUR_US
    starts = [dh - hours + 1 for hours in _LENGTHS]
    first = min(starts)
    out: dict[Key, int] = {}
    get = out.get
    for (quantity, segment, hour), value in cells:
        if quantity in SNAPSHOTS:
            key = (SNAPSHOT_KEY[quantity], segment, dh)
            out[key] = get(key, 0) + value
        elif quantity in STEPS:
            for name, t0 in zip(_WINDOW_KEYS[quantity], starts, strict=True):
                if hour <= t0:
                    key = (name, segment, dh)
                    out[key] = get(key, 0) + value
        elif quantity in FLOWS and first <= hour <= dh:
            for name, t0 in zip(_WINDOW_KEYS[quantity], starts, strict=True):
                if hour >= t0:
                    key = (name, segment, dh)
                    out[key] = get(key, 0) + value
    return {key: value for key, value in out.items() if value}


def capture(live: LiveCells, day_us: int) -> dict[Key, int]:
    """`state_at(live.values.items(), day_us)`, from the day sums: what a shard's point costs does not grow with
    its cells. Window W of n days at midnight D spans the hours of day D − n but its first, the n − 1 days after
    it, and the hour of D; a step at its t0 (the second hour of day D − n) is everything up to that hour. The day
    after the last point, a quantity and segment unchanged in the days that point counted moves by one day."""
    day = day_us // DAY_US
    first = day - _SPAN  # day D − 91: every day before it is in `live.before`
    dh = day_us // HOUR_US
    live.fold_days(first)
    cell, before, kept = live.values.get, live.before, live.sums
    moved = live.captured_day == day - 1
    dirty = live.dirty
    olds = [day - 1 - n for n in _DAYS]  # the day each window let go of since the day before
    starts = [dh - n * 24 for n in _DAYS]  # the first hour of day D − n, each window's
    out: dict[Key, int] = {}
    for group, by_day in live.days.items():
        quantity, segment = group
        if quantity in SNAPSHOTS:
            value = cell((quantity, segment, 0))
            if value:
                out[(SNAPSHOT_KEY[quantity], segment, dh)] = value
            continue
        step = quantity in STEPS
        if not step and quantity not in FLOWS:
            continue
        sums = kept.get(group) if moved and group not in dirty else None
        if sums is not None:
            get = by_day.get
            if step:
                sums = [total + get(old, 0) for total, old in zip(sums, olds, strict=True)]
            else:
                last = get(day - 1, 0)
                sums = [total + last - get(old, 0) for total, old in zip(sums, olds, strict=True)]
        else:
            # running[i]: Σ of the days before day first + i (and, for a step, everything before those)
            days = map(by_day.get, range(first, first + _SPAN), repeat(0))
            running = list(accumulate(days, initial=before.get(group, 0) if step else 0))
            whole = running[_SPAN]
            sums = [running[_SPAN - n] if step else whole - running[_SPAN - n] for n in _DAYS]
        kept[group] = sums
        names = _WINDOW_KEYS[quantity]
        if step:
            for name, start, total in zip(names, starts, sums, strict=True):
                value = total + cell((quantity, segment, start), 0) + cell((quantity, segment, start + 1), 0)
                if value:
                    out[(name, segment, dh)] = value
        else:
            now = cell((quantity, segment, dh), 0)  # the hour of D, in every window
            for name, start, total in zip(names, starts, sums, strict=True):
                value = total - cell((quantity, segment, start), 0) + now
                if value:
                    out[(name, segment, dh)] = value
    live.captured_day = day
    dirty.clear()
    return out


def difference(after: Mapping[Key, int], before: Mapping[Key, int]) -> dict[Key, int]:
    out = {key: value - before.get(key, 0) for key, value in after.items()}
    for key, value in before.items():
        if key not in after:
            out[key] = -value
    return {key: value for key, value in out.items() if value}


class PointView:
    """One point's summed cells, read the way `series.compute_series` reads the live ledger."""

    def __init__(self, cells: Mapping[tuple[str, str], int]) -> None:
        self.cells = cells  # (history quantity, segment) -> value

    def advance_horizon(self, horizon: int) -> None:
        """A point is final or revised by its cells: nothing to fold."""

    def snapshot(self, quantity: str, segment: str) -> int:
        return self.cells.get((SNAPSHOT_KEY[quantity], segment), 0)

    def window_sums(self, quantity: str, segment: str, starts: Sequence[int]) -> list[int]:
        assert len(starts) == len(_LENGTHS), "one start per window, in WINDOWS order"
        return [self.cells.get((name, segment), 0) for name in _WINDOW_KEYS[quantity]]


class Finals:
    """What a shard keeps of its final points: the latest final midnight (as an hour), the hour its points were
    last cut at (older than the kept days), and per final midnight the (quantity, segment) pairs it had cells of,
    as a bit mask over `pairs`: enough to delete those cells from a compacted partials topic once the point ages
    out, for a few bytes a point."""

    def __init__(
        self,
        hour: int = 0,
        cut: int = 0,
        pairs: Sequence[tuple[str, str]] = (),
        shapes: Mapping[int, int] | None = None,
    ) -> None:
        self.hour = hour
        self.cut = cut
        self.pairs = list(pairs)
        self._index = {pair: i for i, pair in enumerate(self.pairs)}
        self.shapes = dict(shapes or {})  # hour -> bit i set: the point had a base cell of pairs[i]

    def key(self, key: Key) -> Key:
        """Where a change to a point's cell goes: the cell itself, or for a final point its overlay."""
        quantity, segment, hour = key
        if hour > self.hour or quantity in BASE_OF:
            return key
        return (OVERLAY[quantity], segment, hour)

    def finalize(self, cells: PointCells, hour: int) -> None:
        """The points at or before `hour` are final: drop their base cells from `cells` (already published) and
        remember their shapes."""
        index, shapes = self._index, self.shapes
        for pair, hours in cells.values.pop_through(hour, BASE_OF).items():
            bit = index.get(pair)
            if bit is None:
                bit = index[pair] = len(self.pairs)
                self.pairs.append(pair)
            mask = 1 << bit
            for at in hours:
                shapes[at] = shapes.get(at, 0) | mask
        self.hour = max(self.hour, hour)

    def cut_before(self, cutoff: int) -> list[Key]:
        """Forget the final points at or before hour `cutoff`: the keys of the base cells they had."""
        keys: list[Key] = []
        for hour in [hour for hour in self.shapes if hour <= cutoff]:
            mask = self.shapes.pop(hour)
            keys += [(*self.pairs[bit], hour) for bit in range(mask.bit_length()) if mask >> bit & 1]
        self.cut = max(self.cut, cutoff)
        return keys
