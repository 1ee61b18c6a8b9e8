"""The latency part's quantiles: PromQL's `histogram_quantile`, on buckets read from a real exposition."""

from __future__ import annotations

import math

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from bench.latency import HISTOGRAM, difference, histogram_quantile, lag_buckets
from revpulse.streams.lag import LagHistogram

BUCKETS = [(0.1, 50.0), (0.25, 90.0), (0.5, 99.0), (math.inf, 100.0)]


@pytest.mark.parametrize(
    ("q", "value", "bucket"),
    [
        (0.5, 0.1, (0.0, 0.1)),  # rank 50: the whole first bucket, interpolated from 0
        (0.6, 0.1 + 0.15 * 10 / 40, (0.1, 0.25)),
        (0.99, 0.5, (0.25, 0.5)),
        (1.0, 0.5, (0.5, math.inf)),  # in +Inf: the largest finite bound
    ],
)
def test_quantiles_interpolate_within_their_bucket(q: float, value: float, bucket: tuple[float, float]) -> None:
    quantile = histogram_quantile(q, BUCKETS)
    assert quantile.value == pytest.approx(value) and quantile.bucket == bucket


def test_buckets_come_from_the_workers_exposition_and_scrapes_subtract() -> None:
    registry = CollectorRegistry()
    histogram = LagHistogram(HISTOGRAM, "lag", buckets=(0.1, 0.25, 0.5))
    registry.register(histogram)
    histogram.observe(10.0, [9.95] * 5)
    before = lag_buckets(generate_latest(registry).decode())
    histogram.observe(20.0, [19.95] * 50 + [19.8] * 40 + [19.6] * 9 + [10.0])
    after = lag_buckets(generate_latest(registry).decode())
    assert difference(after, before) == BUCKETS
    assert histogram_quantile(0.5, difference(after, before)).value == pytest.approx(0.1)
