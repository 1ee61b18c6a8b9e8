"""Phase two of the two-phase design: the global ledger, as the sum of every shard's partial ledger.

Each worker keeps one, fed by the partials of all shards (its own and the others'), so every worker serves the
same global values: ratios from global numerators and denominators, one `as_of` for all.
"""

from __future__ import annotations

from collections.abc import Iterator

from revpulse.streams import history
from revpulse.streams.ledger import Key, Ledger
from revpulse.streams.point_rows import PointRows
from revpulse.streams.wire import CUT, FINAL, ORDERING, RESET, SEGMENT_SEEN, WATERMARK, Point

_CONTROL = ORDERING | {WATERMARK, SEGMENT_SEEN}  # what a partial says besides a cell's value


class Rollup:
    def __init__(self) -> None:
        self.ledger = Ledger()
        # Per shard, its absolute value of each cell: its cells of points (but overlays) in rows, the rest here.
        self.partials: dict[int, dict[Key, int]] = {}
        self.point_partials: dict[int, PointRows] = {}
        self.watermarks: dict[int, int] = {}
        self.segments_seen: set[str] = set()
        self.shard_segments: dict[int, set[str]] = {}  # per shard, the segments it saw (they only ever grow)
        self.version = 0  # bumps on every change (and only then), so readers know when to recompute
        # History points as the shards captured them: hour of D -> (quantity, segment) -> Σ over shards, and per
        # shard the midnights it captured; a point's version bumps whenever what it is computed from changes.
        self.points = PointRows()
        self.captured: dict[int, set[int]] = {}
        self.point_versions: dict[int, int] = {}
        self.changed_points: set[int] = set()  # hours whose point changed in this update
        # Per shard, the hour of its last final point: its cells of points up to there are in `points` only, and
        # what it sends for them later (a new owner's or a replay's copy) is ignored. It only grows.
        self.final: dict[int, int] = {}
        self.cut = 0  # points at or before this hour are no longer kept (the latest a shard cut at)

    def update(self, shard: int, partials: dict[Key, int]) -> None:
        """Take a shard's absolute cell values, in order; applying the same values twice changes nothing.

        RESET (value v) forgets the shard's cells but those of its points before hour v, which are final;
        FINAL (value h) folds its cells of the points up to hour h into the sums; CUT (value h) drops the points
        up to hour h."""
        values = self.partials.setdefault(shard, {})
        rows = self.point_partials.get(shard)
        if rows is None:
            rows = self.point_partials[shard] = PointRows()
        changed = live = False
        final = self.final.get(shard, 0)
        for key, value in partials.items():
            quantity = key[0]
            if history.is_history(quantity):
                if key[2] <= self.cut:
                    continue
                if quantity in history.BASE_OF:  # an overlay: few, and kept past `final`
                    before = values.pop(key, 0)
                    if value:
                        values[key] = value
                elif key[2] > final:
                    before = rows.swap(quantity, key[1], key[2], value)
                else:
                    continue
                if value != before:
                    changed = True
                    self._add_point(shard, key, value - before)
            elif quantity not in _CONTROL:
                before = values.get(key, 0)
                if value != before:
                    changed = live = True
                    self.ledger.add(key, value - before)
                    if value:
                        values[key] = value
                    else:
                        del values[key]
            elif quantity == RESET:
                final = self._fold(shard, value - 1)
                changed = self._forget(shard) or changed
            elif quantity == FINAL:
                final = self._fold(shard, value)
            elif quantity == CUT:
                changed = self._cut(value) or changed
            elif quantity == WATERMARK:
                watermark = max(value, self.watermarks.get(shard, value))
                changed = changed or watermark != self.watermarks.get(shard)
                self.watermarks[shard] = watermark
            else:  # SEGMENT_SEEN
                changed = changed or key[1] not in self.segments_seen
                self.segments_seen.add(key[1])
                self.shard_segments.setdefault(shard, set()).add(key[1])
        if live:
            self._touch_derived(shard)
        self._bump_points()
        if changed:
            # Readers recompute on a new version: an update that moves nothing (the echo of partials already
            # taken, an empty batch) must not cost a recomputation.
            self.version += 1

    def shard_cells(self, shard: int) -> dict[Key, int]:
        """Every cell this rollup holds of a shard, with the shard's value."""
        rows = self.point_partials.get(shard)
        return {**self.partials.get(shard, {}), **dict(rows.cells() if rows is not None else ())}

    def _forget(self, shard: int) -> bool:
        """Drop every cell a shard contributed (its watermark and segments stay: they only ever grow); whether
        there was any."""
        values = self.shard_cells(shard)
        for key, value in values.items():
            if history.is_history(key[0]):
                self._add_point(shard, key, -value)
            else:
                self.ledger.add(key, -value)
        had = bool(values)
        # Cleared in place: `update` holds them.
        for kept in (self.partials.get(shard), self.point_partials.get(shard)):
            if kept is not None:
                kept.clear()
        if had:
            self._touch_derived(shard)
        self._bump_points()
        return had

    def _fold(self, shard: int, hour: int) -> int:
        """The shard's points up to `hour` are final: keep its cells of them in the sums only."""
        final = self.final.get(shard, 0)
        if hour <= final:
            return final
        rows = self.point_partials.get(shard)
        if rows is not None:
            rows.drop_through(hour)
        captured = self.captured.get(shard)
        if captured:
            captured.difference_update([h for h in captured if h <= hour])
        self.final[shard] = hour
        return hour

    def _cut(self, hour: int) -> bool:
        """Drop the points up to `hour` (a shard no longer keeps them, and soon no other); whether there were."""
        if hour <= self.cut:
            return False
        self.cut = hour
        gone = self.points.drop_through(hour)
        for h in [h for h in self.point_versions if h <= hour]:
            del self.point_versions[h]
        for captured in self.captured.values():
            captured.difference_update([h for h in captured if h <= hour])
        for values in self.partials.values():
            for key in [key for key in values if key[2] <= hour and history.is_history(key[0])]:
                del values[key]
        for rows in self.point_partials.values():
            rows.drop_through(hour)
        return gone

    def _bump_points(self) -> None:
        for hour in self.changed_points:
            self.point_versions[hour] = self.point_versions.get(hour, 0) + 1
        self.changed_points.clear()

    def _add_point(self, shard: int, key: Key, amount: int) -> None:
        quantity, segment, hour = key
        if quantity in history.BASE_OF:  # a final point's revision adds to the point
            quantity = history.BASE_OF[quantity]
        elif quantity == history.CAPTURED:
            captured = self.captured.setdefault(shard, set())
            if amount > 0:
                captured.add(hour)
            else:
                captured.discard(hour)
        self.points.add(quantity, segment, hour, amount)
        self.changed_points.add(hour)

    def _touch_derived(self, shard: int) -> None:
        """The shard's live cells changed: so did every point it has not captured and is derived from them."""
        watermark = self.watermarks.get(shard)
        if watermark is None:
            return
        captured = self.captured.get(shard, set())
        final = self.final.get(shard, 0)
        for hour in self._point_hours():
            if hour * history.HOUR_US >= watermark and hour not in captured and hour > final:
                self.changed_points.add(hour)

    def _point_hours(self) -> Iterator[int]:
        """The hours of the midnights with a point: those some shard captured, and the watermark's if it is
        one (no shard can have passed it yet)."""
        yield from self.points
        watermark = self.watermark
        if watermark is not None and watermark % history.DAY_US == 0:
            hour = watermark // history.HOUR_US
            if hour not in self.points:
                yield hour

    def history_hours(self, days: int) -> list[int]:
        """The midnights (as hours) with a point, oldest first: at most `days` before the watermark's day."""
        watermark = self.watermark
        if watermark is None or days <= 0:
            return []
        last = watermark // history.DAY_US * 24
        return sorted(hour for hour in self._point_hours() if last - days * 24 < hour <= last)

    def point(self, hour: int) -> dict[tuple[str, str], int]:
        """The cells of the point at the midnight of `hour`, summed over shards: as captured, or for a shard
        whose watermark has not passed it, from the shard's live cells (all its events are before it then)."""
        cells = dict(self.points.get(hour, {}))
        day = hour * history.HOUR_US
        for shard, values in self.partials.items():
            watermark = self.watermarks.get(shard)
            if (
                watermark is None
                or watermark > day
                or hour in self.captured.get(shard, ())
                or hour <= self.final.get(shard, 0)
            ):
                continue  # captured (or final), or the midnight is before its first event
            live = ((key, value) for key, value in values.items() if not history.is_history(key[0]))
            for (quantity, segment, _), value in history.state_at(live, day).items():
                cells[(quantity, segment)] = cells.get((quantity, segment), 0) + value
            # All it saw, it saw by D: as a capture would have marked it.
            for segment in self.shard_segments.get(shard, set()).intersection(history.SEEN_SEGMENTS):
                cells[(history.SEEN, segment)] = cells.get((history.SEEN, segment), 0) + 1
        return cells

    @property
    def watermark(self) -> int | None:
        """The largest occurred_at accepted so far over all shards."""
        return max(self.watermarks.values(), default=None)


class Pending:
    """Partials read from the topic, merged per shard and cell until applied, so that a batch costs one update
    per shard: a later value replaces an earlier one, but never moves before a RESET, FINAL or CUT that came
    between them (see `Rollup.update`), which is applied alone, after what came before it."""

    def __init__(self, rollup: Rollup) -> None:
        self.rollup = rollup
        self.partials: dict[int, dict[Key, int]] = {}

    def add(self, shard: int, key: Key, value: int) -> None:
        if key[0] in ORDERING:
            self.rollup.update(shard, self.partials.pop(shard, {}))
            self.rollup.update(shard, {key: value})
        else:
            self.partials.setdefault(shard, {})[key] = value

    def add_point(self, point: Point) -> None:
        """A shard's cells of one segment at one point, whole: those of its cells there that `point` lacks are
        0. Applied at once, after what came before it, since what it lacks is only known then."""
        shard, segment, hour, cells = point
        self.rollup.update(shard, self.partials.pop(shard, {}))
        rows = self.rollup.point_partials.get(shard)
        held = rows.get(hour, {}) if rows is not None else {}
        update = {(q, segment, hour): 0 for q, s in held if s == segment and q not in cells}
        update.update({(q, segment, hour): amount for q, amount in cells.items()})
        self.rollup.update(shard, update)

    def add_record(self, parsed: tuple[int, Key, int] | Point) -> None:
        """What `wire.parse_partial` read from one record."""
        if isinstance(parsed, Point):
            self.add_point(parsed)
        else:
            self.add(*parsed)

    def apply(self) -> None:
        for shard, partials in self.partials.items():
            self.rollup.update(shard, partials)
        self.partials = {}
