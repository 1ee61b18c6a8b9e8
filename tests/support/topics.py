"""Topics for integration tests on the embedded broker: created, then filled."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic


async def create_topic(bootstrap: str, topic: str, partitions: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, partitions, 1)])
    finally:
        await admin.close()


async def produce(bootstrap: str, topic: str, values: Sequence[bytes], keys: Sequence[bytes] | None = None) -> None:
    """`values` (with `keys`, one each) appended to `topic`, batched as a real producer would."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=20)
    await producer.start()
    try:
        sent = [
            await producer.send(topic, value, key=None if keys is None else keys[i]) for i, value in enumerate(values)
        ]
        await asyncio.gather(*sent)
    finally:
        await producer.stop()
