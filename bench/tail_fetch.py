"""How a fetch at the end of a topic costs as the topic grows: `python -m bench.tail_fetch [--steps 12]`.

On a fresh embedded broker, a one-partition topic gets `--per-step` records (200-byte values, batched like a
real producer) per step; after each step, the time to fetch its last 100 records (a seek to them, then fetches
until they came) and the time from sending one more record to a consumer at the end getting it. On Tansu 0.6
the first grows with the records the partition holds; a worker's consumers each fetch about ten times a
second, so a long-running demo's broker spends more CPU the longer its log (see the README's demo figures).
"""

from __future__ import annotations

import argparse
import asyncio
import time
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from revpulse.local.broker import EmbeddedBroker

TAIL = 100
VALUE = b'{"x":"' + b"1" * 192 + b'"}'


@dataclass(frozen=True)
class Step:
    records: int  # in the partition after the step
    tail_ms: float  # fetching its last TAIL records
    live_ms: float  # one record sent → fetched at the end

    def line(self) -> str:
        return (
            f"{self.records:>10,} records: the last {TAIL} in {self.tail_ms:6.1f} ms, "
            f"one more in {self.live_ms:6.1f} ms"
        )


async def _until(consumer: AIOKafkaConsumer, tp: TopicPartition, first: int, count: int) -> None:
    got = 0
    while got < count:
        batch = await consumer.getmany(tp, timeout_ms=2000)
        got += sum(1 for record in batch.get(tp, []) if record.offset >= first)


async def measure(bootstrap: str, steps: int, per_step: int) -> list[Step]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic("tail", 1, 1)])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=20)
    # The fetch wait of a worker's consumers (`agents.base.consumer`): the broker holds a fetch that long.
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False, fetch_max_wait_ms=100
    )
    await producer.start()
    await consumer.start()
    tp = TopicPartition("tail", 0)
    consumer.assign([tp])
    out, total = [], 0
    try:
        for _ in range(steps):
            await asyncio.gather(*[await producer.send("tail", VALUE) for _ in range(per_step)])
            total += per_step
            consumer.seek(tp, total - TAIL)
            started = time.perf_counter()
            await _until(consumer, tp, total - TAIL, TAIL)
            tail = time.perf_counter() - started
            started = time.perf_counter()
            await (await producer.send("tail", VALUE))
            await _until(consumer, tp, total, 1)
            live = time.perf_counter() - started
            total += 1
            out.append(Step(total, tail * 1000, live * 1000))
            print(out[-1].line(), flush=True)
    finally:
        await consumer.stop()
        await producer.stop()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=12, help="steps (12)")
    parser.add_argument("--per-step", type=int, default=100_000, help="records added per step (100,000)")
    args = parser.parse_args()
    with EmbeddedBroker() as broker:
        asyncio.run(measure(broker.bootstrap, args.steps, args.per_step))


if __name__ == "__main__":
    main()
