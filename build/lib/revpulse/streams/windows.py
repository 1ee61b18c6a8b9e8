"""Event-time windows (SPEC §2): rolling windows made of hourly UTC slices, as pure functions of time.

Times are integer microseconds since the epoch; slices are integer hour numbers since the epoch.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Final

US_PER_SECOND: Final = 1_000_000
HOUR_US: Final = 3600 * US_PER_SECOND
# Window label -> its length in hourly slices.
WINDOWS: Final = {"1d": 24, "7d": 7 * 24, "30d": 30 * 24, "90d": 90 * 24}
LONGEST_WINDOW_HOURS: Final = max(WINDOWS.values())

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


def hour_of(t_us: int) -> int:
    """The hourly slice containing instant `t_us`."""
    return t_us // HOUR_US


def window_start_hour(as_of_us: int, window_hours: int) -> int:
    """t0 of a window as a slice number: floor_hour(as_of) − W + 1h."""
    return hour_of(as_of_us) - window_hours + 1


def window_start_us(as_of_us: int, window_hours: int) -> int:
    return window_start_hour(as_of_us, window_hours) * HOUR_US


def window_days(window_hours: int) -> float:
    return window_hours / 24


def from_micros(t_us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=t_us)


def isoformat(t_us: int) -> str:
    """RFC 3339 in UTC with a `Z`, fraction only when there is one: `2024-05-01T12:00:00Z`."""
    return from_micros(t_us).isoformat().replace("+00:00", "Z")
