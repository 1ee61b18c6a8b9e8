"""Event-time alignment of the input partitions a router reads: a record is routed once no partition with records
left is more than a slack behind it, so shards see events about in time order even when one topic is far denser.

Why it matters: a shard revises every history point after an event it applies late (SPEC §5), so a dense topic
read weeks behind a sparse one costs a revision of weeks of points per event. Pausing whole partitions is not
enough: one fetch of a sparse topic can span weeks of events. So the router holds the records it fetched, per
partition, and releases each partition's prefix up to the floor (the earliest event time among partitions with
records left) plus the slack. Order never changes a metric (SPEC §2); this only keeps revisions rare.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Collection, Hashable, Mapping
from dataclasses import dataclass, field
from typing import Generic, TypeVar

P = TypeVar("P", bound=Hashable)  # a partition
R = TypeVar("R")  # what is held of a record


@dataclass
class Merge(Generic[P, R]):
    """Records held per partition, in offset order, each with its event time (None: no valid event in it)."""

    slack_us: int
    held: dict[P, deque[tuple[int | None, R]]] = field(default_factory=dict)

    def add(self, partition: P, records: list[tuple[int | None, R]]) -> None:
        self.held.setdefault(partition, deque()).extend(records)

    def _head(self, partition: P) -> int | None:
        """The event time of the partition's first held record that has one."""
        return next((t for t, _ in self.held[partition] if t is not None), None)

    def release(self, latest: Mapping[P, int], unread: Collection[P]) -> list[tuple[P, R]]:
        """The records that may be routed now, each partition's in offset order, and no longer held.

        A partition's held records go while their time is at most the slack after the earliest time of every other
        partition that may still bring records: the head time of one holding records, and for one with records
        still unread on the broker and none held, the latest event time routed from it (`latest`; one that routed
        none yet holds the others back until its first fetch). With no other partition, all go. A record without
        a time goes with the one before it. Repeated until nothing more goes, so partitions that hold records
        alternate without waiting for a fetch."""
        last = dict(latest)  # and the times released by this call
        out: list[tuple[P, R]] = []
        progressed = True
        while progressed:
            progressed = False
            waiting = [last.get(p) for p in unread if not self.held.get(p)]
            blocked = any(t is None for t in waiting)  # a partition of unknown time: only untimed records go
            floor = min((t for t in waiting if t is not None), default=None)
            heads = {p: self._head(p) for p, queue in self.held.items() if queue}
            for partition, queue in self.held.items():
                others = [t for p, t in heads.items() if p != partition and t is not None]
                if floor is not None:
                    others.append(floor)
                bound = None if not others else min(others) + self.slack_us
                while queue and (queue[0][0] is None or (not blocked and (bound is None or queue[0][0] <= bound))):
                    t, record = queue.popleft()
                    out.append((partition, record))
                    if t is not None and t > last.get(partition, t - 1):
                        last[partition] = t
                    progressed = True
        return out

    def release_all(self) -> list[tuple[P, R]]:
        out = [(partition, record) for partition, queue in self.held.items() for _, record in queue]
        self.held.clear()
        return out

    def holding(self) -> set[P]:
        return {partition for partition, queue in self.held.items() if queue}

    def clear(self) -> None:
        self.held.clear()
