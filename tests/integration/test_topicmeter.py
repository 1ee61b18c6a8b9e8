"""The bench's topic meter on the embedded broker: what it counts is every record appended, read once."""

from __future__ import annotations

import uuid

import pytest

from bench.topicmeter import TopicMeter
from tests.support.topics import create_topic, produce


async def _meter_twice(bootstrap: str, topic: str) -> list[tuple[int, int]]:
    await create_topic(bootstrap, topic, 3)
    keys = [b"k%d" % (i % 3) for i in range(30)]
    seen = []
    async with TopicMeter(bootstrap, [topic]) as meter:
        await produce(bootstrap, topic, [b"x" * 10] * 30, keys)
        size = (await meter.catch_up(timeout=60))[topic]
        seen.append((size.records, size.bytes))
        # Right after a read: the end must come from fetches answered after this call began, not the last ones.
        await produce(bootstrap, topic, [b"y" * 5] * 7, keys[:7])
        size = (await meter.catch_up(timeout=60))[topic]
        seen.append((size.records, size.bytes))
    return seen


@pytest.mark.integration
@pytest.mark.asyncio
async def test_each_read_counts_what_was_appended_since_the_last(broker: str) -> None:
    topic = f"meter.{uuid.uuid4().hex[:8]}"
    # keys "k0".."k2" are 2 bytes each
    assert await _meter_twice(broker, topic) == [(30, 30 * 12), (37, 30 * 12 + 7 * 7)]
