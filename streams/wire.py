"""Wire formats of the internal topics: routed items or spans (`<id>-shards`) and partial ledgers (`<id>-partials`).

Both are read back by every worker, so both decoders treat their bytes as untrusted input.
"""

from __future__ import annotations

import contextlib
import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import fields
from typing import Any, Final, NamedTuple

import orjson

from revpulse.schemas.models import EVENT_TYPES, LEAD_STAGES, MAX_ARRAY, MAX_ID_LENGTH, Event
from revpulse.streams.history import POINT_QUANTITIES, QUANTITIES_OF_HISTORY
from revpulse.streams.ledger import Key
from revpulse.streams.plain import INT64_MAX, INT64_MIN
from revpulse.streams.quantities import QUANTITIES

# One routed item: [source topic, partition, offset, index in record, arrival (epoch s),
#   payload (latin-1, so any bytes survive JSON), "e", *event fields] or [..., "r", reason, detail, type].
# Encoded, an event's money beyond 64 bits is its decimal string (`encode_items`, read back by `event_of`).
Item = list[Any]
# Pseudo-quantities a shard publishes beside its ledger cells, for the rollup.
WATERMARK = "__watermark"
RESET = "__reset"  # value: the hour after the shard's last final point (see `Rollup.update`)
SEGMENT_SEEN = "__segment_seen"
FINAL = "__final"  # value: the hour of the shard's last final point; its cells are in the rollup's sum only
CUT = "__cut"  # value: the hour at and before which the shard's points are no longer kept
_PSEUDO = frozenset({WATERMARK, RESET, SEGMENT_SEEN, FINAL, CUT})
# Key quantity of a record holding a shard's cells of one segment at one midnight, whole (`point_value`), in
# place of a record a cell: a point has hundreds of cells, and one record a segment keeps a compacted topic just
# as right (its last record is what the shard has; a tombstone once it has none), at a size bounded whatever
# the number of segments.
POINT = "__point"
Points = dict[int, dict[tuple[str, str], int]]  # hour of a midnight -> (quantity, segment) -> a shard's amount
# The partials that order a shard's others: a rollup applies what came before each of them first, then it alone.
ORDERING: Final = frozenset({RESET, FINAL, CUT})


# Where an "e" item's money is: money is unbounded (up to 10²¹ nanos from the input, more after FX), orjson's
# integers are not (64 bits), so money beyond them travels as its decimal string.
_EVENT_AT = 7
_MONEY_AT = _EVENT_AT + [f.name for f in fields(Event)].index("money")
_EVENT_FIELDS = len(fields(Event))
_INT_MIN, _INT_MAX = -(2**63), 2**64 - 1
_WIDE_INT = re.compile(r"-?[0-9]{1,64}\Z")


# A shard-topic record holds at most this many items, and past this many characters of payload no more: each
# item carries its record's (or element's) bytes, so a count alone could make a record of many megabytes.
ITEMS_PER_RECORD = 1_000
PAYLOAD_PER_RECORD = 256 * 1024


def item_records(items: list[Item]) -> Iterator[list[Item]]:
    """`items` in order, in groups that each make one shard-topic record (an item larger than the payload
    bound is a record of its own)."""
    group: list[Item] = []
    size = 0
    for item in items:
        payload = len(item[5])
        if group and (len(group) == ITEMS_PER_RECORD or size + payload > PAYLOAD_PER_RECORD):
            yield group
            group, size = [], 0
        group.append(item)
        size += payload
    if group:
        yield group


def encode_items(items: list[Item]) -> bytes:
    try:
        return orjson.dumps(items)
    except TypeError:  # "Integer exceeds 64-bit range": rare, so the common case pays nothing
        return orjson.dumps([_narrow(item) for item in items])


def _narrow(item: Item) -> Item:
    money = item[_MONEY_AT] if len(item) > _MONEY_AT and item[6] == "e" else None
    if type(money) is int and not _INT_MIN <= money <= _INT_MAX:
        item = list(item)
        item[_MONEY_AT] = str(money)
    return item


def event_of(item: Item) -> Event:
    """The event of an "e" item, as routed or as read back from the wire (money as a string beyond 64 bits)."""
    event = Event(*item[_EVENT_AT:])
    money = event.money
    if money is not None and type(money) is not int:
        if type(money) is not str or not _WIDE_INT.match(money):
            raise ValueError(f"money must be an integer, got {type(money).__name__}")
        event.money = int(money)
    return event


class WireError(ValueError):
    """A record of an internal topic that RevPulse did not write: it is skipped and counted, never applied."""


# Bounds of what a shard-topic item may hold: what the decoder lets through, with room for FX.
_MAX_TEXT = 64 * 1024  # payloads, details: an element's JSON can be long, but never the whole record again
_MAX_MONEY_NANOS = 10**30
_HEAD = (str, int, int, int, (int, float), str)
_REASONS = frozenset(
    {"invalid_json", "invalid_event", "unknown_type", "unknown_currency", "too_late", "processing_error"}
)
_OPTIONAL_IDS = ("account_id", "segment", "entity_id", "lead_id", "channel")


def _id(value: object, *, optional: bool = True) -> bool:
    if value is None:
        return optional
    return type(value) is str and 0 < len(value) <= MAX_ID_LENGTH


def check_item(item: object, latest_us: int) -> Item:
    """`item` if it is a well-formed item whose event obeys the decoder's rules (occurred_at at most
    `latest_us`); WireError otherwise. Items of the shard topic are input like any other."""
    if type(item) is not list or len(item) < 7:
        raise WireError("an item is not a list of at least 7 fields")
    for value, kind in zip(item[:6], _HEAD, strict=True):
        if not isinstance(value, kind) or isinstance(value, bool):
            raise WireError("an item's source fields are malformed")
    topic, partition, offset, index, arrival = item[:5]
    if not (0 < len(topic) <= MAX_ID_LENGTH and 0 <= partition < 2**31 and 0 <= offset < 2**63):
        raise WireError("an item's source is out of range")
    if not (0 <= index <= MAX_ARRAY and math.isfinite(arrival)):
        raise WireError("an item's index or arrival is out of range")
    if item[6] == "r":
        if len(item) != 10 or item[7] not in _REASONS or type(item[8]) is not str or len(item[8]) > _MAX_TEXT:
            raise WireError("a rejection item is malformed")
        if item[9] is not None and item[9] not in EVENT_TYPES:
            raise WireError("a rejection item names an unknown type")
        return item
    if item[6] != "e" or len(item) != _EVENT_AT + _EVENT_FIELDS:
        raise WireError("an item is neither an event nor a rejection")
    try:
        event = event_of(item)
    except (TypeError, ValueError) as exc:
        raise WireError(f"an item's event is malformed: {exc}") from None
    if not (_id(event.event_id, optional=False) and event.type in EVENT_TYPES):
        raise WireError("an item's event has no valid id or type")
    if not all(_id(getattr(event, name)) for name in _OPTIONAL_IDS):
        raise WireError("an item's event has a malformed id")
    if not _id(event.routing_key, optional=False):
        raise WireError("an item's event has no routing key")
    if type(event.t) is not int or not 0 <= event.t <= latest_us:
        raise WireError("an item's event is dated outside 1970 .. one day past the clock")
    if event.money is not None and not 0 <= event.money <= _MAX_MONEY_NANOS:
        raise WireError("an item's money is out of range")
    if event.stage is not None and event.stage not in LEAD_STAGES:
        raise WireError("an item's event has an unknown stage")
    return item


def decode_items(value: bytes | None, latest_us: int) -> tuple[list[Item], int]:
    """The valid items of a shard-topic record, and how many of its items were not; WireError when the record
    is not a JSON list at all."""
    if value is None:
        raise WireError("a shard-topic record has no value")
    try:
        raw = orjson.loads(value)
    except orjson.JSONDecodeError:
        raise WireError("a shard-topic record is not JSON") from None
    if type(raw) is not list:
        raise WireError("a shard-topic record is not a list of items")
    items = []
    for item in raw:
        with contextlib.suppress(WireError):
            items.append(check_item(item, latest_us))
    return items, len(raw) - len(items)


# A shard-topic record for items a worker applied to its own shard as it routed them (`LocalPath`): instead of
# the items, the input records they came from, per input partition, as runs of offsets decoded with one bound
# on occurred_at. The input topics hold those records; a shard that did not apply them (it restarted, or took
# the shard over) reads them again. Encoded as a JSON object, which an item list never is.
Span = tuple[str, int, int, int, int]  # (input topic, partition, first offset, last offset, latest occurred_at µs)
SPANS_PER_RECORD = 4_096
SPAN_RECORDS = 10_000  # offsets one span may name (a router's longer runs take several): what a shard reads at once


def encode_spans(spans: list[Span]) -> bytes:
    return orjson.dumps({"spans": spans})


def is_spans(value: bytes | None) -> bool:
    return value is not None and value[:1] == b"{"


def decode_spans(value: bytes, inputs: frozenset[str]) -> list[Span]:
    """The spans of a shard-topic record `is_spans` picked; WireError unless every span names a partition of an
    input topic and a run of at most `SPAN_RECORDS` offsets, with a bound a clock could give."""
    try:
        raw = orjson.loads(value)
    except orjson.JSONDecodeError:
        raise WireError("a shard-topic record is not JSON") from None
    if type(raw) is not dict or raw.keys() != {"spans"} or type(raw["spans"]) is not list:
        raise WireError("a shard-topic object is not a list of spans")
    if len(raw["spans"]) > SPANS_PER_RECORD:
        raise WireError("a shard-topic record names too many spans")
    spans: list[Span] = []
    for span in raw["spans"]:
        if type(span) is not list or len(span) != 5 or type(span[0]) is not str:
            raise WireError("a span is not [topic, partition, first, last, bound]")
        topic, partition, first, last, bound = span
        if not all(type(n) is int for n in (partition, first, last, bound)):
            raise WireError("a span's numbers are not integers")
        if topic not in inputs:
            raise WireError("a span names a topic that is not an input topic")
        if not (0 <= partition < 2**31 and 0 <= first <= last < 2**63 and last - first < SPAN_RECORDS):
            raise WireError("a span's partition or offsets are out of range")
        if not 0 <= bound < 2**62:
            raise WireError("a span's bound is out of range")
        spans.append((topic, partition, first, last, bound))
    return spans


def partial_key(shard: int, key: Key) -> bytes:
    quantity, segment, hour = key
    return f"{shard}|{quantity}|{segment}|{hour}".encode()


def partial_value(value: int) -> bytes | None:
    """A cell's absolute value; None (a tombstone) for 0, so a compacted topic can drop it."""
    return str(value).encode() if value else None


def point_key(shard: int, segment: str, hour: int) -> bytes:
    return f"{shard}|{POINT}|{segment}|{hour}".encode()


def point_value(cells: Mapping[str, int]) -> bytes | None:
    """A shard's cells of one segment at one point, absolute, as `[[quantity, amount], ...]` (an amount beyond
    64 bits as its decimal string); None (a tombstone) for none."""
    if not cells:
        return None
    return orjson.dumps([[q, a if INT64_MIN <= a <= INT64_MAX else str(a)] for q, a in cells.items()])


def partial_records(shard: int, partials: Mapping[Key, int], points: Points) -> list[tuple[bytes, bytes | None]]:
    """A shard's partials as partials-topic records (key, value), in their order: a record a cell, but the cells
    of the points in `points`: one record a segment of a point, whole, where the first of its cells was."""
    records: list[tuple[bytes, bytes | None]] = []
    by_segment: dict[int, dict[str, dict[str, int]]] = {}  # hour -> segment -> quantity -> amount
    sent: set[tuple[int, str]] = set()
    for key, value in partials.items():
        quantity, segment, hour = key
        if hour in points and quantity in POINT_QUANTITIES:
            if (hour, segment) not in sent:
                sent.add((hour, segment))
                segments = by_segment.get(hour)
                if segments is None:
                    segments = by_segment[hour] = {}
                    for (q, s), amount in points[hour].items():
                        segments.setdefault(s, {})[q] = amount
                records.append((point_key(shard, segment, hour), point_value(segments.get(segment, {}))))
        else:
            records.append((partial_key(shard, key), partial_value(value)))
    return records


class Point(NamedTuple):
    """A partials record of a shard's cells of one segment at the midnight of `hour`, whole."""

    shard: int
    segment: str
    hour: int
    cells: dict[str, int]  # quantity -> amount


# A partial's hour: the epoch's hours up to the year 3000 (occurred_at is bounded far below).
_MAX_HOUR = 9_000_000
_MAX_CELL = 10**40


def _parse_point(shard: int, segment: str, hour: int, value: bytes | None) -> Point:
    if len(segment) > MAX_ID_LENGTH or not -_MAX_HOUR <= hour <= _MAX_HOUR:
        raise WireError("a point record's key is out of range")
    if value is None:
        return Point(shard, segment, hour, {})
    try:
        raw = orjson.loads(value)
    except orjson.JSONDecodeError:
        raise WireError("a point record is not JSON") from None
    if type(raw) is not list or len(raw) > len(POINT_QUANTITIES):
        raise WireError("a point record is not a list of cells, or too long")
    cells: dict[str, int] = {}
    for cell in raw:
        if type(cell) is not list or len(cell) != 2:
            raise WireError("a point record's cell is not [quantity, amount]")
        quantity, amount = cell
        if type(amount) is str and _WIDE_INT.match(amount):
            amount = int(amount)
        if type(quantity) is not str or quantity not in POINT_QUANTITIES or type(amount) is not int:
            raise WireError("a point record's cell is out of range")
        if abs(amount) > _MAX_CELL:
            raise WireError("a point record's cell is out of range")
        cells[quantity] = amount
    return Point(shard, segment, hour, cells)


def parse_partial(key: bytes | None, value: bytes | None, shards: int) -> tuple[int, Key, int] | Point:
    """(shard, cell, absolute value) of a partials record, or the `Point` it holds; WireError for anything a
    shard does not write."""
    try:
        shard_text, quantity, segment, hour_text = (key or b"").decode().split("|")
        shard, hour = int(shard_text), int(hour_text)
        number = int(value) if value and quantity != POINT else 0
    except (UnicodeDecodeError, ValueError):
        raise WireError(f"a partials key or value is malformed: {(key or b'')[:100]!r}") from None
    if not 0 <= shard < shards:
        raise WireError(f"a partial names shard {shard}, of {shards}")
    if quantity == POINT:
        return _parse_point(shard, segment, hour, value)
    if quantity in QUANTITIES or quantity in QUANTITIES_OF_HISTORY:
        if not (len(segment) <= MAX_ID_LENGTH and -_MAX_HOUR <= hour <= _MAX_HOUR and abs(number) <= _MAX_CELL):
            raise WireError(f"a partial of {quantity} is out of range")
    elif quantity not in _PSEUDO or (quantity != SEGMENT_SEEN and (segment or hour)) or number < 0:
        raise WireError(f"a partial names an unknown quantity {quantity[:100]!r}")
    elif quantity in ORDERING and number > _MAX_HOUR + 1:
        raise WireError(f"a partial's {quantity} hour is out of range")
    return shard, (quantity, segment, hour), number
