"""The internal topics' wire formats read back as hostile input: what RevPulse wrote comes back, anything else is
a WireError (skipped and counted by the agents), never another exception and never a change to the state."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from revpulse.schemas.models import EventDecoder, latest_occurred_at
from revpulse.streams.history import CAPTURED, OVERLAY, SNAPSHOT_KEY, WINDOW_KEY
from revpulse.streams.partition import InputRecord, Router
from revpulse.streams.quantities import MRR_NOW, SIGNUPS
from revpulse.streams.wire import (
    CUT,
    FINAL,
    RESET,
    SEGMENT_SEEN,
    SPAN_RECORDS,
    SPANS_PER_RECORD,
    WATERMARK,
    Point,
    WireError,
    decode_items,
    decode_spans,
    encode_items,
    encode_spans,
    is_spans,
    item_records,
    parse_partial,
    partial_key,
    partial_records,
    partial_value,
    point_key,
    point_value,
)

NOW = datetime(2024, 3, 17, 10, 0, tzinfo=UTC)
LATEST = latest_occurred_at(NOW)
EVENT = {
    "event_id": "e1",
    "type": "subscription.started",
    "occurred_at": "2024-03-17T09:00:00Z",
    "account_id": "a1",
    "subscription_id": "s1",
    "mrr": 100,
}


def routed(*docs: object) -> list[list[object]]:
    records = [InputRecord("billing.events", 0, i, orjson.dumps(doc), 1.0) for i, doc in enumerate(docs)]
    (items,) = Router(EventDecoder("USD", {}, ("smb",)), shards=1).route(records, NOW).values()
    return items


def test_items_a_router_wrote_come_back_whole() -> None:
    items = routed(EVENT, {"type": "nope"})
    assert decode_items(encode_items(items), LATEST) == (items, 0)


def with_field(index: int, value: object) -> list[object]:
    item = list(routed(EVENT)[0])
    item[index] = value
    return item


@pytest.mark.parametrize(
    "item",
    [
        with_field(0, 17),  # source topic not a string
        with_field(2, -1),  # negative offset
        with_field(3, 10_001),  # index past any array
        with_field(4, "soon"),  # arrival not a number
        with_field(6, "x"),  # neither event nor rejection
        with_field(7, ""),  # empty event id
        with_field(7, "e" * 257),  # event id too long
        with_field(8, "subscription.exploded"),  # unknown type
        with_field(9, latest_occurred_at(NOW) + 1),  # past one day after the clock
        with_field(9, -1),  # before 1970
        with_field(9, 1.5),  # not an integer time
        with_field(10, None),  # no account: no routing key
        with_field(13, "-5"),  # negative money
        with_field(13, str(10**31)),  # more money than any input gives
        with_field(13, "12abc"),  # money neither an integer nor its decimal string
        with_field(14, "won"),  # not a lead stage
        with_field(6, "r")[:10],  # a rejection whose reason is not one of ours
        [1, 2, 3],
        {"an": "object"},
        None,
    ],
)
def test_a_malformed_item_is_skipped_and_counted_the_rest_goes_on(item: object) -> None:
    (good,) = routed(EVENT)
    assert decode_items(orjson.dumps([item, good]), LATEST) == ([good], 1)


@pytest.mark.parametrize("value", [None, b"", b"\xff\xfe", b"{}", b'"items"', b"17", b"[1, 2"])
def test_a_record_that_is_not_a_list_of_items_is_a_wire_error(value: bytes | None) -> None:
    with pytest.raises(WireError):
        decode_items(value, LATEST)


def test_partials_a_shard_wrote_come_back() -> None:
    cells = {(MRR_NOW, "smb", 0): 10**21 * 7, (WATERMARK, "", 0): 1_710_666_000_000_000, (RESET, "", 0): 1}
    cells[(SEGMENT_SEEN, "other", 0)] = 1
    cells[(FINAL, "", 0)] = cells[(CUT, "", 0)] = 490_000
    cells[(OVERLAY[SNAPSHOT_KEY[MRR_NOW]], "smb", 490_000)] = 5
    for key, value in cells.items():
        assert parse_partial(partial_key(3, key), partial_value(value), 8) == (3, key, value)
    assert parse_partial(partial_key(3, (MRR_NOW, "smb", 0)), partial_value(0), 8) == (3, (MRR_NOW, "smb", 0), 0)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        (b"8|mrr_now|smb|0", b"1"),  # shard 8 of 8
        (b"-1|mrr_now|smb|0", b"1"),
        (b"3|mrr_nwo|smb|0", b"1"),  # not a declared quantity
        (b"3|mrr_now|smb", b"1"),
        (b"3|mrr_now|smb|0|9", b"1"),
        (b"3|mrr_now|smb|zero", b"1"),
        (b"3|mrr_now|smb|0", b"1e21"),
        (b"3|mrr_now|smb|0", b"1" + b"0" * 41),  # beyond any sum of bounded amounts
        (b"3|mrr_now|smb|99999999999", b"1"),
        (b"3|__watermark|smb|0", b"1"),
        (b"3|__reset||0", b"-1"),
        (b"3|__final||0", b"9000002"),  # an hour past any the cells may have
        (b"3|__cut|smb|0", b"1"),
        (b"\xff|mrr_now|smb|0", b"1"),
        (None, b"1"),
    ],
)
def test_a_partial_no_shard_writes_is_a_wire_error(key: bytes | None, value: bytes) -> None:
    with pytest.raises(WireError):
        parse_partial(key, value, 8)


@settings(max_examples=1500, deadline=None)
@given(
    st.binary(max_size=200)
    | st.builds(orjson.dumps, st.recursive(st.none() | st.integers(-(2**63), 2**64 - 1) | st.text(), st.lists))
)
def test_no_bytes_make_the_shard_topic_decoder_raise_anything_else(value: bytes) -> None:
    try:
        items, invalid = decode_items(value, LATEST)
    except WireError:
        return
    assert invalid >= 0 and all(type(item) is list for item in items)


@settings(max_examples=1500, deadline=None)
@given(st.binary(max_size=80) | st.none(), st.binary(max_size=40) | st.none())
def test_no_bytes_make_the_partials_decoder_raise_anything_else(key: bytes | None, value: bytes | None) -> None:
    try:
        parsed = parse_partial(key, value, 8)
    except WireError:
        return
    assert 0 <= parsed[0] < 8


def test_items_are_grouped_into_records_by_count_and_by_payload_size() -> None:
    def item(payload: int) -> list[object]:
        return ["t", 0, 0, 0, 0.0, "x" * payload, "r", "invalid_json", "", None]

    sizes = [100_000, 100_000, 100_000, 300_000, 1, 1]
    groups = list(item_records([item(n) for n in sizes]))
    assert [[len(i[5]) for i in group] for group in groups] == [[100_000, 100_000], [100_000], [300_000], [1, 1]]
    assert [len(group) for group in item_records([item(1)] * 2_500)] == [1_000, 1_000, 500]


MRR_H = SNAPSHOT_KEY[MRR_NOW]
SIGNUPS_7D = WINDOW_KEY[(SIGNUPS, "7d")]
DAY = 490_008  # the hour of a midnight


def test_a_point_record_comes_back_whole_with_wide_amounts_and_a_tombstone_for_none() -> None:
    cells = {MRR_H: 10**21 * 7, SIGNUPS_7D: -3, CAPTURED: 1}
    assert parse_partial(point_key(3, "smb", DAY), point_value(cells), 8) == Point(3, "smb", DAY, cells)
    assert point_value({}) is None
    assert parse_partial(point_key(3, "", DAY), None, 8) == Point(3, "", DAY, {})


@pytest.mark.parametrize(
    "value",
    [
        b"[",
        b"{}",
        b'[["h:mrr_now"]]',
        b'[["h:mrr_now", 1, 2]]',
        b'[["h:nope", 1]]',
        b'[[["h:mrr_now"], 1]]',  # an unhashable quantity
        b'[["h:mrr_now", true]]',
        b'[["h:mrr_now", 1.5]]',
        b'[["h:mrr_now", "1' + b"0" * 41 + b'"]]',
        b'[["h:+mrr_now", 1]]',  # an overlay travels as a cell of its own, never in a point
        b"[" + b",".join([b'["h:mrr_now", 1]'] * 10_000) + b"]",  # more cells than a point has quantities
    ],
)
def test_a_point_record_no_shard_writes_is_a_wire_error(value: bytes) -> None:
    with pytest.raises(WireError):
        parse_partial(point_key(3, "smb", DAY), value, 8)
    with pytest.raises(WireError):
        parse_partial(b"3|__point|" + b"s" * 300 + b"|0", point_value({MRR_H: 1}), 8)


@settings(max_examples=1500, deadline=None)
@given(st.builds(orjson.dumps, st.recursive(st.none() | st.integers(-(2**63), 2**64 - 1) | st.text(), st.lists)))
def test_no_value_makes_a_point_record_raise_anything_else(value: bytes) -> None:
    try:
        parsed = parse_partial(point_key(3, "smb", DAY), value, 8)
    except WireError:
        return
    assert isinstance(parsed, Point) and all(type(amount) is int for amount in parsed.cells.values())


def test_a_shards_point_cells_go_as_one_record_a_segment_where_the_first_of_them_was() -> None:
    overlay = (OVERLAY[MRR_H], "smb", DAY - 480)
    partials = {
        (MRR_NOW, "smb", 0): 5,
        (MRR_H, "smb", DAY): 7,
        (SIGNUPS_7D, "all", DAY): 2,
        overlay: 1,
        (SIGNUPS_7D, "smb", DAY): 0,  # changed, with the segment's other cells unchanged
        (MRR_H, "enterprise", DAY): 0,  # the segment's last cell there went
        (MRR_H, "smb", DAY + 24): 8,
        (FINAL, "", 0): DAY - 24,
    }
    points = {
        DAY: {(MRR_H, "smb"): 7, (SIGNUPS_7D, "all"): 2, (CAPTURED, ""): 1},
        DAY + 24: {(MRR_H, "smb"): 8, (SIGNUPS_7D, "smb"): 4},
    }
    assert partial_records(3, partials, points) == [
        (partial_key(3, (MRR_NOW, "smb", 0)), b"5"),
        (point_key(3, "smb", DAY), point_value({MRR_H: 7})),
        (point_key(3, "all", DAY), point_value({SIGNUPS_7D: 2})),
        (partial_key(3, overlay), b"1"),
        (point_key(3, "enterprise", DAY), None),
        (point_key(3, "smb", DAY + 24), point_value({MRR_H: 8, SIGNUPS_7D: 4})),
        (partial_key(3, (FINAL, "", 0)), str(DAY - 24).encode()),
    ]
    # without points (a standby's output), a record a cell as before
    assert len(partial_records(3, partials, {})) == len(partials)


INPUTS = frozenset({"billing.events", "product.events"})


def test_spans_a_router_wrote_come_back_whole() -> None:
    spans = [("billing.events", 0, 3, 5, LATEST), ("product.events", 3, 0, SPAN_RECORDS - 1, 0)]
    value = encode_spans(spans)
    assert is_spans(value)
    assert decode_spans(value, INPUTS) == spans
    assert not is_spans(encode_items(routed(EVENT))) and not is_spans(None) and not is_spans(b"")


@pytest.mark.parametrize(
    "value",
    [
        b'{"spans": [["crm.events", 0, 1, 2, 3]]}',  # not an input topic
        b'{"spans": [["billing.events", -1, 1, 2, 3]]}',
        b'{"spans": [["billing.events", 0, 5, 4, 3]]}',  # first after last
        b'{"spans": [["billing.events", 0, 0, %d, 3]]}' % SPAN_RECORDS,  # one offset too many
        b'{"spans": [["billing.events", 0, 1, 2, -3]]}',
        b'{"spans": [["billing.events", 0, true, 2, 3]]}',
        b'{"spans": [["billing.events", 0, 1.0, 2, 3]]}',
        b'{"spans": [["billing.events", 0, 1, 2]]}',
        b'{"spans": [["billing.events", 0, 1, 2, 3]], "more": 1}',
        b'{"spans": {"billing.events": 0}}',
        b'{"spans": [["billing.events", 0, 1, 2, 3]' + b', ["billing.events", 0, 1, 2, 3]' * SPANS_PER_RECORD + b"]}",
        b"{not json",
    ],
)
def test_spans_no_router_writes_are_a_wire_error(value: bytes) -> None:
    assert is_spans(value)
    with pytest.raises(WireError):
        decode_spans(value, INPUTS)


@settings(max_examples=1500, deadline=None)
@given(
    st.builds(lambda b: b"{" + b, st.binary(max_size=120))
    | st.builds(
        lambda spans: orjson.dumps({"spans": spans}),
        st.lists(st.lists(st.sampled_from(sorted(INPUTS)) | st.integers(-(2**63), 2**64 - 1) | st.none())),
    )
)
def test_no_bytes_make_the_spans_decoder_raise_anything_else(value: bytes) -> None:
    try:
        spans = decode_spans(value, INPUTS)
    except WireError:
        return
    assert all(topic in INPUTS and 0 <= last - first < SPAN_RECORDS for topic, _, first, last, _ in spans)
