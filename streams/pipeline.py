"""The worker's core, free of Kafka: records in, state updated, dead letters and current series out.

The ingest agent hands it whole batches of consumed records; the publisher and the HTTP views read the series
it computes. Keeping it apart from the consumer lets the tests drive it with plain records.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import orjson
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

from schemas.models import Event, EventDecoder, Rejection
from streams.engine import Engine, EngineConfig
from streams.prometheus import SeriesCollector
from streams.series import Series, SeriesParams, compute_series
from streams.settings import Settings
from streams.windows import hour_of, isoformat

log = logging.getLogger(__name__)

VERSION = "0.1.0"
US_PER_SECOND = 1_000_000


@dataclass(frozen=True, slots=True)
class InputRecord:
    """A consumed Kafka record: where it came from, its value, and when it reached Kafka (epoch seconds)."""

    topic: str
    partition: int
    offset: int
    value: bytes | None
    timestamp: float


@dataclass(frozen=True, slots=True)
class DeadLetter:
    payload: bytes
    reason: str
    detail: str
    topic: str
    partition: int
    offset: int

    @property
    def headers(self) -> list[tuple[str, bytes]]:
        return [
            ("revpulse.reason", self.reason.encode()),
            ("revpulse.detail", self.detail.encode()),
            ("revpulse.source.topic", self.topic.encode()),
            ("revpulse.source.partition", str(self.partition).encode()),
            ("revpulse.source.offset", str(self.offset).encode()),
        ]


class Pipeline:
    def __init__(
        self,
        settings: Settings,
        registry: CollectorRegistry | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.decoder = EventDecoder(settings.currency, settings.fx_rates, settings.segments)
        self.engine = Engine(EngineConfig(allowed_lateness_us=round(settings.allowed_lateness * US_PER_SECOND)))
        self.params = SeriesParams(settings.segments, settings.inflation_annual, settings.gross_margin)
        self.registry = registry if registry is not None else CollectorRegistry()
        self.events_total = Counter(
            "revpulse_events", "Input events by outcome", ["topic", "type", "outcome"], registry=self.registry
        )
        self.watermark_seconds = Gauge(
            "revpulse_watermark_timestamp_seconds",
            "Largest occurred_at accepted so far (event-time watermark)",
            registry=self.registry,
        )
        self.processing_lag = Histogram(
            "revpulse_processing_lag_seconds",
            "Time from an event's arrival in Kafka to the metrics reflecting it",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
            registry=self.registry,
        )
        self.consumer_lag = Gauge(
            "revpulse_consumer_lag_records",
            "Input records not yet consumed, per partition (fetch high watermark - position)",
            ["topic", "partition"],
            registry=self.registry,
        )
        Info("revpulse", "RevPulse build and settings", registry=self.registry).info(
            {"version": VERSION, "currency": settings.currency}
        )
        self.registry.register(SeriesCollector(self.refresh))
        self._series: list[Series] = []
        self._as_of: int | None = None
        self._dirty = False
        self._pending_arrivals: list[float] = []
        self.records = 0  # input records consumed by this process, for /healthz

    # -- intake ------------------------------------------------------------------------------------------------

    def process(
        self, records: Iterable[InputRecord], *, replaying: Callable[[InputRecord], bool] | None = None
    ) -> list[DeadLetter]:
        """Apply a batch; returns what must go to the dead-letter topic (nothing for records being replayed)."""
        dead: list[DeadLetter] = []
        for record in records:
            items: Sequence[Event | Rejection]
            if record.value is None:
                items = [Rejection("invalid_json", "record has no value", b"")]
            else:
                items = self.decoder.decode_record(record.value)
            replayed = replaying is not None and replaying(record)
            for index, item in enumerate(items):
                rejection = self._apply(record.topic, item)
                if rejection is not None and rejection.reason in ("too_late", "processing_error"):
                    rejection.payload = _element_payload(record.value or b"", index)
                if rejection is not None and not replayed:
                    dead.append(
                        DeadLetter(
                            rejection.payload,
                            rejection.reason,
                            rejection.detail,
                            record.topic,
                            record.partition,
                            record.offset,
                        )
                    )
            self._pending_arrivals.append(record.timestamp)
            self.records += 1
        self._dirty = True
        return dead

    def _apply(self, topic: str, item: Event | Rejection) -> Rejection | None:
        if isinstance(item, Rejection):
            self.events_total.labels(topic, item.type or "invalid", "rejected").inc()
            return item
        try:
            outcome = self.engine.accept(topic, item)
        except Exception as exc:
            # A defect must not stop the worker or lose the event: it goes to the dead letters, loudly.
            log.exception("engine failed on event %s", item.event_id)
            self.events_total.labels(topic, item.type, "rejected").inc()
            return Rejection("processing_error", f"internal error: {exc!r}", b"", item.type)
        self.events_total.labels(topic, item.type, outcome).inc()
        if outcome == "late":
            return Rejection(
                "too_late",
                f"occurred_at is more than the allowed lateness ({self.settings.allowed_lateness:g}s) before the "
                f"latest accepted event of {topic} key {item.routing_key!r}",
                b"",
                item.type,
            )
        return None

    # -- outputs -----------------------------------------------------------------------------------------------

    def as_of(self) -> int | None:
        """SPEC §2: the watermark, or with the wall clock max(watermark, now). None before any event."""
        watermark = self.engine.watermark
        if watermark is None or self.settings.clock == "event":
            return watermark
        return max(watermark, round(self.clock() * US_PER_SECOND))

    def refresh(self) -> list[Series]:
        """The current series. Recomputed when events were applied or as_of entered another hourly slice: within
        a slice the windows (and so every value) stay put, only `as_of` moves."""
        as_of = self.as_of()
        if as_of is None:
            return []
        if self._dirty or self._as_of is None or hour_of(as_of) != hour_of(self._as_of):
            self._series = compute_series(self.engine, as_of, self.params)
            self._dirty = False
            self.watermark_seconds.set((self.engine.watermark or 0) / US_PER_SECOND)
            now = self.clock()
            for arrival in self._pending_arrivals:
                self.processing_lag.observe(max(0.0, now - arrival))
            self._pending_arrivals.clear()
        self._as_of = as_of
        return self._series

    @property
    def as_of_text(self) -> str | None:
        return None if self._as_of is None else isoformat(self._as_of)


def _element_payload(value: bytes, index: int) -> bytes:
    """A valid but unapplied event's dead-letter payload: the record itself, or for an array, that element's JSON."""
    doc = orjson.loads(value)
    return orjson.dumps(doc[index]) if isinstance(doc, list) else value
