"""The bench's topic meter on the embedded broker: what it counts is every record appended, read once."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from bench.topicmeter import TopicMeter


async def _send(bootstrap: str, topic: str, values: list[bytes]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=20)
    await producer.start()
    try:
        sent = [await producer.send(topic, value, key=b"k%d" % (i % 3)) for i, value in enumerate(values)]
        await asyncio.gather(*sent)
    finally:
        await producer.stop()


async def _meter_twice(bootstrap: str, topic: str) -> list[tuple[int, int]]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, 3, 1)])
    finally:
        await admin.close()
    seen = []
    async with TopicMeter(bootstrap, [topic]) as meter:
        await _send(bootstrap, topic, [b"x" * 10] * 30)
        size = (await meter.catch_up(timeout=60))[topic]
        seen.append((size.records, size.bytes))
        # Right after a read: the end must come from fetches answered after this call began, not the last ones.
        await _send(bootstrap, topic, [b"y" * 5] * 7)
        size = (await meter.catch_up(timeout=60))[topic]
        seen.append((size.records, size.bytes))
    return seen


@pytest.mark.integration
@pytest.mark.asyncio
async def test_each_read_counts_what_was_appended_since_the_last(broker: str) -> None:
    topic = f"meter.{uuid.uuid4().hex[:8]}"
    # keys "k0".."k2" are 2 bytes each
    assert await _meter_twice(broker, topic) == [(30, 30 * 12), (37, 30 * 12 + 7 * 7)]
