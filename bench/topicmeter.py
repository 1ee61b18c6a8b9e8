"""How much a broker holds per topic: records and payload bytes (key + value), read from the earliest offset.

The embedded broker has no log-size API (no DescribeLogDirs) and answers ListOffsets(latest) short of the log
end, so the meter reads the topics: every record once, counting it, keeping nothing. `TopicMeter.catch_up()` reads
what was appended since its last call up to each partition's fetch high watermark, so a long-running sampler pays
for the new records only. Where nothing is compacted or deleted (the embedded broker), what it counts is what
the broker holds.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, TopicPartition


@dataclass
class TopicSize:
    records: int = 0
    bytes: int = 0  # Σ len(key) + len(value)
    highwater: int = 0  # Σ over the partitions of the fetch high watermark (the next offset)

    def as_dict(self) -> dict[str, int]:
        return {"records": self.records, "bytes": self.bytes, "highwater": self.highwater}


class TopicMeter:
    def __init__(self, bootstrap: str, topics: Iterable[str]) -> None:
        self.topics = list(topics)
        self.sizes = {topic: TopicSize() for topic in self.topics}
        self._positions: dict[TopicPartition, int] = {}
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_partition_fetch_bytes=8 * 1024 * 1024,
            fetch_max_wait_ms=100,
        )

    async def start(self) -> None:
        await self._consumer.start()

    async def stop(self) -> None:
        await self._consumer.stop()

    async def __aenter__(self) -> TopicMeter:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _assign(self) -> list[TopicPartition]:
        """Every partition of the topics that exist now (topics created later join at a later call)."""
        client = self._consumer
        # Topics created after start() are unknown to the consumer's metadata until it is refreshed.
        await client._client.force_metadata_update()
        tps = [
            TopicPartition(topic, partition)
            for topic in self.topics
            for partition in sorted(client.partitions_for_topic(topic) or ())
        ]
        if set(tps) != set(client.assignment()):
            client.assign(tps)
            for tp in tps:
                if tp in self._positions:
                    client.seek(tp, self._positions[tp])
                else:
                    await client.seek_to_beginning(tp)
        return tps

    async def catch_up(self, timeout: float = 300.0) -> dict[str, TopicSize]:
        """Read every topic up to its current fetch high watermarks; the sizes so far."""
        tps = await self._assign()
        if not tps:
            return self.sizes
        client = self._consumer
        deadline = time.monotonic() + timeout
        # A high watermark is only as fresh as the fetch that brought it: the end is judged on fetches answered
        # after this call began, or a call right after another would stop at the old end.
        since_ms = time.time() * 1000
        fetched: set[TopicPartition] = set()
        while True:
            batches = await client.getmany(timeout_ms=200, max_records=50_000)
            for tp, records in batches.items():
                size = self.sizes[tp.topic]
                size.records += len(records)
                size.bytes += sum(len(r.key or b"") + len(r.value or b"") for r in records)
                if records:
                    self._positions[tp] = records[-1].offset + 1
            fetched.update(tp for tp in tps if (client.last_poll_timestamp(tp) or 0) >= since_ms)
            if len(fetched) == len(tps) and all(
                self._positions.get(tp, 0) >= (client.highwater(tp) or 0) for tp in tps
            ):
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"topics {self.topics} not read to their end within {timeout:.0f}s")
        for topic, size in self.sizes.items():
            size.highwater = sum(client.highwater(tp) or 0 for tp in tps if tp.topic == topic)
        return self.sizes


async def topic_sizes(bootstrap: str, topics: Iterable[str], timeout: float = 300.0) -> dict[str, TopicSize]:
    """Records and payload bytes of each topic, read once from the start."""
    async with TopicMeter(bootstrap, topics) as meter:
        return await meter.catch_up(timeout)
