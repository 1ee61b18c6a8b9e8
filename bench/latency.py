"""Latency at a steady offered load: a paced producer, and quantiles of the worker's lag histogram.

The producer sends the events of a data set at `rate` events/s for `duration` seconds, each re-timed to the
wall clock (`occurred_at` = the time it is sent; its Kafka timestamp, the arrival the worker measures from, is
the same instant); a second pass over the data set suffixes the event ids so that they stay distinct.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

from bench.datasets import Cached, producer, retimed, send
from revpulse.settings import Topics

HISTOGRAM = "revpulse_processing_lag_seconds"
TICK_SECONDS = 0.01

Buckets = list[tuple[float, float]]  # (upper bound `le`, cumulative count), ascending, +Inf last


def lag_buckets(exposition: str) -> Buckets:
    """The cumulative buckets of the processing-lag histogram in a Prometheus text exposition."""
    for family in text_string_to_metric_families(exposition):
        if family.name == HISTOGRAM:
            buckets = [
                (float(sample.labels["le"]), sample.value)
                for sample in family.samples
                if sample.name == f"{HISTOGRAM}_bucket"
            ]
            return sorted(buckets)
    raise ValueError(f"no {HISTOGRAM} in the exposition")


def difference(after: Buckets, before: Buckets) -> Buckets:
    """The observations made between two scrapes of the same histogram."""
    return [(le, count - earlier) for (le, count), (_, earlier) in zip(after, before, strict=True)]


@dataclass(frozen=True)
class Quantile:
    q: float
    value: float
    bucket: tuple[float, float]  # the bucket (lower, upper] the quantile falls in

    def as_dict(self) -> dict[str, float | list[float] | str]:
        return {
            "seconds": round(self.value, 4),
            "bucket": [self.bucket[0], self.bucket[1] if math.isfinite(self.bucket[1]) else "+Inf"],
        }


def histogram_quantile(q: float, buckets: Buckets) -> Quantile:
    """PromQL `histogram_quantile`: the bucket holding rank q × count, linear interpolation inside it (from 0 for
    the first bucket); in the +Inf bucket, the largest finite upper bound."""
    total = buckets[-1][1]
    if total <= 0:
        return Quantile(q, math.nan, (math.nan, math.nan))
    rank = q * total
    index = next(i for i, (_, count) in enumerate(buckets) if count >= rank)
    lower, below = (0.0, 0.0) if index == 0 else buckets[index - 1]
    upper, count = buckets[index]
    if math.isinf(upper):
        return Quantile(q, lower, (lower, upper))
    if count == below:
        return Quantile(q, upper, (lower, upper))
    return Quantile(q, lower + (upper - lower) * (rank - below) / (count - below), (lower, upper))


def _cycled(data: Cached) -> Iterator[tuple[bytes, str]]:
    """(event line, id suffix) of the data set, over and over: "" on the first pass, "~n" on pass n + 1."""
    passes = 0
    while True:
        for line in data.lines():
            yield line, f"~{passes}" if passes else ""
        passes += 1


async def offer(
    bootstrap: str,
    topics: Topics,
    data: Cached,
    rate: float,
    duration: float,
    at: tuple[float, Callable[[], Awaitable[None]]],
) -> tuple[int, float]:
    """Send `rate` events/s for `duration` s (catching up after a slow tick, so the average holds); calls
    `at[1]` once, `at[0]` seconds in. The events sent and the seconds it took."""
    client = producer(bootstrap)
    await client.start()
    source = _cycled(data)
    mark, callback = at
    marked = False
    try:
        sent = 0
        started = time.monotonic()
        while (elapsed := time.monotonic() - started) < duration:
            if not marked and elapsed >= mark:
                marked = True
                await callback()
            due = int(rate * elapsed) - sent
            if due > 0:
                now_ms = round(time.time() * 1000)
                batch = [retimed(line, now_ms, topics, suffix=suffix) for line, suffix in _take(source, due)]
                sent += await send(client, batch)
            await asyncio.sleep(TICK_SECONDS)
        return sent, time.monotonic() - started
    finally:
        await client.stop()


def _take(source: Iterator[tuple[bytes, str]], count: int) -> Iterator[tuple[bytes, str]]:
    for _ in range(count):
        yield next(source)
