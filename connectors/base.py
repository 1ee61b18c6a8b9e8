"""What every provider mapper is: a deterministic function of the raw payloads it has seen, in order.

A raw record (an HTTP body, or a CDC record) holds one or more provider *elements* (a HubSpot body is an array
of events; a Stripe, Pipedrive or Salesforce record is one). Each element maps to zero or more canonical SPEC §1
events, given as plain dicts ready to be serialised with orjson and routed by `type`. A mapper may keep state
(last known values of a record whose updates carry only changed fields); that state is rebuilt by mapping the
raw topic again from its start, so `map` must depend only on the elements seen before, in order.
"""

from __future__ import annotations

import reprlib
from typing import Any, Protocol

CanonicalEvent = dict[str, Any]

_PREVIEW = reprlib.Repr()
_PREVIEW.maxlevel = 3
_PREVIEW.maxstring = _PREVIEW.maxother = 80
_PREVIEW.maxlist = _PREVIEW.maxtuple = _PREVIEW.maxdict = _PREVIEW.maxset = 6
PREVIEW_LIMIT = 200


def preview(value: Any) -> str:
    """`repr(value)` for a human-readable detail, short and safe whatever the payload held.

    Payload values are hostile: a plain repr of a 1 MB string would be a 1 MB dead-letter header, and one of a
    list nested 1,000 deep raises RecursionError. Short values read exactly as `repr` writes them.
    """
    try:
        text = _PREVIEW.repr(value)
    except Exception:  # e.g. an int too long for str(); a detail must never be what fails
        return f"<{type(value).__name__}>"
    return text if len(text) <= PREVIEW_LIMIT else f"{text[: PREVIEW_LIMIT - 3]}..."


class Unmappable(ValueError):
    """An element of a handled kind that cannot become canonical events; it is dead-lettered untouched."""

    reason = "unmappable"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class PartlyUnmappable(Unmappable):
    """An element of several independent parts (a Salesforce change event merged over several records) of which some
    mapped and some did not: `events` are the parts that did map, and `rest` (the element narrowed to the parts that
    did not) is dead-lettered instead of the whole element, so that a bad part costs only itself."""

    def __init__(self, detail: str, events: list[CanonicalEvent], rest: Any) -> None:
        super().__init__(detail)
        self.events = events
        self.rest = rest


class Mapper(Protocol):
    source: str

    def elements(self, body: Any) -> list[Any]:
        """The provider elements in one decoded raw record."""
        ...

    def map(self, element: Any) -> list[CanonicalEvent]:
        """Canonical events for one element; [] for a kind RevPulse does not use; `Unmappable` for a bad one
        (`PartlyUnmappable` when only some of its parts are bad)."""
        ...
