"""Phase two of the two-phase design: the global ledger, as the sum of every shard's partial ledger.

Each worker keeps one, fed by the partials of all shards (its own and the others'), so every worker serves the
same global values: ratios from global numerators and denominators, one `as_of` for all.
"""

from __future__ import annotations

from revpulse.streams.ledger import Key, Ledger
from revpulse.streams.wire import RESET, SEGMENT_SEEN, WATERMARK


class Rollup:
    def __init__(self) -> None:
        self.ledger = Ledger()
        self.partials: dict[int, dict[Key, int]] = {}  # shard -> cell -> that shard's absolute value
        self.watermarks: dict[int, int] = {}
        self.segments_seen: set[str] = set()
        self.version = 0  # bumps on every change (and only then), so readers know when to recompute

    def update(self, shard: int, partials: dict[Key, int]) -> None:
        """Take a shard's absolute cell values, in order; applying the same values twice changes nothing."""
        values = self.partials.setdefault(shard, {})
        changed = False
        for key, value in partials.items():
            quantity = key[0]
            if quantity == RESET:
                changed = self._forget(shard) or changed
            elif quantity == WATERMARK:
                watermark = max(value, self.watermarks.get(shard, value))
                changed = changed or watermark != self.watermarks.get(shard)
                self.watermarks[shard] = watermark
            elif quantity == SEGMENT_SEEN:
                changed = changed or key[1] not in self.segments_seen
                self.segments_seen.add(key[1])
            else:
                before = values.get(key, 0)
                if value != before:
                    changed = True
                    self.ledger.add(key, value - before)
                    if value:
                        values[key] = value
                    else:
                        del values[key]
        if changed:
            # Readers recompute on a new version: an update that moves nothing (the echo of partials already
            # taken, an empty batch) must not cost a recomputation.
            self.version += 1

    def _forget(self, shard: int) -> bool:
        """Drop every cell a shard contributed (its watermark and segments stay: they only ever grow); whether
        there was any."""
        values = self.partials.get(shard, {})
        for key, value in values.items():
            self.ledger.add(key, -value)
        had = bool(values)
        values.clear()
        return had

    @property
    def watermark(self) -> int | None:
        """The largest occurred_at accepted so far over all shards."""
        return max(self.watermarks.values(), default=None)
