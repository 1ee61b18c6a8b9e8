"""The connector agent: maps raw provider records (HTTP ingest's raw topics, Salesforce CDC) to canonical events
on the input topics, and what it cannot map to the dead-letter topic, untouched.

Mappers keep state (the last known values of records whose updates carry only what changed), and that state is
a function of every earlier record of their topic: on assignment it is rebuilt by mapping the topic from its
start up to the committed offset, sending nothing. Output is sent before the input offset is committed, so a
crash re-sends; canonical event ids come from provider ids, so the engine applies each event once.
"""

from __future__ import annotations

from typing import Any

from aiokafka import TopicPartition

from revpulse.agents.base import BatchAgent, Batches, OutRecord, ProducerService, consumer, send_all
from revpulse.connectors.translate import Translator, translators
from revpulse.settings import Settings
from revpulse.streams.outputs import Outputs
from revpulse.streams.partition import DeadLetter
from revpulse.topics import connector_group


class ConnectorAgent(BatchAgent):
    def __init__(self, settings: Settings, producer: ProducerService, outputs: Outputs, **kwargs: Any) -> None:
        super().__init__(settings, list(translators(settings)), connector_group(settings), **kwargs)
        self.io = producer
        self.outputs = outputs
        self.translators: dict[TopicPartition, Translator] = {}

    async def on_assigned(self, partitions: set[TopicPartition]) -> None:
        assert self.consumer is not None
        for tp in partitions:
            translator = translators(self.settings)[tp.topic]
            await self._rebuild(tp, await self.consumer.committed(tp) or 0, translator)
            self.translators[tp] = translator
        self.assigned = True

    async def on_revoked(self, partitions: set[TopicPartition]) -> None:
        for tp in partitions:
            self.translators.pop(tp, None)

    async def _rebuild(self, tp: TopicPartition, until: int, translator: Translator) -> None:
        """Map records [0, until) again, discarding the output: the mapper ends in the state it had there."""
        if until == 0:
            return
        reader = consumer(self.settings, None)
        await reader.start()
        try:
            reader.assign([tp])
            reader.seek(tp, 0)
            while await reader.position(tp) < until:
                for record in (await reader.getmany(tp, timeout_ms=500)).get(tp, []):
                    if record.offset < until:
                        translator.translate(record.value)
        finally:
            await reader.stop()

    async def handle(self, batches: Batches) -> None:
        out: list[OutRecord] = []
        for tp, records in batches.items():
            translator = self.translators.get(tp)
            if translator is None:
                continue
            for record in records:
                translation = translator.translate(record.value)
                for outcome, count in translation.outcomes.items():
                    self.outputs.connector_elements.labels(translator.source, outcome).inc(count)
                for o in translation.records:
                    headers = None
                    if o.reason is not None:
                        letter = DeadLetter(o.value, o.reason, o.detail or "", tp.topic, tp.partition, record.offset)
                        headers = letter.headers
                    out.append((o.topic, None, o.key, o.value, headers))
        await send_all(self.io.producer, out)
        await self.commit({tp: records[-1].offset + 1 for tp, records in batches.items()})
