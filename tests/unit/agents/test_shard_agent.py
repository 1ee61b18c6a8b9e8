"""The shard agent with no broker: its periodic snapshots, and the order in which it reads spans again."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import NamedTuple

import pytest
from aiokafka import TopicPartition

from revpulse.agents.base import ProducerService
from revpulse.agents.shard_agent import ShardAgent
from revpulse.agents.snapshots import SnapshotStore
from revpulse.agents.span_reader import REREAD_RECORDS, SpanReader
from revpulse.streams.engine import EngineConfig
from revpulse.streams.outputs import Outputs
from revpulse.streams.partition import Router, Shard, ShardState
from revpulse.streams.pipeline import decoder
from revpulse.streams.rollup import Rollup
from revpulse.streams.wire import SPAN_RECORDS, Item, Span, encode_items, encode_spans
from tests.support.deployment import settings_for
from tests.unit.streams.test_wire import EVENT, routed


def test_a_copy_that_cannot_be_forked_is_logged_and_tried_again_next_turn(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = settings_for(tmp_path)
    config = EngineConfig()
    producer = ProducerService(settings)
    rollup = Rollup()
    snapshots = SnapshotStore(settings, config, producer, lambda role, reason: None)
    spans = SpanReader(settings, Router(decoder(settings), settings.shards), lambda reason: None)
    agent = ShardAgent(settings, config, producer, snapshots, rollup, Outputs(settings, rollup, dict), spans)
    agent.shards[3] = Shard(3, config)
    agent.shards[3].state.next_offset = 40  # applied since its last snapshot (none): due, size unknown

    def no_fork(states: dict[int, ShardState]) -> None:
        raise OSError(12, "Cannot allocate memory")

    snapshots.encode_aside = no_fork  # type: ignore[method-assign,assignment]
    with caplog.at_level(logging.ERROR):
        asyncio.run(agent._snapshot())

    assert "could not fork a copy to encode snapshots of shards [3]" in caplog.text
    assert agent._due().keys() == {3}


def routed_item() -> Item:
    (item,) = routed(EVENT)
    return item  # type: ignore[return-value]


class _Record(NamedTuple):
    value: bytes | None
    partition: int = 0
    offset: int = 0


class _Spans:
    """Stands in for the input topics: each span reads back as one item naming it; `apart`: a list a span, as
    when the records are over the reader's budget."""

    def __init__(self, apart: bool = False) -> None:
        self.calls: list[list[Span]] = []
        self.apart = apart

    async def chunks(self, shard_id: int, spans: list[Span]) -> AsyncIterator[list[Item]]:
        self.calls.append(spans)
        items = [self.item(shard_id, span) for span in spans]
        for chunk in [[item] for item in items] if self.apart else [items]:
            yield chunk

    def twin(self) -> _Spans:
        return self

    def item(self, shard_id: int, span: Span) -> Item:
        return [shard_id, *span]

    async def stop(self) -> None:
        pass


def _agent(tmp_path: Path, spans: _Spans) -> ShardAgent:
    settings = settings_for(tmp_path)
    producer = ProducerService(settings)
    rollup = Rollup()
    snapshots = SnapshotStore(settings, EngineConfig(), producer, lambda role, reason: None)
    outputs = Outputs(settings, rollup, dict)
    return ShardAgent(settings, EngineConfig(), producer, snapshots, rollup, outputs, spans)  # type: ignore[arg-type]


def test_spans_are_read_again_in_order_at_most_reread_records_at_a_time(tmp_path: Path) -> None:
    topic = settings_for(tmp_path).topics.billing
    a = (topic, 0, 0, 9_999, 7)  # 10,000 records
    b = (topic, 1, 0, 9_999, 7)  # 10,000: with a, REREAD_RECORDS
    c = (topic, 0, 10_000, 10_000, 8)  # one more: read apart
    spans = _Spans()
    agent = _agent(tmp_path, spans)

    async def read(records: list[_Record]) -> list[list[Item]]:
        return [items async for items in agent._items(3, records, spans)]  # type: ignore[arg-type]

    assert REREAD_RECORDS == 20_000 and SPAN_RECORDS == 10_000
    apart = [_Record(encode_spans([a])), _Record(encode_spans([b])), _Record(encode_spans([c]))]
    assert asyncio.run(read(apart)) == [[[3, *a], [3, *b]], [[3, *c]]]
    assert spans.calls == [[a, b], [c]]
    # One record naming them all is read in the same pieces.
    assert asyncio.run(read([_Record(encode_spans([a, b, c]))])) == [[[3, *a], [3, *b]], [[3, *c]]]
    assert spans.calls[2:] == [[a, b], [c]]


def test_the_readers_lists_are_applied_apart_and_the_last_with_the_items_after_it(tmp_path: Path) -> None:
    """Records over the reader's budget come in several lists: each is applied before the next is read, but
    the last goes on with the items of the records after it, as one list does."""
    topic = settings_for(tmp_path).topics.billing
    a, b = (topic, 0, 0, 4, 7), (topic, 0, 5, 9, 7)
    item = routed_item()
    records = [_Record(encode_spans([a, b]), offset=0), _Record(encode_items([item]), offset=1)]

    def read(spans: _Spans) -> list[list[Item]]:
        async def run() -> list[list[Item]]:
            return [items async for items in _agent(tmp_path, spans)._items(3, records, spans)]  # type: ignore[arg-type]

        return asyncio.run(run())

    assert read(_Spans()) == [[[3, *a], [3, *b], item]]
    assert read(_Spans(apart=True)) == [[[3, *a]], [[3, *b], item]]


def test_a_batch_of_nothing_to_apply_is_still_applied_once(tmp_path: Path) -> None:
    agent = _agent(tmp_path, _Spans())
    junk = [_Record(b"garbage", offset=4)]

    async def read() -> list[list[Item]]:
        return [items async for items in agent._items(0, junk, agent.spans)]  # type: ignore[arg-type]

    assert asyncio.run(read()) == [[]]


class _Fetched:
    """Stands in for the shard-topic consumer: the high watermark each partition's last fetch showed."""

    def __init__(self, topic: str, highwater: dict[int, int]) -> None:
        self.topic = topic
        self.highwaters = highwater

    def highwater(self, tp: object) -> int | None:
        assert getattr(tp, "topic", None) == self.topic
        return self.highwaters.get(getattr(tp, "partition", -1))


def test_a_shard_serves_only_once_it_reached_the_end_of_its_partition_as_first_fetched(tmp_path: Path) -> None:
    """A previous owner may have applied, on the local path, items past its last commit: a new owner is not
    ready at the committed offset but at the end its first fetch shows; a later end does not hold it back."""
    agent = _agent(tmp_path, _Spans())
    consumer = _Fetched(agent.topics[0], {})
    agent.consumer = consumer  # type: ignore[assignment]
    for shard_id, (applied, committed) in {0: (10, 10), 1: (4, 10), 2: (10, 10)}.items():
        agent.shards[shard_id] = Shard(shard_id, EngineConfig())
        agent.shards[shard_id].state.next_offset = applied
        agent.catching_up[shard_id] = committed
        agent._end_unseen.add(shard_id)

    asyncio.run(agent.idle())  # no fetch answered yet: nothing is known of the ends
    assert agent.catching_up == {0: 10, 1: 10, 2: 10}

    consumer.highwaters.update({0: 13, 1: 10, 2: 10})
    asyncio.run(agent.idle())
    assert agent.catching_up == {0: 13, 1: 10}
    assert agent._letters_unread, "shard 0's previous owner may have written letters past its commit"

    consumer.highwaters.update({0: 20, 1: 30})  # written since: live traffic, not a previous owner's
    agent.shards[0].state.next_offset = 13
    agent.shards[1].state.next_offset = 10
    asyncio.run(agent.idle())
    assert agent.catching_up == {}
    assert agent.ready is False  # not assigned in this test
    agent.assigned = True
    assert agent.ready is True


class _Named(_Spans):
    """Records the spans it is asked for; they name no item (records of other shards)."""

    async def chunks(self, shard_id: int, spans: list[Span]) -> AsyncIterator[list[Item]]:
        async for _ in super().chunks(shard_id, spans):
            pass
        yield []


class _Positioned:
    """Stands in for the shard-topic consumer after `on_assigned` moved partition 0 to offset 0."""

    def __init__(self, topic: str, position: int) -> None:
        self.tp = TopicPartition(topic, 0)
        self.at = position

    def assignment(self) -> set[TopicPartition]:
        return {self.tp}

    async def position(self, tp: TopicPartition) -> int:
        return self.at

    def highwater(self, tp: TopicPartition) -> int | None:
        return None


def test_a_batch_fetched_before_the_partition_moved_to_its_shards_offset_is_not_applied(tmp_path: Path) -> None:
    """The consumer fetched offset 1 on (from the committed offset) while `on_assigned` ran, which then moved it
    to the shard's offset 0: that batch is dropped and the partition read again from 0, in order."""
    spans = _Named()
    agent = _agent(tmp_path, spans)
    consumer = _Positioned(agent.topics[0], 0)
    agent.consumer = consumer  # type: ignore[assignment]
    agent.shards[0] = Shard(0, EngineConfig())
    published: list[object] = []
    committed: list[dict[TopicPartition, int]] = []

    async def publish(outputs: list[object]) -> None:
        published.extend(outputs)

    async def commit(offsets: dict[TopicPartition, int]) -> None:
        committed.append(offsets)

    agent._publish = publish  # type: ignore[method-assign,assignment]
    agent.commit = commit  # type: ignore[method-assign]
    topic = settings_for(tmp_path).topics.billing
    stale = [_Record(encode_spans([(topic, 0, 5, 9, 7)]), 0, 1)]
    asyncio.run(agent.handle({consumer.tp: stale}))  # type: ignore[dict-item]
    assert (agent.shards[0].state.next_offset, spans.calls, published, committed) == (0, [], [], [{}])

    consumer.at = 2  # the fetch from 0 handed out offsets 0 and 1
    fresh = [_Record(encode_spans([(topic, 0, 0, 4, 7)]), 0, 0), *stale]
    asyncio.run(agent.handle({consumer.tp: fresh}))  # type: ignore[dict-item]
    assert agent.shards[0].state.next_offset == 2
    assert spans.calls == [[(topic, 0, 0, 4, 7), (topic, 0, 5, 9, 7)]]
    assert committed[-1] == {consumer.tp: 2}


class _ThreeLists(_Spans):
    """Reads any spans back as three lists of real items; `between` runs as the third is read, once the first
    was applied (the shard agent holds a list back until the next arrives)."""

    def __init__(self, between: Callable[[], None] = lambda: None) -> None:
        super().__init__()
        self.between = between
        events = [{**EVENT, "event_id": f"e{n}", "account_id": f"a{n}", "subscription_id": f"s{n}"} for n in range(3)]
        self.lists = [[item] for item in routed(*events)]

    async def chunks(self, shard_id: int, spans: list[Span]) -> AsyncIterator[list[Item]]:
        self.calls.append(spans)
        yield self.lists[0]  # type: ignore[misc]
        yield self.lists[1]  # type: ignore[misc]
        self.between()
        yield self.lists[2]  # type: ignore[misc]


def _standby(tmp_path: Path, reader: _ThreeLists) -> tuple[ShardAgent, Shard, list[_Record]]:
    agent = _agent(tmp_path, reader)
    shard = agent.standby[0] = Shard(0, EngineConfig())
    shard.state.next_offset = 5
    topic = settings_for(tmp_path).topics.billing
    return agent, shard, [_Record(encode_spans([(topic, 0, 0, 1, 7)]), 0, 5)]


def test_a_standby_applies_the_lists_it_reads_outside_the_lock_and_moves_on_at_the_end(tmp_path: Path) -> None:
    reader = _ThreeLists()
    agent, shard, records = _standby(tmp_path, reader)
    asyncio.run(agent._follow(shard, 5, records))  # type: ignore[arg-type]
    assert shard.state.next_offset == 6
    assert shard.state.outcomes[("billing.events", "subscription.started", "accepted")] == 3


def test_a_standby_taken_over_between_two_lists_is_left_at_its_offset(tmp_path: Path) -> None:
    """The new owner reads the record again from offset 5 and skips the item already applied."""
    agent: ShardAgent | None = None
    reader = _ThreeLists(lambda: agent.standby.pop(0) and None if agent else None)
    agent, shard, records = _standby(tmp_path, reader)
    asyncio.run(agent._follow(shard, 5, records))  # type: ignore[arg-type]
    assert shard.state.next_offset == 5
    assert shard.state.outcomes[("billing.events", "subscription.started", "accepted")] == 1
    shard.apply([item for chunk in reader.lists for item in chunk], 6)
    assert shard.state.outcomes[("billing.events", "subscription.started", "accepted")] == 3


class _Committed:
    """Stands in for the shard-topic consumer on assignment: the offsets committed, the seeks made."""

    def __init__(self, committed: dict[TopicPartition, int]) -> None:
        self.offsets = committed
        self.seeks: dict[TopicPartition, int] = {}

    async def committed(self, tp: TopicPartition) -> int | None:
        return self.offsets.get(tp)

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.seeks[tp] = offset


def test_the_dead_letters_are_read_once_on_an_assignment_and_not_again_when_nothing_is_owed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first assignment reads the letters written, once, though shard 1 also catches up past its snapshot
    (reason enough on its own); a later one of shards at their commits, with no letters owed, reads none."""
    agent = _agent(tmp_path, _Spans())
    topic = agent.topics[0]
    reads: list[int] = []

    async def read(self: object, settings: object) -> None:
        reads.append(1)

    async def load(committed: dict[int, int]) -> dict[int, ShardState | None]:
        restored = {0: ShardState(Shard(0, EngineConfig()).state.engine, next_offset=5)}
        restored[1] = ShardState(Shard(1, EngineConfig()).state.engine, next_offset=3)
        return {p: restored.get(p) for p in committed}

    async def publish(outputs: list[object]) -> None:
        pass

    monkeypatch.setattr("revpulse.agents.letters.WrittenLetters.read", read)
    agent.snapshots.load = load  # type: ignore[method-assign]
    agent._publish = publish  # type: ignore[method-assign,assignment]
    consumer = _Committed({TopicPartition(topic, 0): 5, TopicPartition(topic, 1): 9})
    agent.consumer = consumer  # type: ignore[assignment]

    asyncio.run(agent.on_assigned(set(consumer.offsets)))
    assert (len(reads), agent.catching_up) == (1, {0: 5, 1: 9})
    assert consumer.seeks == {TopicPartition(topic, 0): 5, TopicPartition(topic, 1): 3}

    consumer.offsets = {TopicPartition(topic, 2): 0}
    asyncio.run(agent.on_assigned(set(consumer.offsets)))
    assert len(reads) == 1
