"""The embedded broker: process lifecycle, and a Kafka round trip through aiokafka."""

from __future__ import annotations

import socket
import uuid

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.structs import ConsumerRecord, OffsetAndMetadata

from revpulse.local.broker import (
    BrokerError,
    EmbeddedBroker,
    broker_argv,
    free_port,
    kafka_ping,
)

# Small session timeout: Tansu makes every join wait about half of it.
GROUP_OPTS = {
    "session_timeout_ms": 2000,
    "heartbeat_interval_ms": 200,
    "enable_auto_commit": False,
    "auto_offset_reset": "earliest",
}


def _name(prefix: str) -> str:
    return f"{prefix}.{uuid.uuid4().hex[:8]}"


def test_broker_argv() -> None:
    argv = broker_argv("127.0.0.1", 19092)
    assert argv[1] == "broker"
    assert argv[argv.index("--listener-url") + 1] == "tcp://127.0.0.1:19092"
    assert argv[argv.index("--advertised-listener-url") + 1] == "tcp://127.0.0.1:19092"
    assert argv[argv.index("--storage-engine") + 1].startswith("memory://")


@pytest.mark.integration
def test_lifecycle_and_errors() -> None:
    port = free_port()
    broker = EmbeddedBroker("127.0.0.1", port)
    assert not broker.running
    with broker:
        assert broker.running
        assert broker.bootstrap == f"127.0.0.1:{port}"
        assert kafka_ping("127.0.0.1", port)
        with pytest.raises(BrokerError, match="already in use"):
            EmbeddedBroker("127.0.0.1", port).start()
    assert not broker.running
    assert not kafka_ping("127.0.0.1", port)
    broker.stop()  # idempotent

    # A port bound (not listening) by someone else: the broker dies at start-up and we say why.
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        with pytest.raises(BrokerError, match="Address in use"):
            EmbeddedBroker("127.0.0.1", taken.getsockname()[1]).start()


async def _consume(consumer: AIOKafkaConsumer, count: int) -> list[ConsumerRecord[bytes, bytes]]:
    records: list[ConsumerRecord[bytes, bytes]] = []
    for _ in range(100):
        batch = await consumer.getmany(timeout_ms=200)
        for recs in batch.values():
            records.extend(recs)
        if len(records) >= count:
            break
    return records


async def log_end_offsets(bootstrap: str, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
    """The real log end of each partition: the high watermark of a fetch response, not ListOffsets."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign(partitions)
        for tp, offset in (await consumer.end_offsets(partitions)).items():
            consumer.seek(tp, offset)
        ends: dict[TopicPartition, int] = {}
        while len(ends) < len(partitions):
            await consumer.getmany(timeout_ms=100)
            ends.update({tp: high for tp in partitions if (high := consumer.highwater(tp)) is not None})
        return ends
    finally:
        await consumer.stop()


@pytest.mark.integration
@pytest.mark.asyncio
async def test_round_trip_with_group_commit(broker: str) -> None:
    topic, group = _name("test.compact"), _name("test.group")

    admin = AIOKafkaAdminClient(bootstrap_servers=broker)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, 4, 1, topic_configs={"cleanup.policy": "compact"})])
        described = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
        entries = {e[0]: e[1] for e in described[0].resources[0][4]}
        assert entries["cleanup.policy"] == "compact"
    finally:
        await admin.close()

    producer = AIOKafkaProducer(bootstrap_servers=broker, linger_ms=5)
    await producer.start()
    sent = {}
    try:
        futures = [
            await producer.send(
                topic,
                f'{{"n": {i}}}'.encode(),
                key=f"acct-{i % 7}".encode(),
                headers=[("revpulse.reason", b"test"), ("n", str(i).encode())],
            )
            for i in range(60)
        ]
        for i, fut in enumerate(futures):
            meta = await fut
            sent[i] = (meta.partition, meta.offset)
    finally:
        await producer.stop()
    parts = [TopicPartition(topic, p) for p in range(4)]
    ends = {tp: 1 + max((o for p, o in sent.values() if p == tp.partition), default=-1) for tp in parts}

    # Tansu's ListOffsets may be short of the end; the fetch high watermark is exact.
    assert await log_end_offsets(broker, parts) == ends
    probe = AIOKafkaConsumer(bootstrap_servers=broker)
    await probe.start()
    try:
        listed = await probe.end_offsets(parts)
    finally:
        await probe.stop()
    assert all(listed[tp] <= ends[tp] for tp in parts)  # short when the last batch holds > 1 record

    consumer = AIOKafkaConsumer(topic, bootstrap_servers=broker, group_id=group, **GROUP_OPTS)
    await consumer.start()
    try:
        records = await _consume(consumer, 60)
        assert len(records) == 60
        by_n = {int(dict(r.headers)["n"]): r for r in records}
        assert sorted(by_n) == list(range(60))
        for i, rec in by_n.items():
            assert rec.value == f'{{"n": {i}}}'.encode()
            assert rec.key == f"acct-{i % 7}".encode()
            assert rec.headers == (("revpulse.reason", b"test"), ("n", str(i).encode()))
            assert (rec.partition, rec.offset) == sent[i]
        for tp in parts:
            assert consumer.highwater(tp) == ends[tp]
            assert await consumer.position(tp) == ends[tp]
        # Commit everything but the last 2 records of each non-empty partition.
        rewind = {tp: OffsetAndMetadata(max(0, ends[tp] - 2), "") for tp in parts}
        await consumer.commit(rewind)
        for tp in parts:
            assert await consumer.committed(tp) == rewind[tp].offset
    finally:
        await consumer.stop()

    # Same group again: resumes at the committed offsets (2 records per non-empty partition are redelivered).
    again = AIOKafkaConsumer(topic, bootstrap_servers=broker, group_id=group, **GROUP_OPTS)
    await again.start()
    try:
        expected = sum(min(2, ends[tp]) for tp in parts)
        redelivered = await _consume(again, expected)
        assert len(redelivered) == expected
        assert all(r.offset >= rewind[TopicPartition(topic, r.partition)].offset for r in redelivered)
        await again.seek_to_beginning(*parts)
        assert len(await _consume(again, 60)) == 60
    finally:
        await again.stop()
