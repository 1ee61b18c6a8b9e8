"""Pipedrive webhooks v2 → SPEC §1 CRM events.

A body is one `{"meta": {...}, "data": {...} | null, "previous": {...} | null}` object. `meta` holds `action`
(`create`, `change`, `delete`), `entity`, `entity_id`, `company_id`, `id` (the UUID of the event that triggered
the webhook, repeated on every retry, whose `attempt` counts up), `timestamp` and `version` ("2.0"). `data` is
the object's current state (null on delete); `previous` holds the prior values of the changed fields only (null
on create, the last state on delete).

Mapping:

- deal create → `opportunity.created` (`value` → amount, null → 0; `currency`); created already won or lost,
  also `opportunity.won` / `opportunity.lost`.
- deal change whose `previous` holds `status` → `opportunity.won` (with the deal's current value) or
  `opportunity.lost` (`lost_reason` as reason) when the status became won/lost; a re-open → nothing.
- lead create → `lead.created` (`source_name`, e.g. "Web forms", as source).
- lead change of `is_archived`: archiving → `lead.stage_changed` to `disqualified` (archiving is how Pipedrive
  drops a lead that will not convert); un-archiving → back to `lead` (it is in the Leads Inbox again).
- deletes of deals and leads → nothing: SPEC §1 has no retraction, and a lead delete cannot be told apart from
  the delete that a lead's conversion to a deal may cause (the payload has no link to the deal).
- other entities (person, organization, activity, note, …) → nothing. A v1 body (no `version` "2.0") → `Unmappable`.

Times: `add_time` for creations, `won_time` / `lost_time` for closes, when present (they are the CRM's own
record of when it happened); else `meta.timestamp` (an ISO 8601 string; a 10-digit integer is read as seconds).

Ids. Pipedrive ids are per company, so they are namespaced with `meta.company_id`: opportunity
`pipedrive:<company>:deal:<id>`, lead `pipedrive:<company>:lead:<uuid>`. The account is the organization the
deal or lead belongs to (`pipedrive:<company>:org:<id>`: a company is what RevPulse calls an account), else its
person (`…:person:<id>`) for deals sold to an individual; Pipedrive requires one of the two. An element that would
emit an event but names neither (and no earlier one did, for a deal) is `Unmappable`.
Event ids are `pipedrive:<meta.id>`; the second event of one webhook (created already won) is suffixed
(`…:won`). Without `meta.id`, `pipedrive:<company>:<entity>:<entity_id>:<action>:<timestamp>` is equally stable
across retries.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
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
    event,
    next_event_id,
    opportunity_closed,
    opportunity_created,
    text_id,
)

VERSION: Final = "2.0"
_ACTIONS: Final = ("create", "change", "delete")
_OUTCOMES: Final = {"won": WON, "lost": LOST}
_SECONDS_BELOW: Final = 10**11  # an integer timestamp under this is seconds (10 digits), not milliseconds


@dataclass(frozen=True, slots=True)
class _Webhook:
    """One validated webhook of a handled entity."""

    entity: str  # "deal" | "lead"
    action: str  # "create" | "change"
    company: str
    event_id: str
    occurred_at: int  # meta.timestamp
    data: Mapping[str, Any]
    previous: Mapping[str, Any]  # {} when null

    def changed(self, name: str) -> bool:
        """Whether this webhook changed `name` (a create changes nothing: there was no value before)."""
        return self.action == "change" and name in self.previous

    def time(self, name: str) -> int:
        """A time field of `data`, or the webhook's own time when the field is empty."""
        value = self.data.get(name)
        return self.occurred_at if value in (None, "") else epoch_ms(value, name)

    def ref(self, kind: str) -> str:
        return f"pipedrive:{self.company}:{kind}:{text_id(self.data.get('id'), 'data.id')}"

    def account(self, organization_field: str) -> str | None:
        """The organization, else the person the object belongs to; None when it names neither."""
        for name, kind in ((organization_field, "org"), ("person_id", "person")):
            value = self.data.get(name)
            if value is not None:
                return f"pipedrive:{self.company}:{kind}:{text_id(value, name)}"
        return None


class PipedriveMapper:
    """Maps Pipedrive v2 deal and lead webhooks; remembers each deal's account, value and currency."""

    source = "pipedrive"

    def __init__(self) -> None:
        self._deals: dict[str, Deal] = {}

    def elements(self, body: Any) -> list[Any]:
        return as_elements(body)

    def map(self, element: Any) -> list[CanonicalEvent]:
        hook = _parse(element)
        if hook is None:
            return []
        return self._deal(hook) if hook.entity == "deal" else self._lead(hook)

    def _deal(self, hook: _Webhook) -> list[CanonicalEvent]:
        ref = hook.ref("deal")
        # Every value is read and checked on a copy of the deal first: a bad one leaves the kept deal as it was.
        known = self._deals.get(ref)
        deal = Deal() if known is None else replace(known)
        deal.account_id = hook.account("org_id") or deal.account_id
        if "value" in hook.data:
            deal.amount = amount(hook.data["value"], "value")
        if "currency" in hook.data:
            deal.currency = currency(hook.data["currency"], "currency")
        status = _status(hook.data.get("status"), "data.status")
        # `previous` is the authority on what the status was: a change that leaves it alone closes nothing.
        if hook.action == "create":
            deal.outcome = None
        elif hook.changed("status"):
            deal.outcome = _status(hook.previous["status"], "previous.status")
        else:
            deal.outcome = status
        closed = deal.settle(status)
        created_at = hook.time("add_time") if hook.action == "create" else None
        closed_at = hook.time("won_time" if status == WON else "lost_time") if closed else None
        reason = hook.data.get("lost_reason")
        # Kept before the events are built: a deal whose account is still unknown is remembered all the same.
        self._deals[ref] = deal
        events: list[CanonicalEvent] = []
        if created_at is not None:
            events.append(opportunity_created(hook.event_id, created_at, ref, deal))
        if closed_at is not None:
            events.append(
                opportunity_closed(
                    next_event_id(hook.event_id, events, str(status)),
                    closed_at,
                    ref,
                    deal,
                    reason if isinstance(reason, str) and reason else None,
                )
            )
        return events

    def _lead(self, hook: _Webhook) -> list[CanonicalEvent]:
        lead_id = hook.ref("lead")
        account_id = hook.account("organization_id")
        archived = hook.data.get("is_archived") is True
        events: list[CanonicalEvent] = []
        if hook.action == "create":
            source = hook.data.get("source_name")
            events.append(
                event(
                    "lead.created",
                    hook.event_id,
                    hook.time("add_time"),
                    _required(account_id, lead_id),
                    lead_id=lead_id,
                    source=source if isinstance(source, str) and source else None,
                )
            )
        if hook.action == "create":
            flipped = archived  # created archived (an import): disqualified at once
        else:
            flipped = hook.changed("is_archived") and (hook.previous["is_archived"] is True) != archived
        if flipped:
            stage = "disqualified" if archived else "lead"
            events.append(
                event(
                    "lead.stage_changed",
                    next_event_id(hook.event_id, events, stage),
                    hook.occurred_at,
                    _required(account_id, lead_id),
                    lead_id=lead_id,
                    stage=stage,
                )
            )
        return events


def _status(value: Any, what: str) -> str | None:
    """WON or LOST for a closed deal's status; None for `open`, a deleted deal, or no status."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise Unmappable(f"Pipedrive deal {what} must be a string, got {preview(value)}")
    return _OUTCOMES.get(value)


def _required(account_id: str | None, lead_id: str) -> str:
    if account_id is None:
        raise Unmappable(f"account unknown: lead {lead_id} names neither an organization_id nor a person_id")
    return account_id


def _parse(element: Any) -> _Webhook | None:
    if not isinstance(element, dict) or not isinstance(element.get("meta"), dict):
        raise Unmappable("not a Pipedrive webhook: no meta object")
    meta = element["meta"]
    if meta.get("version") != VERSION:
        raise Unmappable(f"not a Pipedrive webhooks v2 body: meta.version is {preview(meta.get('version'))}")
    entity, action = meta.get("entity"), meta.get("action")
    if entity not in ("deal", "lead"):
        return None
    if action not in _ACTIONS:
        raise Unmappable(f"unknown Pipedrive action {preview(action)}")
    if action == "delete":
        return None
    data, previous = element.get("data"), element.get("previous")
    if not isinstance(data, dict) or not isinstance(previous, dict | None):
        raise Unmappable(f"Pipedrive {entity} {action}: data must be an object and previous an object or null")
    company = text_id(meta.get("company_id"), "meta.company_id")
    return _Webhook(
        entity=entity,
        action=action,
        company=company,
        event_id=_event_id(meta, company),
        occurred_at=_meta_time(meta.get("timestamp")),
        data=data,
        previous=previous or {},
    )


def _event_id(meta: Mapping[str, Any], company: str) -> str:
    """`pipedrive:<meta.id>`, or a composite of the fields a retry repeats when there is no meta.id."""
    meta_id = meta.get("id")
    if isinstance(meta_id, str) and meta_id:
        return f"pipedrive:{text_id(meta_id, 'meta.id')}"
    entity_id, timestamp = meta.get("entity_id"), meta.get("timestamp")
    if entity_id in (None, "") or timestamp in (None, ""):
        raise Unmappable("Pipedrive webhook has no meta.id and no entity_id/timestamp to build a stable event id")
    if isinstance(timestamp, bool) or not isinstance(timestamp, int | str):
        raise Unmappable(f"Pipedrive meta.timestamp must be a string or an integer, got {preview(timestamp)}")
    parts = [meta["entity"], text_id(entity_id, "meta.entity_id"), meta["action"], str(timestamp)]
    return ":".join(["pipedrive", company, *parts])


def _meta_time(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) < _SECONDS_BELOW:
        return value * 1000
    return epoch_ms(value, "meta.timestamp")
