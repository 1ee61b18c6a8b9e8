"""Wire formats of the internal topics: routed items (`<id>-shards`) and partial ledgers (`<id>-partials`).

Both are read back by every worker, so both decoders treat their bytes as untrusted input.
"""

from __future__ import annotations

from typing import Any

import orjson
from revpulse.streams.ledger import Key

# One routed item: [source topic, partition, offset, index in record, arrival (epoch s),
#   payload (latin-1, so any bytes survive JSON), "e", *event fields] or [..., "r", reason, detail, type].
Item = list[Any]
# Pseudo-quantities a shard publishes beside its ledger cells, for the rollup.
WATERMARK = "__watermark"
RESET = "__reset"
SEGMENT_SEEN = "__segment_seen"


def encode_items(items: list[Item]) -> bytes:
    return orjson.dumps(items)


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
