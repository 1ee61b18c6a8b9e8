"""Salesforce Change Data Capture `OpportunityChangeEvent`s (as a Kafka connector writes them) → SPEC §1 events.

A record is one change event, either the bare payload (`{"ChangeEventHeader": {...}, "Amount": …, …}`), the
Streaming API envelope (`{"data": {"schema", "payload", "event": {"replayId"}}, "channel"}`), or a Kafka Connect
`{"schema", "payload"}` pair. The header names the object (`entityName`), the records (`recordIds`: one change
applied identically to several records is one event), `changeType`, `transactionKey`, `sequenceNumber`,
`commitTimestamp` (epoch ms: the canonical `occurred_at`) and, for updates, `changedFields` / `nulledFields` /
`diffFields`.

Merged change events (one change applied identically to several records in one transaction, one `recordIds` list)
are mapped record by record: each record's events stand on their own, and a record that cannot be mapped (its
account unknown) does not cost the others. Their events go on; the event narrowed to the records that failed
(`recordIds` = those only) is dead-lettered once, its detail naming them (`PartlyUnmappable`).

Changed-field lists come in two encodings. The Streaming API (CometD) and connectors built on it give field names.
The Pub/Sub API gives bitmaps (`["0x400000", "4-0x01"]`): bit i of the first, hexadecimal, element marks the field
at position i of the event's Avro schema, and `<pos>-0x…` elements mark the sub-fields of the compound field at
position pos. A Pub/Sub payload carries every field, the unchanged ones null. So:

- with the field order at hand (a Kafka Connect `{"schema", "payload"}` record whose schema lists the fields, or an
  Avro record schema, as an object or its JSON text, under `schema` / `data.schema`), the bitmaps are decoded.
  A bit beyond the schema's fields, or a mapped field with a value whose bit is not set, means the schema is not
  the event's: `Unmappable`, never a guess;
- without it, every non-null field is a changed one (what the Pub/Sub API documents). A cleared field cannot be
  told from an unchanged one then, so an UPDATE whose `nulledFields` bitmap is not empty while a mapped field is
  null is `Unmappable`, naming the fields it could have cleared, rather than an update silently applied in part.

Only scalar fields are mapped, so the compound-field entries never name one; a mapped field sent as a data diff
(`diffFields`, long text only) would be `Unmappable`.

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
of the change, distinct per change and per record (a merged event's records each have their own). A CREATE that
also closes the deal suffixes the second event (`…:won` / `…:lost`). Account and opportunity ids are Salesforce's
own ids, unprefixed: they are unique and typed (`001…`, `006…`), and they are what billing systems store to link a
customer to its CRM account.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import orjson

from revpulse.connectors.base import CanonicalEvent, PartlyUnmappable, Unmappable, preview
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
HEADER: Final = "ChangeEventHeader"
# Pub/Sub API bitmaps: "0x…" for the top-level fields, "<position>-0x…" for the sub-fields of a compound field.
_BITMAP: Final = re.compile(r"0x[0-9A-Fa-f]+")
_NESTED_BITMAP: Final = re.compile(r"([0-9]{1,9})-0x[0-9A-Fa-f]+")
_SHOWN_REFUSALS: Final = 3  # distinct details quoted in the detail of a merged event's dead letter


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
        refused: list[tuple[str, Unmappable]] = []
        for record_id in change.record_ids:  # each record on its own: one that fails costs only itself
            try:
                events.extend(self._record(change, record_id))
            except Unmappable as exc:
                refused.append((record_id, exc))
        if not refused:
            return events
        detail = _refusal(refused, len(change.record_ids))
        if len(refused) == len(change.record_ids):
            raise Unmappable(detail)  # the element as it came is the dead letter
        raise PartlyUnmappable(detail, events, _narrowed(element, [record_id for record_id, _ in refused]))

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
            if isinstance(candidate, dict) and isinstance(candidate.get(HEADER), dict):
                return candidate
    raise Unmappable("not a Salesforce change event: no ChangeEventHeader in the record, data.payload or payload")


def _parse(element: Any) -> _Change | None:
    payload = _payload(element)
    header = payload[HEADER]
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
        values=_checked(_changed_values(element, payload, header, change_type)),
    )


def _record_ids(value: Any) -> list[str]:
    if not isinstance(value, list) or not value:
        raise Unmappable(f"recordIds must be a non-empty list, got {preview(value)}")
    # A record listed twice is one change to it, not two.
    ids = list(dict.fromkeys(text_id(record_id, "recordIds item") for record_id in value))
    wildcards = [record_id for record_id in ids if record_id.endswith("*")]
    if wildcards:
        raise Unmappable(
            f"wildcard recordIds {preview(wildcards)}: a field type conversion changed every record; re-read them"
        )
    return ids


def _changed_values(
    element: Any, payload: Mapping[str, Any], header: Mapping[str, Any], change_type: str
) -> dict[str, Any]:
    """The fields this change set. A null in the payload means "unchanged" unless the header lists the field.

    CREATE/UNDELETE payloads hold every non-null field. An UPDATE lists its fields in `changedFields` (and
    cleared ones also in `nulledFields`), as names or as Pub/Sub bitmaps (module docstring); without that list
    (API < 47.0) only non-null values count as changes, since a connector may fill every unchanged field with null.
    """
    carried = {name for name in _FIELDS if payload.get(name) is not None}
    if change_type in _FULL_STATE:  # the lists are empty there; names in nulledFields are still honoured
        nulled_names = header.get("nulledFields")
        nulled = {n for n in nulled_names if isinstance(n, str)} if isinstance(nulled_names, list) else set()
        return {name: payload.get(name) for name in _FIELDS if name in carried or name in nulled}
    changed_list = _listed(header, "changedFields")
    nulled_list = _listed(header, "nulledFields")
    diff_list = _listed(header, "diffFields")
    nulled = set() if nulled_list is None else nulled_list.names
    if not any(listed is not None and listed.is_bitmap for listed in (changed_list, nulled_list, diff_list)):
        changed = carried if changed_list is None else changed_list.names
        _refuse_diffs(set() if diff_list is None else diff_list.names)
    else:
        order = _field_order(element)
        if order is None:
            changed = carried | (set() if changed_list is None else changed_list.names)
            _refuse_unknown_nulls(header.get("nulledFields"), nulled_list, carried)
        else:
            changed = set() if changed_list is None else changed_list.decoded(order, "changedFields")
            nulled = set() if nulled_list is None else nulled_list.decoded(order, "nulledFields")
            _refuse_diffs(set() if diff_list is None else diff_list.decoded(order, "diffFields"))
            unmarked = [name for name in _FIELDS if name in carried and name not in changed | nulled]
            if unmarked:
                raise Unmappable(
                    f"changedFields {preview(header.get('changedFields'))} does not mark {', '.join(unmarked)}, "
                    "which the Pub/Sub payload carries values for: the schema's field order is not this event's"
                )
    return {name: payload.get(name) for name in _FIELDS if name in changed or name in nulled}


@dataclass(frozen=True, slots=True)
class _Listed:
    """A header field list (`changedFields`, `nulledFields`, `diffFields`): field names and/or Pub/Sub bitmaps."""

    names: set[str]  # plain field names
    bitmap: int  # the top-level bitmap (the OR of the "0x…" entries; 0 when there are none)
    compound: list[int]  # positions of the compound fields that "<position>-0x…" entries mark
    is_bitmap: bool

    def decoded(self, order: list[str], what: str) -> set[str]:
        """The names of the marked fields, given the event's fields in schema order."""
        if self.bitmap.bit_length() > len(order):
            raise Unmappable(
                f"{what} marks field position {self.bitmap.bit_length() - 1}, but the event's schema has "
                f"{len(order)} fields: the schema is not this event's"
            )
        beyond = [position for position in self.compound if position >= len(order)]
        if beyond:
            raise Unmappable(
                f"{what} marks compound field position {beyond[0]}, but the event's schema has {len(order)} fields: "
                "the schema is not this event's"
            )
        marked = {order[i] for i in range(self.bitmap.bit_length()) if self.bitmap >> i & 1}
        return self.names | marked | {order[position] for position in self.compound}


def _listed(header: Mapping[str, Any], what: str) -> _Listed | None:
    value = header.get(what)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise Unmappable(f"{what} must be a list of field names or Pub/Sub bitmaps, got {preview(value)}")
    names: set[str] = set()
    bitmap = 0
    compound: list[int] = []
    for item in value:
        nested = _NESTED_BITMAP.fullmatch(item)
        if _BITMAP.fullmatch(item):
            bitmap |= int(item[2:], 16)  # base 16: linear in the length, whatever the length
        elif nested:
            compound.append(int(nested.group(1)))
        else:
            names.add(item)
    return _Listed(names, bitmap, compound, is_bitmap=len(names) < len(value))


def _refuse_diffs(diffs: set[str]) -> None:
    sent_as_diff = [name for name in _FIELDS if name in diffs]
    if sent_as_diff:
        raise Unmappable(f"{', '.join(sent_as_diff)} sent as a data diff (diffFields): the value is not in the event")


def _refuse_unknown_nulls(value: Any, nulled: _Listed | None, carried: set[str]) -> None:
    """Without the schema a Pub/Sub `nulledFields` bitmap cannot be read: refuse the change if it may clear a field
    the mapping keeps (one that is null in the payload), rather than apply it without the clearing."""
    if nulled is None or not nulled.bitmap:
        return  # nothing cleared, or only sub-fields of compound fields, which are never mapped ones
    maybe = [name for name in _FIELDS if name not in carried]
    if maybe:
        raise Unmappable(
            f"nulledFields {preview(value)} is a Pub/Sub bitmap and the record "
            f"carries no schema to decode it: cannot tell whether {', '.join(maybe)} were cleared (deliver the "
            "events with their schema, e.g. Kafka Connect JSON with schemas.enable=true, or with field names)"
        )


def _field_order(element: Any) -> list[str] | None:
    """The event's fields in schema order, when the record carries its schema: Kafka Connect's (`fields[].field`)
    or an Avro record schema (`fields[].name`), as an object or JSON text, under `schema` or `data.schema`.

    Kafka Connect's schema of a Pub/Sub event is converted from its Avro schema, field for field, in order.
    """
    if not isinstance(element, dict):
        return None
    data = element.get("data")
    for schema in (element.get("schema"), data.get("schema") if isinstance(data, dict) else None):
        if isinstance(schema, str) and schema.startswith("{"):
            try:
                schema = orjson.loads(schema)
            except orjson.JSONDecodeError:
                continue
        fields = schema.get("fields") if isinstance(schema, dict) else None
        if not isinstance(fields, list):
            continue
        names = [_field_name(item) for item in fields]
        if HEADER in names and all(names):
            return [name for name in names if name]
    return None


def _field_name(item: Any) -> str | None:
    if not isinstance(item, dict):
        return None
    for key in ("field", "name"):  # Kafka Connect names the field `field` (its `name` is the type's name)
        if isinstance(item.get(key), str) and item[key]:
            return item[key]
    return None


def _narrowed(element: dict[str, Any], record_ids: list[str]) -> dict[str, Any]:
    """The element as it was delivered, its change event naming only `record_ids`."""
    payload = _payload(element)
    narrowed = {**payload, HEADER: {**payload[HEADER], "recordIds": record_ids}}
    if payload is element:
        return narrowed
    data = element.get("data")
    if isinstance(data, dict) and data.get("payload") is payload:
        return {**element, "data": {**data, "payload": narrowed}}
    return {**element, "payload": narrowed}


def _refusal(refused: list[tuple[str, Unmappable]], total: int) -> str:
    """The detail of a merged event's dead letter: which of its records failed, and why."""
    details = list(dict.fromkeys(exc.detail for _, exc in refused))
    shown = "; ".join(details[:_SHOWN_REFUSALS])
    if len(details) > _SHOWN_REFUSALS:
        shown += f"; and {len(details) - _SHOWN_REFUSALS} more"
    if total == 1:
        return shown
    mapped = total - len(refused)
    others = f" (the other {mapped} mapped)" if mapped else ""
    return f"{len(refused)} of the {total} records of a merged change event{others}: {shown}"
