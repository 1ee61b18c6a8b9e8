"""When the worker runs a full garbage collection: on memory growth, not only on a clock."""

from __future__ import annotations

import gc
import os
from collections.abc import Callable
from dataclasses import dataclass, field

from revpulse.agents import heap

# The worker freezes what survives each second (`gc.freeze`), so that young collections skip the state. Cycles
# that were alive at a freeze and die later are then only freed by a full collection, which must unfreeze and
# walk every object (0.3–0.7 s on a 720-day state). On a clock of ten minutes, a backfill at full speed left
# hundreds of MiB of such cycles behind between two collections; so a collection also runs whenever the
# resident size grew by `growth` since the last one, but not more often than `min_interval` (at most ~2 % of
# the worker's time), and not while a forked snapshot copy runs (walking every object then copies every page
# the copy still shares).
GROWTH = 1.25
MIN_INTERVAL = 30.0  # seconds
MAX_INTERVAL = 600.0  # seconds: cycles are freed at least this often, however flat the memory


@dataclass
class CollectionPolicy:
    """Decides, from the time and the resident size, when a full collection is due."""

    growth: float = GROWTH
    min_interval: float = MIN_INTERVAL
    max_interval: float = MAX_INTERVAL
    last_at: float = 0.0
    last_rss: int = field(default=0)

    def due(self, now: float, rss: int | None, *, busy: bool = False) -> bool:
        elapsed = now - self.last_at
        if elapsed >= self.max_interval:
            return True
        if busy or elapsed < self.min_interval or rss is None:
            return False
        return rss > self.last_rss * self.growth

    def collected(self, now: float, rss: int | None) -> None:
        self.last_at = now
        if rss is not None:
            self.last_rss = rss


def resident_bytes(statm: str = "/proc/self/statm") -> int | None:
    """This process's resident size, where Linux tells it; None elsewhere."""
    try:
        with open(statm, "rb") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


@dataclass
class Collector:
    """Freezes the survivors every tick, after a full collection when the policy says one is due."""

    policy: CollectionPolicy = field(default_factory=CollectionPolicy)
    # The freed cycles leave holes all over the heap: without a trim the resident size, and so the policy's
    # reference, stays at its high-water mark.
    trim: Callable[[], object] = heap.release_free_memory
    busy: Callable[[], bool] = lambda: False  # a collection would now cost more than usual

    def tick(self, now: float) -> bool:
        """True if a full collection ran."""
        full = self.policy.due(now, resident_bytes(), busy=self.busy())
        if full:
            gc.unfreeze()
            gc.collect()
            self.trim()
            self.policy.collected(now, resident_bytes())
        gc.freeze()
        return full
