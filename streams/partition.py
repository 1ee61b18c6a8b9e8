"""Routing events to shards, and the shards themselves: the partition-local half of the two-phase design.

Phase one: the router decodes input records and sends every event (and every rejection) to the shard that owns
its routing key, over an internal topic with one partition per shard, so all events of an account meet in one
shard whatever key or partition they arrived with. A shard holds the engine state of its keys and emits its
*partial* ledger: absolute values of the cells it changed, which the rollup (phase two) sums over shards.

Effectively-once without transactions: a shard remembers, per source partition, the last (offset, index) it
applied, and skips anything at or before it, so a router re-sending after a crash changes nothing, counters
included. Partials are absolute values, so re-sending them is harmless too.
"""

from __future__ import annotations

import logging
import zlib
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from revpulse.schemas.models import Decoded, Event, EventDecoder, Rejection, event_fields, latest_occurred_at
from revpulse.streams import history
from revpulse.streams.engine import Engine, EngineConfig
from revpulse.streams.ledger import Key
from revpulse.streams.windows import US_PER_SECOND
from revpulse.streams.wire import (
    CUT,
    FINAL,
    RESET,
    SEGMENT_SEEN,
    SPAN_RECORDS,
    WATERMARK,
    Item,
    Points,
    Span,
    event_of,
)

log = logging.getLogger(__name__)


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


def shard_of(key: str, shards: int) -> int:
    """The shard of a routing key: stable across processes and restarts (unlike `hash`)."""
    return zlib.crc32(key.encode()) % shards


class Router:
    """Decodes input records into items grouped by shard."""

    def __init__(self, decoder: EventDecoder, shards: int) -> None:
        self.decoder = decoder
        self.shards = shards
        self.latest: dict[tuple[str, int], int] = {}  # (topic, partition) -> latest occurred_at routed from it

    def route(self, records: Iterable[InputRecord], now: datetime | float | None = None) -> dict[int, list[Item]]:
        """Items per shard. `now` is the worker's wall clock (an aware datetime or epoch seconds; default the system
        clock), read once for the batch: an `occurred_at` more than 1 day after it is invalid (SPEC §1)."""
        latest = latest_occurred_at(now)
        return self.route_decoded((record, self.decode(record, latest)) for record in records)

    def decode(self, record: InputRecord, latest_us: int) -> list[Decoded]:
        """A record's events and rejections; `latest_us` is the latest valid occurred_at (`latest_occurred_at`)."""
        if record.value is None:
            return [(Rejection("invalid_json", "record has no value"), b"")]
        return self.decoder.decode_until(record.value, latest_us)

    def route_decoded(self, records: Iterable[tuple[InputRecord, list[Decoded]]]) -> dict[int, list[Item]]:
        """Items per shard of records `decode` decoded."""
        out: dict[int, list[Item]] = {}
        for record, decoded in records:
            source = [record.topic, record.partition, record.offset]
            for index, (item, payload) in enumerate(decoded):
                head = [*source, index, record.timestamp, payload.decode("latin-1")]
                if isinstance(item, Event):
                    # account_id, or channel for marketing.spend; never None for a valid event
                    key = item.routing_key
                    if item.t > self.latest.get((record.topic, record.partition), item.t - 1):
                        self.latest[(record.topic, record.partition)] = item.t
                    wire = [*head, "e", *event_fields(item)]
                else:
                    # Rejections have no trustworthy key: spread them by their source partition.
                    key = f"{record.topic}/{record.partition}"
                    wire = [*head, "r", item.reason, item.detail, item.type]
                out.setdefault(shard_of(key, self.shards), []).append(wire)
        return out


def spans_of(items: Iterable[Item], bounds: Mapping[tuple[str, int, int], int]) -> list[Span]:
    """The input records `items` came from (routed in one batch, so in offset order per partition), as spans:
    per partition, runs of offsets whose records were decoded with one bound on occurred_at, which `bounds` gives
    per (topic, partition, offset). A span may cover records in between with no item of these: a bound only grows
    along a partition, so they were decoded with the same one, and the shard reading them again drops them."""
    runs: dict[tuple[str, int], list[list[int]]] = {}
    for item in items:
        topic, partition, offset = item[0], item[1], item[2]
        bound = bounds[(topic, partition, offset)]
        partition_runs = runs.setdefault((topic, partition), [])
        last = partition_runs[-1] if partition_runs else None
        if last is not None and last[2] == bound and last[0] <= offset < last[0] + SPAN_RECORDS:
            last[1] = max(last[1], offset)
        else:
            partition_runs.append([offset, offset, bound])
    return [
        (topic, partition, first, last, bound)
        for (topic, partition), found in runs.items()
        for first, last, bound in found
    ]


@dataclass
class ShardState:
    """Everything a shard must keep across restarts; a snapshot holds exactly this, as data (`state_codec`)."""

    engine: Engine
    applied: dict[tuple[str, int], tuple[int, int]] = field(default_factory=dict)  # source -> last (offset, index)
    outcomes: Counter[tuple[str, str, str]] = field(default_factory=Counter)  # (topic, type, outcome) -> events
    next_offset: int = 0  # the next offset of this shard's partition to apply


@dataclass
class ShardOutput:
    dead: list[DeadLetter]
    partials: dict[Key, int]  # absolute values of the cells this batch changed
    arrivals: list[float]
    # The whole point (every base cell) at each midnight whose cells changed, when asked for: what the partials
    # topic carries of them, one record a point (`wire.partial_records`).
    points: Points | None = None


class Shard:
    def __init__(self, shard_id: int, config: EngineConfig, state: ShardState | None = None) -> None:
        self.id = shard_id
        self.state = state or ShardState(Engine(config))
        self._reported_watermark: int | None = None
        self._reported_segments: set[str] = set()
        self._reported_finals = (0, 0)  # (final hour, cut hour) the rollups know

    def apply(self, items: Iterable[Item], next_offset: int, *, whole_points: bool = False) -> ShardOutput:
        """Apply the items of one shard-topic record batch; `next_offset` is the offset after it. With
        `whole_points`, the output has the whole points its changed cells belong to (for the partials topic)."""
        state = self.state
        dead: list[DeadLetter] = []
        arrivals: list[float] = []
        for item in items:
            topic, partition, offset, index, arrival, payload = item[:6]
            position = (offset, index)
            last = state.applied.get((topic, partition))
            if last is not None and position <= last:
                continue  # re-sent by a router that restarted: already applied and counted
            state.applied[(topic, partition)] = position
            arrivals.append(arrival)
            rejection = self._apply(topic, item)
            if rejection is not None:
                dead.append(
                    DeadLetter(payload.encode("latin-1"), rejection.reason, rejection.detail, topic, partition, offset)
                )
        state.next_offset = next_offset
        state.engine.end_batch()
        points: Points | None = {} if whole_points else None
        return ShardOutput(dead, self.take_partials(points), arrivals, points)

    def _apply(self, topic: str, item: Item) -> Rejection | None:
        outcomes = self.state.outcomes
        if item[6] == "r":
            _, reason, detail, event_type = item[6:10]
            outcomes[(topic, event_type or "invalid", "rejected")] += 1
            return Rejection(reason, detail, event_type)
        try:
            event = event_of(item)
        except Exception as exc:
            # Internal topics are input too: a malformed item is dead-lettered, never trusted.
            outcomes[(topic, "invalid", "rejected")] += 1
            return Rejection("processing_error", f"malformed routed event: {exc!r:.200}")
        try:
            outcome = self.state.engine.accept(topic, event)
        except Exception as exc:
            # A defect must not stop the worker or lose the event: it goes to the dead letters, loudly.
            log.exception("engine failed on event %s", event.event_id)
            outcomes[(topic, event.type, "rejected")] += 1
            return Rejection("processing_error", f"internal error: {exc!r}", event.type)
        outcomes[(topic, event.type, outcome)] += 1
        if outcome == "late":
            lateness = self.state.engine.config.allowed_lateness_us / US_PER_SECOND
            return Rejection(
                "too_late",
                f"occurred_at is more than the allowed lateness ({lateness:g}s) before the latest accepted "
                f"event of {topic} key {event.routing_key!r}",
                event.type,
            )
        return None

    def take_partials(self, points: Points | None = None) -> dict[Key, int]:
        """Cells changed since the last call, plus this shard's watermark and newly seen segments. `points`, if
        given, receives the whole point of each midnight with a changed cell (see `_finish`)."""
        engine = self.state.engine
        partials = engine.ledger.take_touched()
        partials.update(engine.history.take_touched())
        return self._finish(partials, points)

    def _finish(self, partials: dict[Key, int], points: Points | None) -> dict[Key, int]:
        """`partials` with the control values a rollup needs after them; `points` (if given) receives every base
        cell of the points at the midnights `partials` has cells of (none for a point no longer kept), read
        before the points that become final now leave this state."""
        engine = self.state.engine
        if points is not None:
            hours = {hour for quantity, _, hour in partials if quantity in history.POINT_QUANTITIES}
            points.update(engine.history.values.points(hours, history.POINT_QUANTITIES))
        engine.finalize_history()  # after the cells it drops went out above
        finals = engine.history_finals
        # After the cells: a rollup folds what FINAL names, and ignores what comes for it later.
        if (finals.hour, finals.cut) != self._reported_finals:
            partials[(FINAL, "", 0)] = finals.hour
            partials[(CUT, "", 0)] = finals.cut
            self._reported_finals = (finals.hour, finals.cut)
        if engine.watermark is not None and engine.watermark != self._reported_watermark:
            partials[(WATERMARK, "", 0)] = engine.watermark
            self._reported_watermark = engine.watermark
        for segment in engine.segments_seen - self._reported_segments:
            partials[(SEGMENT_SEEN, segment, 0)] = 1
            self._reported_segments.add(segment)
        return partials

    def all_partials(self, points: Points | None = None) -> dict[Key, int]:
        """The whole state for a rollup, when this shard changes hands: a reset first (the rollup forgets what
        the previous owner said, which may include cells this state has at 0), then every cell. The reset keeps
        the final points this state no longer holds: its value is the hour after the last of them. `points`, if
        given, receives every point this state holds, whole."""
        self._reported_watermark = None
        self._reported_segments = set()
        self._reported_finals = (0, 0)
        self.state.engine.ledger.touched = set()
        self.state.engine.history.touched = set()
        partials: dict[Key, int] = {(RESET, "", 0): self.state.engine.history_finals.hour + 1}
        partials.update(self.state.engine.ledger.items())
        partials.update(self.state.engine.history.items())
        return self._finish(partials, points)


def total_outcomes(shards: Iterable[Shard]) -> Counter[tuple[str, str, str]]:
    """Outcome counts summed over shards: what `revpulse_events_total` shows for the shards a process owns."""
    return sum((shard.state.outcomes for shard in shards), Counter())
