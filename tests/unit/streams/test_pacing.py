"""Which fetched input records a router routes now and which it holds (`pacing.Merge`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from revpulse.streams.pacing import Merge

HOUR = 3600 * 1_000_000


Fetched = tuple[int | None, str]  # a held record as the tests fetch it: its time and its name


def merge(decoded: list[str] | None = None, **held: list[int | None]) -> Merge[str, Fetched, str]:
    """A merge of one-hour slack holding, per partition, records named `<partition>@<index>` at those hours;
    the names of the records it decodes are appended to `decoded`."""

    def decode(record: Fetched) -> Fetched:
        if decoded is not None:
            decoded.append(record[1])
        return record

    out: Merge[str, Fetched, str] = Merge(HOUR, decode)
    for partition, hours in held.items():
        out.add(partition, [(None if h is None else h * HOUR, f"{partition}@{i}") for i, h in enumerate(hours)])
    return out


def test_records_go_up_to_the_slack_after_the_other_partitions() -> None:
    # A fetch of the sparse billing topic spans days; product's reaches hour 11 and has more to fetch.
    held = merge(billing=[10, 11, 30, 50], product=[10, 10, 11])
    assert held.release({}, {"product"}) == [
        ("billing", "billing@0"),
        ("billing", "billing@1"),
        ("product", "product@0"),
        ("product", "product@1"),
        ("product", "product@2"),
    ]
    assert held.holding() == {"billing"}
    # product is read to its end: nothing else may bring records, so the rest of billing goes.
    assert held.release({"product": 11 * HOUR}, set()) == [("billing", "billing@2"), ("billing", "billing@3")]
    assert held.holding() == set()


def test_partitions_holding_records_alternate_in_one_call() -> None:
    held = merge(crm=[1, 5, 9], billing=[2, 7, 8])
    # Passes: crm to 3 h (billing's head + 1 h), billing to 2 h; crm to 8 h; billing to 10 h; crm to the end.
    assert [record for _, record in held.release({}, set())] == [
        "crm@0",
        "billing@0",
        "crm@1",
        "billing@1",
        "billing@2",
        "crm@2",
    ]


def test_a_partition_with_records_left_unfetched_holds_the_others_at_its_latest() -> None:
    held = merge(billing=[10, 12, 30])
    assert held.release({"product": 11 * HOUR}, {"product"}) == [("billing", "billing@0"), ("billing", "billing@1")]
    assert held.holding() == {"billing"}
    # One that routed nothing yet holds everything until its first fetch.
    assert held.release({}, {"crm"}) == []
    assert held.release({"crm": 29 * HOUR}, {"crm"}) == [("billing", "billing@2")]


def test_a_record_without_a_valid_event_goes_with_the_one_before_it() -> None:
    held = merge(crm=[None, 5, None, 40, None], product=[6])
    assert held.release({}, {"product"}) == [
        ("crm", "crm@0"),
        ("crm", "crm@1"),
        ("crm", "crm@2"),
        ("product", "product@0"),
    ]
    assert held.release({}, set()) == [("crm", "crm@3"), ("crm", "crm@4")]
    # An unfetched partition of unknown time lets only records without a time go.
    only_invalid = merge(crm=[None, None, 3])
    assert only_invalid.release({}, {"product"}) == [("crm", "crm@0"), ("crm", "crm@1")]


def test_release_all_empties_every_partition_in_offset_order() -> None:
    held = merge(billing=[50, 10], product=[1])
    assert held.release_all() == [("billing", "billing@0"), ("billing", "billing@1"), ("product", "product@0")]
    assert held.holding() == set() and held.release({}, set()) == []


def test_only_the_records_at_the_front_are_decoded_each_once() -> None:
    decoded: list[str] = []
    # A fetch of product spans hours 10 to 40; crm, unread, has routed up to hour 12.
    held = merge(decoded, billing=[11], product=list(range(10, 41)))
    released = held.release({"crm": 12 * HOUR}, {"crm"})
    assert released == [("billing", "billing@0"), *(("product", f"product@{i}") for i in range(4))]
    # Decoded: what went, and product's next record (hour 14), whose time held it back.
    assert decoded == ["billing@0", *(f"product@{i}" for i in range(5))]
    assert held.release_all() == [("product", f"product@{i}") for i in range(4, 31)]
    assert decoded == ["billing@0", *(f"product@{i}" for i in range(31))]


@dataclass
class Chunk:
    """A packed chunk as the tests pack one: its records, and a log of the chunks unpacked (their first names)."""

    records: list[Fetched]
    unpacked: list[str]

    def unpack(self) -> list[Fetched]:
        self.unpacked.append(self.records[0][1])
        return list(self.records)


def test_records_past_pack_after_are_held_packed_and_unpacked_a_chunk_at_a_time() -> None:
    packed: list[list[str]] = []
    unpacked: list[str] = []

    def pack(records: Sequence[Fetched]) -> Chunk:
        packed.append([name for _, name in records])
        return Chunk(list(records), unpacked)

    held: Merge[str, Fetched, str] = Merge(HOUR, lambda record: record, pack, pack_after=2, chunk=2)
    held.add("product", [(h * HOUR, f"product@{h}") for h in range(5)])
    held.add("product", [(5 * HOUR, "product@5")])
    # The first two are held as fetched, the rest in chunks of two at most, a later fetch's after them.
    assert packed == [["product@2", "product@3"], ["product@4"], ["product@5"]]
    assert unpacked == []
    # crm, unread, routed up to hour 2: product goes up to hour 3; its next record (hour 4) is unpacked for its time.
    assert held.release({"crm": 2 * HOUR}, {"crm"}) == [("product", f"product@{h}") for h in range(4)]
    assert unpacked == ["product@2", "product@4"]
    # One record is held now, and a chunk: what is fetched next is packed behind that chunk, not before it.
    held.add("product", [(6 * HOUR, "product@6")])
    assert packed[-1] == ["product@6"]
    assert held.release_all() == [("product", f"product@{h}") for h in range(4, 7)]
    assert unpacked == ["product@2", "product@4", "product@5", "product@6"]
    assert held.holding() == set()
