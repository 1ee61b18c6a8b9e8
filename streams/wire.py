"""Wire formats of the internal topics: routed items (`<id>-shards`) and partial ledgers (`<id>-partials`).

Both are read back by every worker, so both decoders treat their bytes as untrusted input.
"""

from __future__ import annotations

import re
from dataclasses import fields
from typing import Any

import orjson

from revpulse.schemas.models import Event
from revpulse.streams.ledger import Key

# One routed item: [source topic, partition, offset, index in record, arrival (epoch s),
#   payload (latin-1, so any bytes survive JSON), "e", *event fields] or [..., "r", reason, detail, type].
# Encoded, an event's money beyond 64 bits is its decimal string (`encode_items`, read back by `event_of`).
Item = list[Any]
# Pseudo-quantities a shard publishes beside its ledger cells, for the rollup.
WATERMARK = "__watermark"
RESET = "__reset"
SEGMENT_SEEN = "__segment_seen"


# Where an "e" item's money is: money is unbounded (up to 10²¹ nanos from the input, more after FX), orjson's
# integers are not (64 bits), so money beyond them travels as its decimal string.
_EVENT_AT = 7
_MONEY_AT = _EVENT_AT + [f.name for f in fields(Event)].index("money")
_INT_MIN, _INT_MAX = -(2**63), 2**64 - 1
_WIDE_INT = re.compile(r"-?[0-9]{1,64}\Z")


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


def decode_items(value: bytes) -> list[Item]:
    return orjson.loads(value)  # type: ignore[no-any-return]


def partial_key(shard: int, key: Key) -> bytes:
    quantity, segment, hour = key
    return f"{shard}|{quantity}|{segment}|{hour}".encode()


def partial_value(value: int) -> bytes | None:
    """A cell's absolute value; None (a tombstone) for 0, so a compacted topic can drop it."""
    return str(value).encode() if value else None


def parse_partial(key: bytes, value: bytes | None) -> tuple[int, Key, int]:
    shard, quantity, segment, hour = key.decode().split("|")
    return int(shard), (quantity, segment, int(hour)), int(value) if value else 0
