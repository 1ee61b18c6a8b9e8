"""The dead letters a worker remembers are read from the tail of the real dead-letter topic, however long."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

from revpulse.agents.base import ProducerService, scan_topic, send_all
from revpulse.agents.letters import WrittenLetters
from revpulse.settings import Settings, Topics
from revpulse.streams.partition import DeadLetter
from tests.support.deployment import settings_for


def letters(count: int) -> list[DeadLetter]:
    return [DeadLetter(b'{"n": %d}' % i, "invalid_event", "detail", "crm.events", 0, i) for i in range(count)]


def test_only_the_last_letters_of_the_topic_are_read_and_remembered(broker: str, tmp_path: Path) -> None:
    base = settings_for(tmp_path, broker)
    settings = Settings(**{**vars(base), "topics": Topics(deadletter=f"letters-{uuid.uuid4().hex[:8]}")})
    written = letters(500)

    async def write_then_read() -> tuple[list[int], WrittenLetters]:
        producer = ProducerService(settings)
        await producer.start()
        try:
            topic = settings.topics.deadletter
            # Several sends, so the topic holds several record batches and the tail starts inside the log.
            for start in range(0, len(written), 100):
                chunk = written[start : start + 100]
                await send_all(producer.producer, [(topic, 0, None, x.payload, x.headers) for x in chunk])
        finally:
            await producer.stop()
        tail = [record.offset async for record in scan_topic(settings, settings.topics.deadletter, tail=120)]
        remembered = WrittenLetters(limit=120)
        await remembered.read(settings)
        return tail, remembered

    tail, remembered = asyncio.run(write_then_read())
    assert tail == list(range(380, 500))  # the records before the tail are never handed out
    assert len(remembered) == 120
    assert [letter.offset for letter in written if letter in remembered] == list(range(380, 500))
