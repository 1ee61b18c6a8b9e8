"""The ingest agent: consumes the four input topics in batches and feeds them to the pipeline.

Faust's per-event stream machinery tops out near 10k events/s here, so this agent is a Faust service that
runs its own aiokafka consumer (group `<app id>-ingest`) and hands whole `getmany` batches to the pipeline:
one decode per record, state updated in place, dead letters produced and awaited, then offsets committed.
Delivery is at least once; duplicates are absorbed by the engine's event-id idempotency.

State lives in memory. A worker rebuilds it on start by re-reading its partitions from the beginning: records
below the group's committed offsets are applied as a replay (their dead letters were already written), and
the worker reports ready once it has caught up to those offsets.
"""

from __future__ import annotations

import asyncio
import logging

import faust
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import KafkaError
from mode import Service

from streams.pipeline import DeadLetter, InputRecord, Pipeline
from streams.settings import Settings

log = logging.getLogger(__name__)

MAX_BATCH = 10_000


class IngestAgent(Service):
    def __init__(self, app: faust.App, pipeline: Pipeline, settings: Settings, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.app = app
        self.pipeline = pipeline
        self.settings = settings
        self.consumer: AIOKafkaConsumer | None = None
        self.applied: dict[TopicPartition, int] = {}  # next offset to apply, per partition whose state we hold
        self.replay_until: dict[TopicPartition, int] = {}  # committed offsets not yet reached on (re)start
        self.assigned = False

    @property
    def ready(self) -> bool:
        return self.assigned and not self.replay_until

    async def on_start(self) -> None:
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=self.settings.bootstrap_servers,
            group_id=f"{self.app.conf.id}-ingest",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_partition_fetch_bytes=4 * 1024 * 1024,
            session_timeout_ms=int(self.app.conf.broker_session_timeout * 1000),
            heartbeat_interval_ms=int(self.app.conf.broker_heartbeat_interval * 1000),
        )
        await self.consumer.start()
        self.consumer.subscribe(list(self.settings.topics.inputs), listener=_Rebalance(self))

    async def on_stop(self) -> None:
        if self.consumer is not None:
            await self.consumer.stop()

    @Service.task
    async def _consume(self) -> None:
        assert self.consumer is not None
        while not self.should_stop:
            batches = await self.consumer.getmany(timeout_ms=200, max_records=MAX_BATCH)
            if batches:
                await self.handle(batches)

    async def handle(self, batches: dict[TopicPartition, list[ConsumerRecord]]) -> None:
        """Apply one fetched batch, write its dead letters, then commit what it covered."""
        records = [_record(tp, record) for tp, batch in batches.items() for record in batch]
        dead = self.pipeline.process(records, replaying=self._is_replay)
        await self._dead_letter(dead)
        for tp, batch in batches.items():
            self.applied[tp] = batch[-1].offset + 1
            highwater = self.consumer.highwater(tp) if self.consumer is not None else None
            if highwater is not None:
                self.pipeline.consumer_lag.labels(tp.topic, str(tp.partition)).set(highwater - self.applied[tp])
            until = self.replay_until.get(tp)
            if until is not None and self.applied[tp] >= until:
                del self.replay_until[tp]
        assert self.consumer is not None
        owned = self.consumer.assignment()
        offsets = {tp: self.applied[tp] for tp in batches if tp in owned}
        try:
            await self.consumer.commit(offsets)
        except KafkaError as exc:
            # A rebalance or a broker hiccup: the next batch commits past these offsets; a replay is idempotent.
            log.warning("ingest: commit failed (%r); will commit with the next batch", exc)

    def _is_replay(self, record: InputRecord) -> bool:
        until = self.replay_until.get(TopicPartition(record.topic, record.partition))
        return until is not None and record.offset < until

    async def _dead_letter(self, dead: list[DeadLetter]) -> None:
        """Write every dead letter, retrying until the broker has acknowledged each one.

        The batch's offsets are committed only after this returns: a crash in between replays, never loses.
        """
        pending = dead
        delay = 0.5
        while pending:
            results = await asyncio.gather(*(self._send(letter) for letter in pending), return_exceptions=True)
            failed = [letter for letter, result in zip(pending, results, strict=True) if result is not None]
            if failed:
                log.warning("ingest: %d dead letters not written (%r); retrying in %.1fs", len(failed), results, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)
            pending = failed

    async def _send(self, letter: DeadLetter) -> None:
        sent = await self.app.producer.send(
            self.settings.topics.deadletter,
            key=None,
            value=letter.payload,
            partition=None,
            timestamp=None,
            headers=letter.headers,
        )
        await sent

    async def on_assigned(self, partitions: set[TopicPartition]) -> None:
        assert self.consumer is not None
        for tp in partitions:
            if tp in self.applied:
                self.consumer.seek(tp, self.applied[tp])
                continue
            committed = await self.consumer.committed(tp)
            if committed:
                self.replay_until[tp] = committed
            await self.consumer.seek_to_beginning(tp)
        self.assigned = True
        log.info("ingest: assigned %d partitions, replaying %d", len(partitions), len(self.replay_until))

    def on_revoked(self, partitions: set[TopicPartition]) -> None:
        for tp in partitions:
            self.replay_until.pop(tp, None)


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, agent: IngestAgent) -> None:
        self.agent = agent

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        self.agent.on_revoked(revoked)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        await self.agent.on_assigned(assigned)


def _record(tp: TopicPartition, record: ConsumerRecord) -> InputRecord:
    return InputRecord(tp.topic, tp.partition, record.offset, record.value, record.timestamp / 1000)
