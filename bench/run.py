"""Throughput benchmark: `make bench` (or `python -m bench.run --events 200000`).

In one run, on the embedded broker and the same records:
1. the ceiling: a bare aiokafka consumer doing `getmany` + `orjson.loads` over every record;
2. RevPulse: a real `revpulse worker` process, timed from its router's first commit (read from Kafka) until
   its `/healthz` counts every event.
Prints both rates and their ratio, and writes them to bench/results.json.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from streams.broker import EmbeddedBroker
from streams.local import LocalWorkers
from streams.replay import routing_key
from streams.synth import SynthConfig, generate

PARTITIONS = 4
TOPICS = ("crm.events", "billing.events", "product.events", "marketing.events")


async def produce(bootstrap: str, events: int, accounts: int) -> int:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    await admin.create_topics([NewTopic(topic, PARTITIONS, 1) for topic in TOPICS])
    await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, max_batch_size=512 * 1024)
    await producer.start()
    sent = 0
    pending: list[Any] = []
    for topic, event in generate(SynthConfig(accounts=accounts, days=90), events=events):
        key = routing_key(event)
        pending.append(await producer.send(topic, orjson.dumps(event), key=None if key is None else key.encode()))
        sent += 1
        if len(pending) >= 10_000:
            await asyncio.gather(*pending)
            pending.clear()
    await asyncio.gather(*pending)
    await producer.stop()
    return sent


async def ceiling(bootstrap: str, total: int) -> float:
    """Events/s of a bare consumer: getmany + orjson decode of every record, nothing else."""
    consumer = AIOKafkaConsumer(
        *TOPICS,
        bootstrap_servers=bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=4 * 1024 * 1024,
    )
    await consumer.start()
    seen = 0
    started = time.perf_counter()
    while seen < total:
        batches = await consumer.getmany(timeout_ms=500, max_records=10_000)
        for batch in batches.values():
            for record in batch:
                orjson.loads(record.value)
            seen += len(batch)
    elapsed = time.perf_counter() - started
    await consumer.stop()
    return total / elapsed


async def committed_total(bootstrap: str, group: str) -> int:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        total = 0
        for topic in TOPICS:
            for partition in range(PARTITIONS):
                total += await consumer.committed(TopicPartition(topic, partition)) or 0
        return total
    finally:
        await consumer.stop()


def revpulse(bootstrap: str, total: int, workdir: Path) -> float:
    """Events/s of a real worker: from its router's first commit until its shards counted every event."""
    env = {
        "REVPULSE_BROKER": f"kafka://{bootstrap}",
        "REVPULSE_CLOCK": "event",
        "REVPULSE_FX_RATES": '{"EUR": 1.08}',
        "REVPULSE_SESSION_TIMEOUT": "6s",
        "REVPULSE_APP_ID": "revpulse-bench",
    }
    workers = LocalWorkers(env, workdir)
    worker = workers.start("w1", wait=False)
    try:
        first = 0
        while first == 0:
            first = asyncio.run(committed_total(bootstrap, "revpulse-bench-router"))
        started = time.perf_counter()
        while orjson.loads(worker.get("/healthz")[1])["events"] < total:
            time.sleep(0.05)
        return (total - first) / (time.perf_counter() - started)
    finally:
        workers.stop_all()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--accounts", type=int, default=5_000)
    parser.add_argument("--output", type=Path, default=Path("bench/results.json"))
    args = parser.parse_args()
    with EmbeddedBroker() as broker, tempfile.TemporaryDirectory() as workdir:
        started = time.perf_counter()
        total = asyncio.run(produce(broker.bootstrap, args.events, args.accounts))
        print(f"produced {total:,} events in {time.perf_counter() - started:.1f}s", flush=True)
        raw = asyncio.run(ceiling(broker.bootstrap, total))
        print(f"ceiling  (aiokafka getmany + orjson): {raw:>10,.0f} events/s", flush=True)
        ours = revpulse(broker.bootstrap, total, Path(workdir))
        print(f"revpulse (one worker, all metrics):   {ours:>10,.0f} events/s", flush=True)
        print(f"ratio: {ours / raw:.1%} of the ceiling", flush=True)
    results = {
        "events": total,
        "accounts": args.accounts,
        "ceiling_eps": raw,
        "revpulse_eps": ours,
        "ratio": ours / raw,
    }
    args.output.write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2))


if __name__ == "__main__":
    main()
