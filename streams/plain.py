"""Plain data for JSON: orjson's integers are 64 bits, RevPulse's are not.

Money is in nanos and cells sum it, so an integer of the state can exceed what orjson writes (it raises
`TypeError`). Such an integer is written as its decimal string instead, and read back where an integer is
expected (`wide_int`): the reader knows from the position which values are integers, so a string there is never
ambiguous.
"""

from __future__ import annotations

import re
from typing import Any, Final

INT64_MIN: Final = -(2**63)
INT64_MAX: Final = 2**63 - 1
# Digits of a wide integer read back: far beyond any sum of money (10³⁰ nanos an event), and a bound on the
# work `int()` does on hostile input.
WIDE_DIGITS: Final = 200
_WIDE: Final = re.compile(rf"-?[0-9]{{1,{WIDE_DIGITS}}}")


def widen(value: Any) -> Any:
    """`value` with every integer beyond 64 bits replaced by its decimal string, through lists, tuples (as
    lists) and dicts; other values as they are."""
    kind = type(value)
    if kind is int:
        return value if INT64_MIN <= value <= INT64_MAX else str(value)
    if kind is list or kind is tuple:
        return [widen(item) for item in value]
    if kind is dict:
        return {key: widen(item) for key, item in value.items()}
    return value


def wide_int(value: object) -> int | None:
    """The integer `value` holds (an int, or what `widen` made of one); None if it holds none."""
    if type(value) is int:
        return value
    if type(value) is str and _WIDE.fullmatch(value):
        return int(value)
    return None
