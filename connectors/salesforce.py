"""Salesforce Change Data Capture `OpportunityChangeEvent`s (as a Kafka connector writes them) → SPEC §1 events.

A record is one change event, either the bare payload (`{"ChangeEventHeader": {...}, "Amount": …, …}`), the
Streaming API envelope (`{"data": {"schema", "payload", "event": {"replayId"}}, "channel"}`), or a Kafka Connect
`{"schema", "payload"}` pair. The header names the object (`entityName`), the records (`recordIds`: one change
applied identically to several records is one event), `changeType`, `transactionKey`, `sequenceNumber`,
`commitTimestamp` (epoch ms: the canonical `occurred_at`) and, for updates, `changedFields` / `nulledFields`.

Mapping, per record id:

- CREATE → `opportunity.created` (Amount, AccountId, CurrencyIsoCode; a null Amount is 0); created already
  closed, also `opportunity.won` / `opportunity.lost`.
- UPDATE → carries only the changed fields, so the last known AccountId, Amount, CurrencyIsoCode, StageName,
  IsClosed and IsWon of each record are kept; when the close changes (IsClosed becomes true, or IsWon flips on a
  closed record) → `opportunity.won` with the last known amount, or `opportunity.lost` with the StageName as its
  reason (orgs name their lost stages after the loss reason; Opportunity has no standard reason field).
  A re-open emits nothing: SPEC §1 has no event for it.
- DELETE → nothing: SPEC §1 has no retraction, and calling it lost would move win rates. UNDELETE → nothing
  either (nothing was retracted); its field values refresh the kept state.
- GAP_* → `Unmappable`: Salesforce could not produce the change (the data is lost), and the records must be
  re-read from the org; guessing would be wrong. Unknown change types, wildcard record ids (`006*`, sent for
  field type conversions) and malformed headers → `Unmappable`.
- Other entities (AccountChangeEvent, …) → nothing.

Account unknown: an opportunity whose changes so far named no AccountId (created without an account, or first
seen through an update that did not touch AccountId) cannot give the SPEC's required `account_id`; an element
that would emit one of its events is `Unmappable` ("account unknown") rather than inventing an account that would
split the customer. Its values are still remembered, so once an update links an account, later closes map.

Event ids are `salesforce:<transactionKey>:<sequenceNumber>:<recordId>`: the same on every redelivery or replay
of the change, distinct per change and per record. A CREATE that also closes the deal suffixes the second event
(`…:won` / `…:lost`). Account and opportunity ids are Salesforce's own ids, unprefixed: they are unique and
typed (`001…`, `006…`), and they are what billing systems store to link a customer to its CRM account.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from revpulse.connectors.base import CanonicalEvent, Unmappable, preview
from revpulse.connectors.common import (
    LOST,
    WON,
    Deal,
    amount,
    as_elements,
    currency,
    epoch_ms,
    next_event_id,
    opportunity_closed,
    opportunity_created,
    text_id,
)

ENTITY: Final = "Opportunity"
# The fields the mapping needs; everything else in a change event is ignored.
_FIELDS: Final = ("AccountId", "Amount", "CurrencyIsoCode", "StageName", "IsClosed", "IsWon")
_FULL_STATE: Final = {"CREATE", "UNDELETE"}  # change types whose payload holds every non-null field


@dataclass(slots=True)
class _Opportunity:
    deal: Deal = field(default_factory=Deal)
    stage: str | None = None
    closed: bool | None = None
    won: bool | None = None

    def apply(self, changes: Mapping[str, Any]) -> None:
        """Set the changed fields, already checked by `_checked` (so this cannot fail half-way)."""
        for name, value in changes.items():
            if name == "AccountId":
                self.deal.account_id = value
            elif name == "Amount":
                self.deal.amount = value
            elif name == "CurrencyIsoCode":
                self.deal.currency = value
            elif name == "StageName":
                self.stage = value
            elif name == "IsClosed":
                self.closed = value
            else:
                self.won = value

    @property
    def outcome(self) -> str | None:
        if not self.closed:
            return None
        return WON if self.won else LOST


@dataclass(frozen=True, slots=True)
class _Change:
    change_type: str
    record_ids: list[str]
    event_id: str  # without the record id
    occurred_at: int
    values: dict[str, Any]  # the changed fields among _FIELDS, checked and converted; None meaning cleared


class SalesforceMapper:
    """Maps OpportunityChangeEvents; remembers each opportunity's account, amount, currency, stage and close."""

    source = "salesforce"

    def __init__(self) -> None:
        self._opportunities: dict[str, _Opportunity] = {}

    def elements(self, body: Any) -> list[Any]:
        return as_elements(body)

    def map(self, element: Any) -> list[CanonicalEvent]:
        change = _parse(element)
        if change is None:
            return []
        events: list[CanonicalEvent] = []
        for record_id in change.record_ids:
            events.extend(self._record(change, record_id))
        return events

    def _record(self, change: _Change, record_id: str) -> list[CanonicalEvent]:
        # The values were checked when the change was parsed, so the kept state is never half-updated; it is kept
        # even when no event can be built yet (account unknown), as the module docstring says.
        opportunity = self._opportunities.setdefault(record_id, _Opportunity())
        opportunity.apply(change.values)
        closed = opportunity.deal.settle(opportunity.outcome)
        if change.change_type == "UNDELETE":
            return []
        event_id = f"{change.event_id}:{record_id}"
        events: list[CanonicalEvent] = []
        if change.change_type == "CREATE":
            events.append(opportunity_created(event_id, change.occurred_at, record_id, opportunity.deal))
        if closed:
            close_id = next_event_id(event_id, events, str(opportunity.outcome))
            reason = opportunity.stage if opportunity.outcome == LOST else None
            events.append(opportunity_closed(close_id, change.occurred_at, record_id, opportunity.deal, reason))
        return events


def _flag(value: Any, name: str) -> bool:
    if value is None or isinstance(value, bool):
        return bool(value)
    raise Unmappable(f"{name} must be a boolean, got {preview(value)}")


def _stage_name(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise Unmappable(f"StageName must be a string, got {preview(value)}")


def _checked(values: Mapping[str, Any]) -> dict[str, Any]:
    """The changed fields as the kept state holds them; `Unmappable` for a value of the wrong type."""
    checks = {
        "AccountId": lambda value: None if value is None else text_id(value, "AccountId"),
        "Amount": lambda value: amount(value, "Amount"),
        "CurrencyIsoCode": lambda value: currency(value, "CurrencyIsoCode"),
        "StageName": _stage_name,
        "IsClosed": lambda value: _flag(value, "IsClosed"),
        "IsWon": lambda value: _flag(value, "IsWon"),
    }
    return {name: checks[name](value) for name, value in values.items()}


def _payload(element: Any) -> dict[str, Any]:
    """The change event payload in whichever of the three forms a connector delivered."""
    if isinstance(element, dict):
        data = element.get("data")
        for candidate in (element, data.get("payload") if isinstance(data, dict) else None, element.get("payload")):
            if isinstance(candidate, dict) and isinstance(candidate.get("ChangeEventHeader"), dict):
                return candidate
    raise Unmappable("not a Salesforce change event: no ChangeEventHeader in the record, data.payload or payload")


def _parse(element: Any) -> _Change | None:
    payload = _payload(element)
    header = payload["ChangeEventHeader"]
    if header.get("entityName") != ENTITY:
        return None
    change_type = header.get("changeType")
    if isinstance(change_type, str) and change_type.startswith("GAP_"):
        raise Unmappable(
            f"{change_type[:40]} gap event: Salesforce lost these changes; re-read records "
            f"{preview(header.get('recordIds'))} from the org"
        )
    if change_type == "DELETE":
        return None
    if change_type not in ("CREATE", "UPDATE", "UNDELETE"):
        raise Unmappable(f"unknown changeType {preview(change_type)}")
    sequence = header.get("sequenceNumber")
    if isinstance(sequence, bool) or not isinstance(sequence, int):
        raise Unmappable(f"sequenceNumber must be an integer, got {preview(sequence)}")
    return _Change(
        change_type=change_type,
        record_ids=_record_ids(header.get("recordIds")),
        event_id=f"salesforce:{text_id(header.get('transactionKey'), 'transactionKey')}:{sequence}",
        occurred_at=epoch_ms(header.get("commitTimestamp"), "commitTimestamp"),
        values=_checked(_changed_values(payload, header, change_type)),
    )


def _record_ids(value: Any) -> list[str]:
    if not isinstance(value, list) or not value:
        raise Unmappable(f"recordIds must be a non-empty list, got {preview(value)}")
    ids = [text_id(record_id, "recordIds item") for record_id in value]
    wildcards = [record_id for record_id in ids if record_id.endswith("*")]
    if wildcards:
        raise Unmappable(
            f"wildcard recordIds {preview(wildcards)}: a field type conversion changed every record; re-read them"
        )
    return ids


def _changed_values(payload: Mapping[str, Any], header: Mapping[str, Any], change_type: str) -> dict[str, Any]:
    """The fields this change set. A null in the payload means "unchanged" unless the header lists the field.

    CREATE/UNDELETE payloads hold every non-null field. An UPDATE lists its fields in `changedFields` (and
    cleared ones also in `nulledFields`); without that list (API < 47.0) only non-null values count as changes,
    since a connector may fill every unchanged field with null.
    """
    listed = header.get("changedFields")
    nulled = _names(header.get("nulledFields"))
    if change_type in _FULL_STATE or not isinstance(listed, list):
        changed = {name for name in _FIELDS if payload.get(name) is not None}
    else:
        changed = _names(listed)
    return {name: payload.get(name) for name in _FIELDS if name in changed or name in nulled}


def _names(value: Any) -> set[str]:
    return {name for name in value if isinstance(name, str)} if isinstance(value, list) else set()
