"""The span reader on the real broker: records over its byte budget are read again a budget at a time."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from revpulse.agents.span_reader import SpanReader
from revpulse.schemas.models import latest_occurred_at
from revpulse.settings import Settings
from revpulse.streams.partition import Router
from revpulse.streams.pipeline import decoder
from revpulse.streams.wire import Item, Span
from tests.support.deployment import worker_env
from tests.support.topics import create_topic

pytestmark = pytest.mark.integration

JUNK = 200_000  # bytes a junk record: a dead letter, whose item carries them
BUDGET = 2**20  # 5 junk records fit, the sixth goes over


def _event(n: int) -> bytes:
    return orjson.dumps(
        {
            "event_id": f"e{n}",
            "type": "subscription.started",
            "occurred_at": "2024-03-17T09:00:00Z",
            "account_id": f"a{n}",
            "subscription_id": f"s{n}",
            "mrr": 100 + n,
        }
    )


async def _produce(bootstrap: str, topic: str) -> None:
    """Partition 0: 30 junk records of JUNK bytes; partition 1: 10 events."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, max_request_size=4 * 2**20)
    await producer.start()
    try:
        sent = [await producer.send(topic, b"x" * JUNK, partition=0) for _ in range(30)]
        sent += [await producer.send(topic, _event(n), partition=1) for n in range(10)]
        await asyncio.gather(*sent)
    finally:
        await producer.stop()


async def _read(
    settings: Settings, spans: list[Span], budget: int, on_skip: Callable[[str], None] = lambda reason: None
) -> list[list[Item]]:
    reader = SpanReader(settings, Router(decoder(settings), 1), on_skip, budget)
    try:
        return [chunk async for chunk in reader.chunks(0, spans)]
    finally:
        await reader.stop()


@pytest.fixture(scope="module")
def written(broker: str, tmp_path_factory: pytest.TempPathFactory) -> tuple[Settings, str]:
    """Settings of a deployment whose billing topic holds `_produce`'s records."""
    data_dir = tmp_path_factory.mktemp("span-reader")
    settings = Settings.from_env(worker_env(broker) | {"REVPULSE_DATA_DIR": str(data_dir)})
    topic = settings.topics.billing
    asyncio.run(create_topic(broker, topic, 2))
    asyncio.run(_produce(broker, topic))
    return settings, topic


def test_records_over_the_budget_are_read_a_budget_at_a_time_in_span_order(written: tuple[Settings, str]) -> None:
    settings, topic = written
    bound = latest_occurred_at(None)
    spans = [(topic, 1, 0, 9, bound), (topic, 0, 0, 29, bound)]

    (whole,) = asyncio.run(_read(settings, spans, 64 * 2**20))
    chunks = asyncio.run(_read(settings, spans, BUDGET))

    assert [item[:3] for item in whole] == [[topic, 1, n] for n in range(10)] + [[topic, 0, n] for n in range(30)]
    assert [item for chunk in chunks for item in chunk] == whole
    # the events' span fits at once; then the junk, in lists of at most the budget and a fetch (2 MiB)
    sizes = [len(chunk) for chunk in chunks]
    assert sizes[0] == 10 and len(sizes) >= 4, sizes
    assert all(size * JUNK <= BUDGET + 2 * 2**20 for size in sizes[1:]), sizes


@pytest.mark.parametrize("budget", [64 * 2**20, BUDGET])
def test_a_span_skipped_or_cut_short_is_counted_once_however_it_is_read(
    written: tuple[Settings, str], budget: int
) -> None:
    """Over the budget the reader reads again span by span what its first read began: the spans that first read
    already judged are not counted twice."""
    settings, topic = written
    bound = latest_occurred_at(None)
    # partition 5 does not exist; partition 1 ends at offset 9; then the junk
    spans = [(topic, 5, 0, 3, bound), (topic, 1, 6, 14, bound), (topic, 0, 0, 29, bound)]
    skipped: list[str] = []

    chunks = asyncio.run(_read(settings, spans, budget, skipped.append))

    assert sorted(skipped) == ["input_gone", "unknown_partition"]
    items = [item[:3] for chunk in chunks for item in chunk]
    assert items == [[topic, 1, n] for n in range(6, 10)] + [[topic, 0, n] for n in range(30)]
