"""A history point's series packed: the same series back, value types kept, names shared between points."""

import math

import pytest

from revpulse.streams.packed_series import PackedSeries
from revpulse.streams.series import Series

ALL = (("segment", "all"),)
SMB = (("segment", "smb"),)
MONTH = (("segment", "all"), ("window", "30d"))

POINT = [
    Series("mrr", ALL, 1328480.25),
    Series("mrr", SMB, -0.0),
    Series("win_rate", MONTH, None),
    Series("customers", ALL, 41),  # not a float: kept as it is
    Series("arr", ALL, math.inf),
    Series("cac", MONTH, 1e-300),
]


def test_the_series_come_back_as_they_went_in_with_their_types() -> None:
    packed = PackedSeries(POINT)
    assert list(packed) == POINT
    assert [type(s.value) for s in packed] == [float, float, type(None), int, float, float]
    negative_zero = packed[1].value
    assert isinstance(negative_zero, float) and math.copysign(1.0, negative_zero) == -1.0
    assert len(packed) == 6


def test_indexing_reads_one_series_from_either_end_and_slices() -> None:
    packed = PackedSeries(POINT)
    assert packed[0] == Series("mrr", ALL, 1328480.25)
    assert packed[-1] == Series("cac", MONTH, 1e-300)
    assert packed[2:4] == POINT[2:4]
    with pytest.raises(IndexError):
        packed[6]


def test_a_point_publishing_the_same_series_shares_the_names_of_the_one_before() -> None:
    before = PackedSeries(POINT)
    same = PackedSeries([s._replace(value=1.5) for s in POINT], like=before)
    other = PackedSeries(POINT[:-1], like=before)
    assert same.names is before.names
    assert other.names is not before.names
    assert [s.value for s in same] == [1.5] * 6
    assert list(other) == POINT[:-1]


def test_packed_points_equal_the_lists_they_hold() -> None:
    assert PackedSeries(POINT) == POINT
    assert PackedSeries(POINT) == PackedSeries(list(POINT))
    assert PackedSeries(POINT) != POINT[:-1]
