"""The local path: gates, epochs and applied ranges, driven by a fake shard topic instead of a broker."""

from __future__ import annotations

from revpulse.agents.local_path import LocalPath, Plan


class FakeShardTopic:
    """One partition per shard: a send appends to it and acknowledges the offsets it got, as `send_all` does."""

    def __init__(self) -> None:
        self.partitions: dict[int, list[str]] = {}

    def send(self, routed: dict[int, list[str]]) -> dict[int, list[range]]:
        acked: dict[int, list[range]] = {}
        for shard_id, items in routed.items():
            log = self.partitions.setdefault(shard_id, [])
            acked[shard_id] = [range(len(log), len(log) + len(items))]
            log.extend(items)
        return acked


class FakeShard:
    """Consumes its partition as the shard agent does: skips the records the local path says it applied."""

    def __init__(self, shard_id: int, path: LocalPath, topic: FakeShardTopic) -> None:
        self.id = shard_id
        self.path = path
        self.topic = topic
        self.next_offset = 0
        self.applied: list[str] = []

    def consume(self) -> list[str]:
        """Consume the partition to its end; returns the items it decoded (not skipped)."""
        log = self.topic.partitions.get(self.id, [])
        fresh = range(self.next_offset, len(log))
        decoded = [log[offset] for offset in fresh if not self.path.applied(self.id, offset)]
        self.applied += decoded
        self.next_offset = len(log)
        self.path.consumed(self.id, self.next_offset)
        return decoded


def route(path: LocalPath, topic: FakeShardTopic, shard: FakeShard, items: list[str]) -> Plan:
    """One router batch for `shard`: plan, apply locally if open, send, report where the send landed."""
    plan = path.plan({shard.id: shard.next_offset})
    if plan[shard.id][1]:
        shard.applied += items
    path.routed_sent(plan, topic.send({shard.id: items}))
    return plan


def test_a_shard_without_a_gate_or_not_owned_and_caught_up_is_not_subject_to_the_gate() -> None:
    path = LocalPath(shards=2)
    assert path.reached_gate(0, 5) is None  # no ordinary send to it landed yet
    path.routed_sent({0: (0, False)}, {0: [range(0, 3)]})
    assert path.reached_gate(0, None) is None  # not owned here, or still catching up
    assert path.reached_gate(1, 5) is None  # a shard the path knows nothing of
    assert path.plan({0: None, 1: 5}) == {0: (0, False), 1: (0, False)}


def test_a_shard_takes_local_items_once_it_consumed_up_to_its_gate() -> None:
    path = LocalPath(shards=1)
    path.routed_sent({0: (0, False)}, {0: [range(0, 3)]})
    assert path.gates == {0: 3}
    assert path.reached_gate(0, 2) is False
    assert path.reached_gate(0, 3) is True
    assert path.reached_gate(0, 4) is True
    assert path.plan({0: 2}) == {0: (0, False)}
    assert path.plan({0: 3}) == {0: (0, True)}


def test_the_gate_moves_to_the_furthest_stop_of_the_ordinary_sends() -> None:
    path = LocalPath(shards=2)
    path.routed_sent({0: (0, False)}, {0: [range(0, 3)]})
    path.routed_sent({0: (0, False), 1: (0, False)}, {0: [range(3, 5), range(5, 9)], 1: [range(0, 1)]})
    assert path.gates == {0: 9, 1: 1}
    path.routed_sent({0: (0, False)}, {0: [range(1, 2)]})  # news of an earlier send never moves it back
    assert path.gates == {0: 9, 1: 1}
    path.routed_sent({0: (0, False), 1: (0, False)}, {1: []})  # nothing acknowledged for a shard: no news
    assert path.gates == {0: 9, 1: 1}
    assert path.applied_ranges == {}


def test_a_local_apply_records_its_offsets_to_skip_and_leaves_the_gate() -> None:
    path = LocalPath(shards=2)
    path.routed_sent({0: (0, False)}, {0: [range(0, 3)]})
    path.routed_sent({0: (0, True)}, {0: [range(3, 5)]})
    path.routed_sent({0: (0, True)}, {0: [range(5, 6), range(7, 9)]})
    assert path.gates == {0: 3}
    assert path.applied_ranges == {0: [range(3, 5), range(5, 6), range(7, 9)]}
    assert [offset for offset in range(10) if path.applied(0, offset)] == [3, 4, 5, 7, 8]
    assert not path.applied(1, 3)


def test_applied_ranges_wholly_below_the_consumed_offset_are_pruned() -> None:
    path = LocalPath(shards=2)
    path.routed_sent({0: (0, True)}, {0: [range(3, 5), range(7, 8)]})
    path.consumed(0, 4)
    assert path.applied_ranges == {0: [range(3, 5), range(7, 8)]}
    path.consumed(0, 5)
    assert path.applied_ranges == {0: [range(7, 8)]}
    path.consumed(0, 8)
    assert path.applied_ranges == {0: []}
    path.consumed(1, 8)
    assert path.applied_ranges == {0: []}


def test_a_close_bumps_the_epoch_and_news_of_a_send_planned_before_it_is_ignored() -> None:
    path = LocalPath(shards=2)
    path.routed_sent({0: (0, False)}, {0: [range(0, 3)]})
    path.routed_sent({0: (0, True)}, {0: [range(3, 5)]})
    ordinary, local = path.plan({0: None}), path.plan({0: 5})
    assert (ordinary, local) == ({0: (0, False)}, {0: (0, True)})
    path.close(0)  # the shard was revoked, or assigned again
    assert (path.epochs, path.gates, path.applied_ranges) == ({0: 1}, {}, {})
    path.routed_sent(ordinary, {0: [range(5, 7)]})
    path.routed_sent(local, {0: [range(7, 8)]})
    assert (path.gates, path.applied_ranges) == ({}, {})
    assert path.plan({0: 8}) == {0: (1, False)}
    path.routed_sent({0: (1, False)}, {0: [range(8, 9)]})
    assert path.gates == {0: 9}
    assert path.plan({0: 9}) == {0: (1, True)}


def test_a_router_rebalance_closes_every_shard() -> None:
    path = LocalPath(shards=3)
    path.close(1)
    path.routed_sent({0: (0, False), 1: (1, False)}, {0: [range(0, 2)], 1: [range(0, 4)]})
    path.routed_sent({0: (0, True)}, {0: [range(2, 3)]})
    stale = path.plan({0: 3, 1: 4, 2: 0})
    assert stale == {0: (0, True), 1: (1, True), 2: (0, False)}
    path.router_rebalanced()
    assert (path.epochs, path.gates, path.applied_ranges) == ({0: 1, 1: 2, 2: 1}, {}, {})
    path.routed_sent(stale, {0: [range(3, 4)], 1: [range(4, 5)], 2: [range(0, 1)]})
    assert (path.gates, path.applied_ranges) == ({}, {})
    assert path.plan({0: 4, 1: 5, 2: 1}) == {0: (1, False), 1: (2, False), 2: (1, False)}


def test_every_item_reaches_the_shard_once_by_one_path_or_the_other() -> None:
    path, topic = LocalPath(shards=1), FakeShardTopic()
    shard = FakeShard(0, path, topic)
    assert route(path, topic, shard, ["a", "b"]) == {0: (0, False)}
    assert route(path, topic, shard, ["c"]) == {0: (0, False)}  # the router outran the shard: the gate moves on
    assert path.gates == {0: 3}
    assert shard.consume() == ["a", "b", "c"]
    assert route(path, topic, shard, ["d", "e"]) == {0: (0, True)}
    assert path.applied_ranges == {0: [range(3, 5)]}
    assert shard.consume() == []  # both records skipped undecoded
    assert path.applied_ranges == {0: []}
    assert route(path, topic, shard, ["f"]) == {0: (0, True)}
    assert shard.applied == ["a", "b", "c", "d", "e", "f"]
    assert shard.next_offset == 5
    assert path.applied(0, 5)
    assert shard.consume() == []
    assert shard.applied == ["a", "b", "c", "d", "e", "f"]
    assert topic.partitions == {0: ["a", "b", "c", "d", "e", "f"]}


def test_after_a_rebalance_a_shard_decodes_a_locally_applied_record_it_heard_of_too_late() -> None:
    """Its offsets were reported in an older epoch: the shard decodes it, and its own dedupe by source offset
    (`revpulse.streams.partition`) keeps the item from counting twice."""
    path, topic = LocalPath(shards=1), FakeShardTopic()
    shard = FakeShard(0, path, topic)
    route(path, topic, shard, ["a"])
    shard.consume()
    plan = path.plan({0: shard.next_offset})
    assert plan == {0: (0, True)}
    path.router_rebalanced()
    path.routed_sent(plan, topic.send({0: ["b"]}))
    assert not path.applied(0, 1)
    assert shard.consume() == ["b"]
    assert path.plan({0: shard.next_offset}) == {0: (1, False)}
