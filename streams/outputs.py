"""What a worker serves: the global series at as_of, and the Prometheus registry around them (SPEC §5)."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Iterator
from importlib.metadata import version

from prometheus_client import CollectorRegistry, Gauge, Info
from prometheus_client import Counter as CounterMetric
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from revpulse.settings import Settings
from revpulse.streams.lag import LagHistogram
from revpulse.streams.packed_series import PackedSeries
from revpulse.streams.prometheus import SeriesCollector
from revpulse.streams.rollup import Rollup
from revpulse.streams.series import Series, SeriesParams, compute_series, point_series
from revpulse.streams.windows import HOUR_US, US_PER_SECOND, hour_of, isoformat

VERSION = version("revpulse")

Outcomes = Counter[tuple[str, str, str]]  # (topic, type, outcome) -> events


class Outputs:
    def __init__(
        self,
        settings: Settings,
        rollup: Rollup,
        outcomes: Callable[[], Outcomes],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.rollup = rollup
        self.clock = clock
        self.params = SeriesParams(settings.segments, settings.inflation_annual, settings.gross_margin)
        self.registry = CollectorRegistry()
        self.registry.register(_EventsCollector(outcomes))
        self.watermark_seconds = Gauge(
            "revpulse_watermark_timestamp_seconds",
            "Largest occurred_at accepted so far (event-time watermark)",
            registry=self.registry,
        )
        self.processing_lag = LagHistogram(
            "revpulse_processing_lag_seconds",
            "Time from an event's arrival in Kafka to the metrics reflecting it",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
        )
        self.registry.register(self.processing_lag)
        self.consumer_lag = Gauge(
            "revpulse_consumer_lag_records",
            "Input records not yet consumed, per partition (fetch high watermark - position)",
            ["topic", "partition"],
            registry=self.registry,
        )
        self.routed_items = CounterMetric(
            "revpulse_routed_items",
            "Events routed by this worker, by path: applied at once to a shard it owns, or via the shard topic",
            ["path"],
            registry=self.registry,
        )
        self.connector_elements = CounterMetric(
            "revpulse_connector_elements",
            "Provider elements (webhook events, CDC changes) read by the connectors, by outcome",
            ["source", "outcome"],
            registry=self.registry,
        )
        self.internal_skipped = CounterMetric(
            "revpulse_internal_records_skipped",
            "Records on RevPulse's own topics (shards, partials, snapshots, dead letters) that failed validation "
            "and were skipped, by topic role and reason",
            ["role", "reason"],
            registry=self.registry,
        )
        Info("revpulse", "RevPulse build and settings", registry=self.registry).info(
            {"version": VERSION, "currency": settings.currency}
        )
        self.registry.register(SeriesCollector(self.refresh))
        self.pending_arrivals: list[float] = []
        self._series: list[Series] = []
        self._as_of: int | None = None
        self._version = -1
        self._points: dict[int, tuple[int, PackedSeries]] = {}  # hour of a midnight -> (its version, series)

    def as_of(self) -> int | None:
        """SPEC §2: the watermark, or with the wall clock max(watermark, now). None before any event."""
        watermark = self.rollup.watermark
        if watermark is None or self.settings.clock == "event":
            return watermark
        return max(watermark, round(self.clock() * US_PER_SECOND))

    def refresh(self) -> list[Series]:
        """The current series. Recomputed when the rollup changed or as_of entered another hourly slice: within
        a slice the windows (and so every value) stay put, only `as_of` moves. The events taken since the last
        refresh are reflected from now on: their lag is observed."""
        as_of = self.as_of()
        if as_of is None:
            return []
        if self._version != self.rollup.version or self._as_of is None or hour_of(as_of) != hour_of(self._as_of):
            self._series = compute_series(self.rollup.ledger, self.rollup.segments_seen, as_of, self.params)
            self._version = self.rollup.version
            self.watermark_seconds.set((self.rollup.watermark or 0) / US_PER_SECOND)
        if self.pending_arrivals:
            self.processing_lag.observe(self.clock(), self.pending_arrivals)
            self.pending_arrivals.clear()
        self._as_of = as_of
        return self._series

    def history(self) -> list[tuple[int, PackedSeries]]:
        """Every kept history point, oldest first: (midnight in µs, every series at it). A point is recomputed
        only when what it is computed from changed."""
        hours = self.rollup.history_hours(self.settings.history_days)
        points: dict[int, tuple[int, PackedSeries]] = {}
        before: PackedSeries | None = None
        for hour in hours:
            points[hour] = self._point(hour, before)
            before = points[hour][1]
        self._points = points
        return [(hour * HOUR_US, points[hour][1]) for hour in hours]

    async def prepare_history(self, step: int = 8) -> None:
        """Compute the points `history()` would compute, `step` at a time with the event loop free between:
        every point of a long history at once holds a worker's batches for seconds (400 points: 3-4 s), and
        during a backfill most points change between two of the board's requests. A point that changes
        meanwhile is computed again by `history()`."""
        before: PackedSeries | None = None
        computed = 0
        for hour in self.rollup.history_hours(self.settings.history_days):
            cached = self._point(hour, before)
            if cached is not self._points.get(hour):
                self._points[hour] = cached
                computed += 1
                if computed % step == 0:
                    await asyncio.sleep(0)
            before = cached[1]

    def _point(self, hour: int, before: PackedSeries | None) -> tuple[int, PackedSeries]:
        """(version, series) of the point at `hour`: the cached one while its version holds; names shared with
        `before`, the point before it, where they are the same."""
        version = self.rollup.point_versions.get(hour, 0)
        cached = self._points.get(hour)
        if cached is None or cached[0] != version:
            series = point_series(self.rollup.point(hour), hour * HOUR_US, self.params)
            cached = (version, PackedSeries(series, like=before))
        return cached

    @property
    def as_of_text(self) -> str | None:
        return None if self._as_of is None else isoformat(self._as_of)


class _EventsCollector(Collector):
    """`revpulse_events_total` from the shards this process owns: their counts are durable shard state, so the
    sum over workers accounts for every input record even after a worker was killed and replaced."""

    def __init__(self, outcomes: Callable[[], Outcomes]) -> None:
        self.outcomes = outcomes

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily("revpulse_events", "Input events by outcome", labels=["topic", "type", "outcome"])
        for (topic, event_type, outcome), count in sorted(self.outcomes().items()):
            family.add_metric([topic, event_type, outcome], count)
        yield family
