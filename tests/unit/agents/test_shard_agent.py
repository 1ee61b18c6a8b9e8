"""The shard agent with no broker: its periodic snapshots, and the order in which it reads spans again."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import NamedTuple

import pytest

from revpulse.agents.base import ProducerService
from revpulse.agents.shard_agent import ShardAgent
from revpulse.agents.snapshots import SnapshotStore
from revpulse.agents.span_reader import REREAD_RECORDS, SpanReader
from revpulse.streams.engine import EngineConfig
from revpulse.streams.outputs import Outputs
from revpulse.streams.partition import Router, Shard, ShardState
from revpulse.streams.pipeline import decoder
from revpulse.streams.rollup import Rollup
from revpulse.streams.wire import SPAN_RECORDS, Item, Span, encode_spans
from tests.support.deployment import settings_for


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


class _Record(NamedTuple):
    value: bytes | None
    partition: int = 0
    offset: int = 0


class _Spans:
    """Stands in for the input topics: each span reads back as one item naming it."""

    def __init__(self) -> None:
        self.calls: list[list[Span]] = []

    async def items(self, shard_id: int, spans: list[Span]) -> list[Item]:
        self.calls.append(spans)
        return [[shard_id, *span] for span in spans]

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
        return [items async for items in agent._items(3, records)]  # type: ignore[arg-type]

    assert REREAD_RECORDS == 20_000 and SPAN_RECORDS == 10_000
    apart = [_Record(encode_spans([a])), _Record(encode_spans([b])), _Record(encode_spans([c]))]
    assert asyncio.run(read(apart)) == [[[3, *a], [3, *b]], [[3, *c]]]
    assert spans.calls == [[a, b], [c]]
    # One record naming them all is read in the same pieces.
    assert asyncio.run(read([_Record(encode_spans([a, b, c]))])) == [[[3, *a], [3, *b]], [[3, *c]]]
    assert spans.calls[2:] == [[a, b], [c]]


def test_a_batch_of_nothing_to_apply_is_still_applied_once(tmp_path: Path) -> None:
    agent = _agent(tmp_path, _Spans())
    junk = [_Record(b"garbage", offset=4)]

    async def read() -> list[list[Item]]:
        return [items async for items in agent._items(0, junk)]  # type: ignore[arg-type]

    assert asyncio.run(read()) == [[]]
