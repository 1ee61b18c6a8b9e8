"""What the batch agents share: a Faust service around one aiokafka consumer that hands over whole batches.

Faust's per-event stream machinery tops out near 10k events/s here, so each agent is a Faust service (a
documented extension point) running its own aiokafka consumer and processing `getmany` batches end to end.
"""

from __future__ import annotations

import asyncio
import logging
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import KafkaError
from mode import Service

from revpulse.kafka_security import client_options, producer_options
from revpulse.settings import Settings

log = logging.getLogger(__name__)

# Records a batch takes at most. A batch's decoded events and what they produce are the worker's largest transient
# memory: half of the 10,000 it was cut a long backfill's peak by a sixth, for no throughput this machine can tell
# from its noise (README, Performance).
MAX_BATCH = 5_000
Batches = dict[TopicPartition, list[ConsumerRecord]]


def consumer(settings: Settings, group: str | None, **overrides: Any) -> AIOKafkaConsumer:
    options: dict[str, Any] = {
        "group_id": group,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        # Each consumer buffers up to this per partition it reads: 8 MiB a partition held ~350 MiB more during a
        # backfill (bench.growth, 720 days) for no more events/s. A larger record still comes whole (KIP-74).
        "max_partition_fetch_bytes": 1024 * 1024,
        # And up to this per fetch, over all its partitions (KIP-74; aiokafka shuffles their order, so none
        # starves): a backfill of 16 input partitions otherwise has 16 full fetches in flight at once. 2 MiB
        # took about 10 MiB off a 720-day backfill's peak, with no change in events/s (README, Performance).
        "fetch_max_bytes": 2 * 1024 * 1024,
        # The embedded broker holds a fetch for its whole wait even when data arrives: a short wait keeps each
        # of the three hops (router, shards, rollup) near 50 ms.
        "fetch_max_wait_ms": 100,
        "session_timeout_ms": int(settings.session_timeout * 1000),
        "heartbeat_interval_ms": int(min(3.0, settings.session_timeout / 5) * 1000),
    }
    options.update(overrides)
    return AIOKafkaConsumer(**client_options(settings), **options)


OutRecord = tuple[str, int | None, bytes | None, bytes | None, Any]  # (topic, partition, key, value, headers)


Acked = dict[tuple[str, int], list[range]]  # (topic, partition) -> offsets the broker gave the records sent


async def send_all(producer: AIOKafkaProducer, records: Iterable[OutRecord]) -> Acked:
    """Send records and wait until the broker acknowledged each one, retrying failures with backoff: callers
    commit their input only after this returns, so nothing is lost. Returns the offsets the records got.

    Records go out as whole batches per partition (`send_batch`): a task and a future per record would cost
    more than the processing that produced them. A record without a partition goes to one chosen by its key
    (crc32, so one key always lands in one partition and keeps its order), or to the first partition.
    """
    by_partition: dict[tuple[str, int], list[OutRecord]] = {}
    for record in records:
        topic, partition, key = record[:3]
        if partition is None:
            partitions = sorted(await producer.partitions_for(topic))
            partition = partitions[zlib.crc32(key) % len(partitions)] if key is not None else partitions[0]
        by_partition.setdefault((topic, partition), []).append(record)
    pending = [(topic, partition, batch) for (topic, partition), batch in by_partition.items()]
    acked: Acked = {}
    delay = 0.5
    while pending:
        results = await asyncio.gather(*(_send_partition(producer, *entry) for entry in pending))
        for (topic, partition, _), (_, ranges) in zip(pending, results, strict=True):
            acked.setdefault((topic, partition), []).extend(ranges)
        unsent = [rest for rest, _ in results]
        failed = [(topic, partition, rest) for (topic, partition, _), rest in zip(pending, unsent, strict=True) if rest]
        if failed:
            log.warning("%d records not acknowledged; retrying in %.1fs", sum(len(f[2]) for f in failed), delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 30.0)
        pending = failed
    return acked


async def _send_partition(
    producer: AIOKafkaProducer, topic: str, partition: int, records: list[OutRecord]
) -> tuple[list[OutRecord], list[range]]:
    """Send one partition's records in as many batches as they need; returns the tail not acknowledged, and the
    offsets of those that were."""
    sent: list[tuple[list[OutRecord], Any]] = []
    try:
        chunk: list[OutRecord] = []
        batch = producer.create_batch()
        for record in records:
            _, _, key, value, headers = record
            while batch.append(key=key, value=value, timestamp=None, headers=headers or []) is None:
                if not chunk:
                    raise ValueError(f"a record for {topic} is larger than a whole batch")
                sent.append((chunk, await producer.send_batch(batch, topic, partition=partition)))
                chunk, batch = [], producer.create_batch()
            chunk.append(record)
        if chunk:
            sent.append((chunk, await producer.send_batch(batch, topic, partition=partition)))
    except KafkaError as exc:
        log.warning("sending to %s[%d] failed: %r", topic, partition, exc)
        done = {id(record) for chunk, _ in sent for record in chunk}
        unsent = [record for record in records if id(record) not in done]
    else:
        unsent = []
    results = await asyncio.gather(*(future for _, future in sent), return_exceptions=True)
    acked: list[range] = []
    for i, result in enumerate(results):
        if isinstance(result, BaseException):
            # Everything from the first failed batch on goes again, in order: a later batch overtaking an
            # earlier one would reorder a partition (receivers skip what they have already seen, not gaps).
            log.warning("a batch to %s[%d] failed: %r", topic, partition, result)
            return [record for chunk, _ in sent[i:] for record in chunk] + unsent, acked
        acked.append(range(result.offset, result.offset + len(sent[i][0])))
    return unsent, acked


class BatchAgent(Service):
    """Consumes `topics` in group `group`, calling `handle` with every non-empty batch. Without a group it reads
    every partition of its topic from the beginning."""

    def __init__(self, settings: Settings, topics: list[str], group: str | None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.settings = settings
        self.topics = topics
        self.group = group
        self.consumer: AIOKafkaConsumer | None = None
        self.assigned = False
        self.max_batch = MAX_BATCH

    async def on_start(self) -> None:
        self.consumer = consumer(self.settings, self.group)
        await self.consumer.start()
        if self.group is not None:
            self.consumer.subscribe(self.topics, listener=_Rebalance(self.on_assigned, self.on_revoked))
            return
        tps = await topic_partitions(self.consumer, self.topics[0])
        self.consumer.assign(tps)
        await self.consumer.seek_to_beginning(*tps)
        await self.on_assigned(set(tps))

    async def on_stop(self) -> None:
        if self.consumer is not None:
            await self.consumer.stop()

    @Service.task
    async def _consume(self) -> None:
        assert self.consumer is not None
        while not self.should_stop:
            batches = await self.consumer.getmany(timeout_ms=200, max_records=self.max_batch)
            if batches or self.group is None:
                await self.handle(batches)
            else:
                await self.idle()

    async def handle(self, batches: Batches) -> None:
        raise NotImplementedError

    async def idle(self) -> None:
        """Called when a fetch of a group consumer brought nothing."""

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        """Commit the offsets of partitions still owned; a failure only delays the commit to the next batch."""
        assert self.consumer is not None
        owned = self.consumer.assignment()
        offsets = {tp: offset for tp, offset in offsets.items() if tp in owned}
        if not offsets:
            return  # aiokafka takes an empty mapping for a mistake (ValueError), not for nothing to commit
        try:
            await self.consumer.commit(offsets)
        except KafkaError as exc:
            log.warning("%s: commit failed (%r); the next batch commits past it", self.group, exc)

    async def on_assigned(self, partitions: set[TopicPartition]) -> None:
        self.assigned = True

    async def on_revoked(self, partitions: set[TopicPartition]) -> None:
        """Called before a rebalance takes partitions away."""


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(
        self,
        assigned: Callable[[set[TopicPartition]], Awaitable[None]],
        revoked: Callable[[set[TopicPartition]], Awaitable[None]],
    ) -> None:
        self.assigned = assigned
        self.revoked = revoked

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self.revoked(revoked)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        await self.assigned(assigned)


async def topic_partitions(client: AIOKafkaConsumer, topic: str) -> list[TopicPartition]:
    """Every partition of `topic`, asking the broker when the client's metadata does not know it yet."""
    partitions = client.partitions_for_topic(topic) or set()
    if not partitions:
        # The consumer has no metadata refresh of its own: read the cluster's, which also names the topic's
        # partitions.
        cluster = await client._client.fetch_all_metadata()
        partitions = cluster.partitions_for_topic(topic) or set()
    return [TopicPartition(topic, p) for p in sorted(partitions)]


async def read_topic(
    settings: Settings, topic: str, *, settle: float = 0.3, timeout: float = 60.0
) -> list[ConsumerRecord]:
    """Every record of `topic`, in order per partition, up to each partition's fetch high watermark."""
    return [record async for record in scan_topic(settings, topic, settle=settle, timeout=timeout)]


async def scan_topic(
    settings: Settings, topic: str, *, tail: int | None = None, settle: float = 0.3, timeout: float = 60.0
) -> AsyncIterator[ConsumerRecord]:
    """The records of `topic` as they are fetched, in order per partition, up to each partition's fetch high
    watermark; with `tail`, only the last `tail` records of each partition. TimeoutError past `timeout`.

    Never asks ListOffsets for the end: the embedded broker answers it short of the real log end.
    """
    reader = consumer(settings, None)
    await reader.start()
    try:
        tps = await topic_partitions(reader, topic)
        if not tps:
            return
        reader.assign(tps)
        await reader.seek_to_beginning(*tps)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        quiet_since = loop.time()
        skipped_to_tail: set[TopicPartition] = set()
        while loop.time() < deadline:
            batches = await reader.getmany(timeout_ms=100)
            for tp, batch in batches.items():
                highwater = reader.highwater(tp)
                if tail is not None and tp not in skipped_to_tail and highwater is not None:
                    # The first fetch tells the end; the records before the tail are never read.
                    skipped_to_tail.add(tp)
                    start = max(0, highwater - tail)
                    if batch and batch[0].offset < start:
                        reader.seek(tp, max(start, batch[-1].offset + 1))
                        batch = [record for record in batch if record.offset >= start]
                for record in batch:
                    yield record
            caught_up = True
            for tp in tps:
                highwater = reader.highwater(tp)
                caught_up = caught_up and highwater is not None and await reader.position(tp) >= highwater
            now = loop.time()
            if batches or not caught_up:
                quiet_since = now
            elif now - quiet_since >= settle:
                return
        raise TimeoutError(f"could not read {topic} to its end within {timeout}s")
    finally:
        await reader.stop()


class ProducerService(Service):
    """The worker's one aiokafka producer, created on the running loop and shared by the agents."""

    def __init__(self, settings: Settings, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.settings = settings
        self._producer: AIOKafkaProducer | None = None

    @property
    def producer(self) -> AIOKafkaProducer:
        assert self._producer is not None, "the producer service has not started"
        return self._producer

    async def on_start(self) -> None:
        self._producer = AIOKafkaProducer(
            **producer_options(self.settings), linger_ms=5, max_batch_size=1024 * 1024, acks="all"
        )
        await self._producer.start()

    async def on_stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
