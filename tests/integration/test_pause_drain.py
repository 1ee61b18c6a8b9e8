"""Held partitions: the router takes what the consumer fetched ahead, then pauses them (`RouterAgent._release`)."""

from __future__ import annotations

import asyncio
import gc
import uuid

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from tests.support.topics import create_topic, produce

COUNT = 2000


def _fetch_readers() -> int:
    """aiokafka's readers of fetched records (`PartitionRecords`) alive now."""
    return sum(type(o).__name__ == "PartitionRecords" for o in gc.get_objects())


async def _pause_after_fetching_ahead(broker: str, topic: str, *, take_first: bool) -> tuple[list[int], int]:
    """Read 10 records, let the consumer fetch ahead, pause (taking the fetched-ahead records first or not), then
    resume and read the rest: the offsets read, and the fetch readers left behind by the pause."""
    tp = TopicPartition(topic, 0)
    consumer = AIOKafkaConsumer(bootstrap_servers=broker, group_id=None, enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        batch = await consumer.getmany(tp, timeout_ms=5000, max_records=10)
        await asyncio.sleep(0.3)  # the consumer fetches ahead meanwhile
        gc.freeze()  # as the worker does every second (`agents.collector`)
        ahead = await consumer.getmany(tp, timeout_ms=0) if take_first else {}
        consumer.pause(tp)
        assert await consumer.getmany(timeout_ms=300) == {}
        gc.unfreeze()  # (no collection: what the freeze kept alive is still there)
        left = _fetch_readers()
        consumer.resume(tp)
        offsets = [r.offset for part in (batch, ahead) for r in part.get(tp, [])]
        while len(offsets) < COUNT and (more := await consumer.getmany(tp, timeout_ms=5000)):
            offsets += [r.offset for r in more.get(tp, [])]
        return offsets, left
    finally:
        await consumer.stop()


@pytest.mark.integration
@pytest.mark.asyncio
async def test_records_taken_before_a_pause_come_once_in_order_and_leave_no_reader_behind(broker: str) -> None:
    topic = f"pause.{uuid.uuid4().hex[:8]}"
    await create_topic(broker, topic, 1)
    await produce(broker, topic, [b"%06d" % i for i in range(COUNT)])
    offsets, left = await _pause_after_fetching_ahead(broker, topic, take_first=True)
    assert offsets == list(range(COUNT)) and left == 0
    # What taking them first avoids: the pause drops the fetched-ahead records (fetched again after the resume),
    # and their reader, a reference cycle with its generator, stays until a full collection.
    offsets, left = await _pause_after_fetching_ahead(broker, topic, take_first=False)
    assert offsets == list(range(COUNT)) and left == 1
    gc.collect()
    assert _fetch_readers() == 0
