"""Input records packed while a router holds them back for event-time alignment (`revpulse.streams.pacing`).

A fetch of a dense partition can wait for weeks of a sparse topic's events: what a router holds is bounded by
about a fetch a partition, and a fetch of small records is tens of thousands of them. As objects (a record, its
value's bytes, its offset and time) each costs about twice its value, and the allocator keeps what the largest
hold took after it is routed. Packed, a chunk is its offsets, times and sizes as arrays and its values as one
zstd frame: about a tenth, for well under a microsecond a record each way.
"""

from __future__ import annotations

from array import array
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import zstandard

from revpulse.streams.partition import InputRecord

_COMPRESSOR: Final = zstandard.ZstdCompressor(level=1)
_DECOMPRESSOR: Final = zstandard.ZstdDecompressor()
NO_VALUE: Final = -1  # a size standing for a record without a value (a tombstone)


@dataclass(frozen=True, slots=True)
class PackedRecords:
    """Records of one partition, in offset order, as `pack` left them."""

    topic: str
    partition: int
    offsets: array[int]
    timestamps: array[float]
    sizes: array[int]
    values: bytes  # the values that exist, concatenated, as one zstd frame

    def __len__(self) -> int:
        return len(self.offsets)

    def unpack(self) -> list[InputRecord]:
        data = memoryview(_DECOMPRESSOR.decompress(self.values))
        records = []
        at = 0
        for offset, timestamp, size in zip(self.offsets, self.timestamps, self.sizes, strict=True):
            value = None
            if size != NO_VALUE:
                value = bytes(data[at : at + size])
                at += size
            records.append(InputRecord(self.topic, self.partition, offset, value, timestamp))
        return records


def pack(records: Sequence[InputRecord]) -> PackedRecords:
    """Records of one partition (at least one), in offset order, packed."""
    first = records[0]
    return PackedRecords(
        first.topic,
        first.partition,
        array("q", [r.offset for r in records]),
        array("d", [r.timestamp for r in records]),
        array("q", [NO_VALUE if r.value is None else len(r.value) for r in records]),
        _COMPRESSOR.compress(b"".join(r.value for r in records if r.value is not None)),
    )
