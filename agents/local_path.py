"""The router's local path: when a shard this worker owns may apply routed items before they cross the shard topic."""

from __future__ import annotations

from collections.abc import Mapping

Plan = dict[int, tuple[int, bool]]  # shard -> (its epoch, whether the router's items were applied here)


class LocalPath:
    """Items for a shard this worker owns are applied as soon as they are routed, a Kafka round trip earlier; they
    still go to the shard topic, the durable log, where the shard skips them undecoded by their acknowledged
    offsets. A shard takes items so only once it has consumed everything it was sent otherwise: up to the end of
    the router's last ordinary send to it, its gate. Until then an item it has not applied could sit in its
    partition before a locally applied one.

    Epochs bump whenever a shard's path closes (its assignment or revocation, a router rebalance), so news about a
    send planned in an older epoch is ignored: its offsets belong to a shard as it was before.

    Knows no shard: callers pass `next_offset`, where a shard this worker owns has consumed its partition to, or
    None for a shard it does not own or that is still catching up, which takes no local items.
    """

    def __init__(self, shards: int) -> None:
        self.shards = shards
        self.epochs: dict[int, int] = {}
        self.gates: dict[int, int] = {}  # shard -> end of the router's last ordinary send to it
        self.applied_ranges: dict[int, list[range]] = {}  # shard -> shard-topic offsets already applied

    def reached_gate(self, shard_id: int, next_offset: int | None) -> bool | None:
        """Whether an owned, caught-up shard has consumed up to its gate; None when that does not apply."""
        gate = self.gates.get(shard_id)
        if next_offset is None or gate is None:
            return None
        return next_offset >= gate

    def plan(self, next_offsets: Mapping[int, int | None]) -> Plan:
        """Per routed shard, its epoch and whether it takes the router's items here, now."""
        return {
            shard_id: (self.epochs.get(shard_id, 0), self.reached_gate(shard_id, next_offset) is True)
            for shard_id, next_offset in next_offsets.items()
        }

    def routed_sent(self, plan: Plan, acked: Mapping[int, list[range]]) -> None:
        """Where the router's records of `plan` landed on the shard topic."""
        for shard_id, (epoch, applied) in plan.items():
            ranges = acked.get(shard_id)
            if not ranges or epoch != self.epochs.get(shard_id, 0):
                continue
            if applied:
                self.applied_ranges.setdefault(shard_id, []).extend(ranges)
            else:
                self.gates[shard_id] = max(self.gates.get(shard_id, 0), *(r.stop for r in ranges))

    def close(self, shard_id: int) -> None:
        """Shut the shard's path until an ordinary send made from now on has landed, and forget older sends."""
        self.epochs[shard_id] = self.epochs.get(shard_id, 0) + 1
        self.gates.pop(shard_id, None)
        self.applied_ranges.pop(shard_id, None)

    def router_rebalanced(self) -> None:
        """The router's input changed hands: earlier records of its new partitions may wait in any shard."""
        for shard_id in range(self.shards):
            self.close(shard_id)

    def applied(self, shard_id: int, offset: int) -> bool:
        """Whether the shard-topic record at `offset` was applied already, so the shard skips it undecoded."""
        return any(offset in offsets for offsets in self.applied_ranges.get(shard_id, ()))

    def consumed(self, shard_id: int, next_offset: int) -> None:
        """The shard consumed its partition up to `next_offset`: the ranges below it cannot be met again."""
        ranges = self.applied_ranges.get(shard_id)
        if ranges:
            self.applied_ranges[shard_id] = [r for r in ranges if r.stop > next_offset]
