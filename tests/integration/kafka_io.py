"""Reading whole topics back from the broker, trusting the fetch high watermark, not ListOffsets.

Tansu 0.6.0 answers ListOffsets(latest) with the last batch's base offset + 1, so `end_offsets` can stop a
reader short; the high watermark a fetch returns is right.
"""

from __future__ import annotations

import asyncio
import time

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition


async def read_topic(bootstrap: str, topic: str, *, settle: float = 1.0, timeout: float = 30.0) -> list[ConsumerRecord]:
    """Every record of `topic`, once no partition has grown for `settle` seconds past its high watermark."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest")
    await consumer.start()
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        deadline = time.monotonic() + timeout
        while not partitions and time.monotonic() < deadline:
            await consumer.force_metadata_update()
            partitions = consumer.partitions_for_topic(topic) or set()
            await asyncio.sleep(0.2)
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        records: list[ConsumerRecord] = []
        quiet_since = time.monotonic()
        while time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=200)
            for batch in batches.values():
                records.extend(batch)
            caught_up = True
            for tp in tps:
                highwater = consumer.highwater(tp)
                caught_up = caught_up and highwater is not None and await consumer.position(tp) >= highwater
            if batches or not caught_up:
                quiet_since = time.monotonic()
            elif time.monotonic() - quiet_since >= settle:
                return records
        raise TimeoutError(f"could not read {topic} to its end within {timeout}s")
    finally:
        await consumer.stop()
