"""Spans: the input records of the items a worker applied to its own shard."""

from __future__ import annotations

from revpulse.streams.partition import spans_of
from revpulse.streams.wire import SPAN_RECORDS

BILLING, PRODUCT = "billing.events", "product.events"


def test_spans_are_runs_per_partition_of_one_bound_in_the_order_first_met() -> None:
    items = [[PRODUCT, 1, 7], [BILLING, 0, 3], [BILLING, 0, 3], [PRODUCT, 1, 8], [BILLING, 0, 5], [BILLING, 0, 9]]
    bounds = {(BILLING, 0, 3): 100, (BILLING, 0, 5): 100, (BILLING, 0, 9): 200, (PRODUCT, 1, 7): 100}
    bounds[(PRODUCT, 1, 8)] = 100

    assert spans_of(items, bounds) == [
        (PRODUCT, 1, 7, 8, 100),
        (BILLING, 0, 3, 5, 100),
        (BILLING, 0, 9, 9, 200),
    ]


def test_a_span_names_fewer_than_span_records_offsets() -> None:
    last = SPAN_RECORDS - 1
    items = [[BILLING, 2, 0], [BILLING, 2, last], [BILLING, 2, last + 1]]
    bounds = {(BILLING, 2, offset): 5 for offset in (0, last, last + 1)}

    assert spans_of(items, bounds) == [(BILLING, 2, 0, last, 5), (BILLING, 2, last + 1, last + 1, 5)]


def test_no_items_no_spans() -> None:
    assert spans_of([], {}) == []
