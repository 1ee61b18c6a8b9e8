"""Input records packed while a router holds them (`held.pack`)."""

from __future__ import annotations

from revpulse.streams.held import pack
from revpulse.streams.partition import InputRecord


def test_packed_records_unpack_to_the_records_with_tombstones_and_empty_values() -> None:
    records = [
        InputRecord("product", 3, 10, b'{"type":"product.usage"}', 1_700_000_000.25),
        InputRecord("product", 3, 11, None, 1_700_000_001.5),
        InputRecord("product", 3, 13, b"", 1_700_000_002.0),
        InputRecord("product", 3, 2**40, b"\x00\xff not json", 1_700_000_003.125),
    ]
    packed = pack(records)
    assert len(packed) == 4
    assert packed.unpack() == records


def test_a_chunk_of_usage_events_packs_to_a_fraction_of_its_values() -> None:
    records = [
        InputRecord(
            "product",
            0,
            offset,
            (
                f'{{"event_id":"ev-{offset:08d}","type":"product.usage",'
                f'"occurred_at":"2025-03-01T10:{offset % 60:02d}:00Z",'
                f'"account_id":"acc-{offset % 997:05d}","feature":"reports","quantity":{offset % 7 + 1}}}'
            ).encode(),
            1_740_823_200.0 + offset,
        )
        for offset in range(512)
    ]
    packed = pack(records)
    values = sum(len(r.value or b"") for r in records)
    assert len(packed.values) < values / 4
    assert packed.unpack() == records
