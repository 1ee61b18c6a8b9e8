"""Event-time alignment of the input partitions a router reads: none runs more than a slack ahead of another
that still has records to read, so shards see events about in time order even when one topic is far denser."""

from __future__ import annotations

from collections.abc import Collection, Hashable, Mapping


def paused(latest: Mapping[Hashable, int], behind: Collection[Hashable], slack_us: int) -> set[Hashable]:
    """The partitions to pause: those whose latest routed occurred_at is more than `slack_us` after the earliest
    latest among the partitions with records left to read. That earliest is never paused, so reading always
    progresses; a partition that routed no valid event yet neither holds others back nor is held."""
    floor = min((latest[tp] for tp in behind if tp in latest), default=None)
    if floor is None:
        return set()
    return {tp for tp, t in latest.items() if t > floor + slack_us}
