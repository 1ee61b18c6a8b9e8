"""The processing-lag histogram: batch observations read back as exact Prometheus samples."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from revpulse.streams.lag import LagHistogram

NAME = "revpulse_processing_lag_seconds"
Fixture = tuple[CollectorRegistry, LagHistogram]


@pytest.fixture
def registry_and_histogram() -> Fixture:
    registry = CollectorRegistry()
    histogram = LagHistogram(NAME, "lag", buckets=(0.1, 0.5, 1.0))
    registry.register(histogram)
    return registry, histogram


def bucket(registry: CollectorRegistry, le: str) -> float | None:
    return registry.get_sample_value(f"{NAME}_bucket", {"le": le})


def test_observes_a_batch_into_cumulative_buckets(
    registry_and_histogram: tuple[CollectorRegistry, LagHistogram],
) -> None:
    registry, histogram = registry_and_histogram
    # lags 0.05 ×2, 0.1 (on a bound: `le` includes it), 0.75, 3.0; and an arrival after now counts as 0
    histogram.observe(10.0, [9.95, 9.95, 9.9, 9.25, 7.0, 10.5])
    assert [bucket(registry, le) for le in ("0.1", "0.5", "1.0", "+Inf")] == [4, 4, 5, 6]
    assert registry.get_sample_value(f"{NAME}_count") == 6
    assert registry.get_sample_value(f"{NAME}_sum") == pytest.approx(0.05 * 2 + 0.1 + 0.75 + 3.0)


def test_batches_accumulate(registry_and_histogram: Fixture) -> None:
    registry, histogram = registry_and_histogram
    histogram.observe(1.0, [0.5])
    histogram.observe(2.0, [1.95, 1.95])
    histogram.observe(2.0, [])
    assert [bucket(registry, le) for le in ("0.1", "0.5", "1.0", "+Inf")] == [2, 3, 3, 3]
    assert registry.get_sample_value(f"{NAME}_sum") == pytest.approx(0.6)
    assert f"# TYPE {NAME} histogram" in generate_latest(registry).decode()
