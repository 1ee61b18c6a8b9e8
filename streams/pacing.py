"""Event-time alignment of the input partitions a router reads: a record is routed once no partition with records
left is more than a slack behind it, so shards see events about in time order even when one topic is far denser.

Why it matters: a shard revises every history point after an event it applies late (SPEC §5), so a dense topic
read weeks behind a sparse one costs a revision of weeks of points per event. Pausing whole partitions is not
enough: one fetch of a sparse topic can span weeks of events. So the router holds the records it fetched, per
partition, and releases each partition's prefix up to the floor (the earliest event time among partitions with
records left) plus the slack. Order never changes a metric (SPEC §2); this only keeps revisions rare.

A record is held as fetched and decoded only when it reaches the front of its partition's queue: only the front
needs a time, and a fetch of a dense partition read slowly (one MiB of small records spans weeks of a sparse
topic) would otherwise be held decoded, at twice its size or more, until the others catch up. Past `pack_after`
records a partition, what it fetches is held packed (`pack`, in chunks), and unpacked a chunk at a time as the
front reaches it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Collection, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

P = TypeVar("P", bound=Hashable)  # a partition
R = TypeVar("R")  # a record as fetched
D = TypeVar("D")  # a record as decoded, which is what is released
R_co = TypeVar("R_co", covariant=True)


class Packed(Protocol[R_co]):
    """Records held in a smaller form than fetched."""

    def unpack(self) -> list[R_co]: ...


@dataclass
class _Queue(Generic[R, D]):
    """A partition's held records in offset order: the decoded ones, those not decoded yet, then those packed."""

    decoded: deque[tuple[int | None, D]] = field(default_factory=deque)
    fetched: deque[R] = field(default_factory=deque)
    packed: deque[Packed[R]] = field(default_factory=deque)

    def __bool__(self) -> bool:
        return bool(self.decoded or self.fetched or self.packed)

    def undecoded(self) -> bool:
        return bool(self.fetched or self.packed)

    def take(self) -> R:
        """The first record not decoded yet (there must be one), no longer held."""
        if not self.fetched:
            self.fetched.extend(self.packed.popleft().unpack())
        return self.fetched.popleft()


@dataclass
class Merge(Generic[P, R, D]):
    """Records held per partition, in offset order. `decode` gives a record's event time (None: no valid event
    in it) and what is released of it; it is called once per record, when the record is first looked at. With
    `pack`, the records a partition adds beyond its first `pack_after` held are packed, `chunk` at a time."""

    slack_us: int
    decode: Callable[[R], tuple[int | None, D]]
    pack: Callable[[Sequence[R]], Packed[R]] | None = None
    pack_after: int = 1024
    chunk: int = 512
    held: dict[P, _Queue[R, D]] = field(default_factory=dict)

    def add(self, partition: P, records: Iterable[R]) -> None:
        queue = self.held.get(partition)
        if queue is None:
            queue = self.held[partition] = _Queue()
        if self.pack is None:
            queue.fetched.extend(records)
            return
        records = list(records)
        plain = 0 if queue.packed else max(0, self.pack_after - len(queue.decoded) - len(queue.fetched))
        queue.fetched.extend(records[:plain])
        for start in range(plain, len(records), self.chunk):
            queue.packed.append(self.pack(records[start : start + self.chunk]))

    def _decode_next(self, queue: _Queue[R, D]) -> int | None:
        """Decode the first record not decoded yet (there must be one); its time."""
        entry = self.decode(queue.take())
        queue.decoded.append(entry)
        return entry[0]

    def _front(self, queue: _Queue[R, D]) -> tuple[int | None, D] | None:
        if not queue.decoded:
            if not queue.undecoded():
                return None
            self._decode_next(queue)
        return queue.decoded[0]

    def _head(self, queue: _Queue[R, D]) -> int | None:
        """The event time of the partition's first held record that has one."""
        t = next((t for t, _ in queue.decoded if t is not None), None)
        while t is None and queue.undecoded():
            t = self._decode_next(queue)
        return t

    def release(self, latest: Mapping[P, int], unread: Collection[P]) -> list[tuple[P, D]]:
        """The records that may be routed now, each partition's in offset order, and no longer held.

        A partition's held records go while their time is at most the slack after the earliest time of every other
        partition that may still bring records: the head time of one holding records, and for one with records
        still unread on the broker and none held, the latest event time routed from it (`latest`; one that routed
        none yet holds the others back until its first fetch). With no other partition, all go. A record without
        a time goes with the one before it. Repeated until nothing more goes, so partitions that hold records
        alternate without waiting for a fetch."""
        last = dict(latest)  # and the times released by this call
        out: list[tuple[P, D]] = []
        progressed = True
        while progressed:
            progressed = False
            waiting = [last.get(p) for p in unread if not self.held.get(p)]
            blocked = any(t is None for t in waiting)  # a partition of unknown time: only untimed records go
            floor = min((t for t in waiting if t is not None), default=None)
            heads = {p: self._head(queue) for p, queue in self.held.items() if queue}
            for partition, queue in self.held.items():
                others = [t for p, t in heads.items() if p != partition and t is not None]
                if floor is not None:
                    others.append(floor)
                bound = None if not others else min(others) + self.slack_us
                while (front := self._front(queue)) is not None:
                    t, record = front
                    if t is not None and (blocked or (bound is not None and t > bound)):
                        break
                    queue.decoded.popleft()
                    out.append((partition, record))
                    if t is not None and t > last.get(partition, t - 1):
                        last[partition] = t
                    progressed = True
        return out

    def release_all(self) -> list[tuple[P, D]]:
        out = []
        for partition, queue in self.held.items():
            out += [(partition, record) for _, record in queue.decoded]
            while queue.undecoded():
                out.append((partition, self.decode(queue.take())[1]))
        self.held.clear()
        return out

    def holding(self) -> set[P]:
        return {partition for partition, queue in self.held.items() if queue}

    def clear(self) -> None:
        self.held.clear()
