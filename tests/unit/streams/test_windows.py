"""Window arithmetic (SPEC §2) on literal datetimes."""

from __future__ import annotations

from datetime import UTC, datetime

from revpulse.schemas.models import to_micros
from revpulse.streams.windows import WINDOWS, isoformat, window_start_us


def us(text: str) -> int:
    return to_micros(datetime.fromisoformat(text))


def test_window_start_is_floor_hour_minus_w_plus_one_hour() -> None:
    as_of = us("2024-05-01T12:34:56+00:00")
    assert window_start_us(as_of, WINDOWS["1d"]) == us("2024-04-30T13:00:00+00:00")
    assert window_start_us(as_of, WINDOWS["7d"]) == us("2024-04-24T13:00:00+00:00")
    assert window_start_us(as_of, WINDOWS["90d"]) == us("2024-02-01T13:00:00+00:00")


def test_isoformat() -> None:
    assert isoformat(us("2024-05-01T12:00:00+00:00")) == "2024-05-01T12:00:00Z"
    assert isoformat(to_micros(datetime(2024, 5, 1, 12, 0, 0, 250000, tzinfo=UTC))) == "2024-05-01T12:00:00.250000Z"
