"""HubSpot webhooks (Webhooks API v3 and generic `object.*` subscriptions) → SPEC §1 CRM events.

A body is a JSON array of up to 100 event objects: `eventId`, `subscriptionId`, `portalId`, `appId`,
`occurredAt` (epoch ms), `subscriptionType`, `objectId`, and for property changes `propertyName` /
`propertyValue` (always a string). A retried delivery repeats the same event with a higher `attemptNumber`, so
the canonical `event_id` is derived from the event's own ids and retries deduplicate. HubSpot documents that
`eventId` "is not guaranteed to be unique": two portals (or two subscriptions) may send the same one. The
`event_id` is therefore `hubspot:<portalId>:<subscriptionId>:<eventId>`, so that one portal's event never passes
for a duplicate of another's. Should that be longer than the SPEC's 256 characters, or an id contain a `:` (which
would make it ambiguous; HubSpot's ids are integers), it is `hubspot:sha256:<hex digest of the three ids>`
instead: deterministic, so retries still deduplicate.

Mapping:

- `deal.creation` → `opportunity.created` with the deal's last known amount (0 when none is known yet).
- `deal.propertyChange` of `amount` / `deal_currency_code` → no event; remembered for the win.
- `deal.propertyChange` of `dealstage` → `opportunity.won` (with the last known amount) or `opportunity.lost`
  when the stage maps to won/lost and the deal was not already so; other stages → nothing.
- `contact.creation` → `lead.created`; `contact.propertyChange` of `lifecyclestage` → `lead.stage_changed`
  when the lifecycle stage maps to a SPEC stage (`subscriber`, `evangelist`, `other` do not).
- Anything else (deletions, merges, restores, association changes, companies, tickets…) → nothing.

Account ids. A HubSpot webhook names the changed object only, never its company, and looking the association up
would make the mapping depend on an API call instead of on the elements seen. So each deal and each contact is
its own account: `hubspot:<portalId>:deal:<objectId>` / `hubspot:<portalId>:contact:<objectId>`, which is also
its `opportunity_id` / `lead_id`. Every event of one deal (or contact) thus carries the same account id, records
spread over partitions instead of one key per portal, and lateness is judged per record. The portal id is part
of the id because object ids are unique only within a portal. The cost: CRM events carry no company segment
(they count as `unknown` unless an `account.updated` names these account ids).

Known limit: HubSpot sends a deal's creation and the property values set at creation as separate events, in
delivery order. `elements` orders each batch by `occurredAt` (stable), with amount and currency changes just
before a creation at the same instant, so a deal created with an amount carries it; an amount arriving in a
later batch reaches only the win.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, Final

from revpulse.connectors.base import CanonicalEvent, Unmappable, preview
from revpulse.connectors.common import (
    LOST,
    MAX_ID_LENGTH,
    WON,
    Deal,
    amount,
    as_elements,
    currency,
    epoch_ms,
    event,
    opportunity_closed,
    opportunity_created,
    text_id,
)
from revpulse.schemas.models import LEAD_STAGES

DEFAULT_DEAL_STAGES: Final[Mapping[str, str]] = {"closedwon": WON, "closedlost": LOST}
DEFAULT_LIFECYCLE_STAGES: Final[Mapping[str, str]] = {
    "lead": "lead",
    "marketingqualifiedlead": "mql",
    "salesqualifiedlead": "sql",
    "opportunity": "opportunity",
    "customer": "customer",
}
# Generic `object.*` subscriptions name the object type by id instead of in the subscription type.
_OBJECT_TYPE_IDS: Final = {"0-1": "contact", "0-3": "deal"}
_HANDLED: Final = {
    ("deal", "creation"),
    ("deal", "propertyChange"),
    ("contact", "creation"),
    ("contact", "propertyChange"),
}
# Deal properties that must be known before the deal's creation is mapped, when they happened at the same instant.
_CREATION_VALUES: Final = {"amount", "deal_currency_code"}


@dataclass(frozen=True, slots=True)
class _Change:
    """One handled HubSpot event, validated."""

    event_id: str
    occurred_at: int
    kind: str  # "deal" | "contact"
    action: str  # "creation" | "propertyChange"
    ref: str  # hubspot:<portal>:<kind>:<objectId>: the account id, and the opportunity or lead id
    property: str | None
    value: Any


class HubSpotMapper:
    """Maps HubSpot webhook events; remembers each deal's amount, currency and outcome."""

    source = "hubspot"

    def __init__(
        self, deal_stages: Mapping[str, str] | None = None, lifecycle_stages: Mapping[str, str] | None = None
    ) -> None:
        """`deal_stages` / `lifecycle_stages` extend (and override) the defaults: custom pipelines name stages by id."""
        self._deal_stages = _stage_map(DEFAULT_DEAL_STAGES, deal_stages, (WON, LOST), "deal stage")
        self._lifecycle_stages = _stage_map(DEFAULT_LIFECYCLE_STAGES, lifecycle_stages, LEAD_STAGES, "lifecycle stage")
        self._deals: dict[str, Deal] = {}

    def elements(self, body: Any) -> list[Any]:
        """The batch's events, stably ordered by occurrence (HubSpot batches in delivery order, not in time order)."""
        return sorted(as_elements(body), key=_occurrence)

    def map(self, element: Any) -> list[CanonicalEvent]:
        change = _parse(element)
        if change is None:
            return []
        if change.kind == "deal":
            return self._deal(change)
        return self._contact(change)

    def _deal(self, change: _Change) -> list[CanonicalEvent]:
        # Changed on a copy, kept only once the change mapped: a bad value leaves the deal as it was.
        known = self._deals.get(change.ref)
        deal = Deal(account_id=change.ref) if known is None else replace(known)
        events: list[CanonicalEvent] = []
        if change.action == "creation":
            events.append(opportunity_created(change.event_id, change.occurred_at, change.ref, deal))
        elif change.property == "amount":
            deal.amount = amount(change.value, "amount")
        elif change.property == "deal_currency_code":
            deal.currency = currency(change.value, "deal_currency_code")
        elif change.property == "dealstage" and deal.settle(self._deal_stages.get(_stage(change.value))):
            events.append(opportunity_closed(change.event_id, change.occurred_at, change.ref, deal))
        self._deals[change.ref] = deal
        return events

    def _contact(self, change: _Change) -> list[CanonicalEvent]:
        if change.action == "creation":
            return [event("lead.created", change.event_id, change.occurred_at, change.ref, lead_id=change.ref)]
        stage = self._lifecycle_stages.get(_stage(change.value)) if change.property == "lifecyclestage" else None
        if stage is None:
            return []
        return [
            event(
                "lead.stage_changed", change.event_id, change.occurred_at, change.ref, lead_id=change.ref, stage=stage
            )
        ]


def _stage_map(
    defaults: Mapping[str, str], overrides: Mapping[str, str] | None, allowed: tuple[str, ...], what: str
) -> dict[str, str]:
    merged = {**defaults, **(overrides or {})}
    for name, stage in merged.items():
        if stage not in allowed:
            raise ValueError(f"HubSpot {what} {name!r} maps to {stage!r}; expected one of {', '.join(allowed)}")
    return merged


def _stage(value: Any) -> str:
    """A stage property's value; HubSpot sends property values as strings, and "" when a stage is cleared."""
    if value is None:
        return ""
    if not isinstance(value, str):
        raise Unmappable(f"HubSpot stage value must be a string, got {preview(value)}")
    return value


def _kind(element: dict[str, Any]) -> tuple[str, str] | None:
    """(object, action) of an event, e.g. ("deal", "creation"); None when it is not one RevPulse uses."""
    subscription = element.get("subscriptionType")
    if not isinstance(subscription, str) or "." not in subscription:
        raise Unmappable(f"HubSpot event has no subscriptionType of the form object.action: {preview(subscription)}")
    kind, _, action = subscription.partition(".")
    if kind == "object":
        type_id = element.get("objectTypeId")
        kind = _OBJECT_TYPE_IDS.get(type_id, "") if isinstance(type_id, str) else ""
    return (kind, action) if (kind, action) in _HANDLED else None


def _parse(element: Any) -> _Change | None:
    if not isinstance(element, dict):
        raise Unmappable(f"HubSpot event must be a JSON object, got {type(element).__name__}")
    kind = _kind(element)
    if kind is None:
        return None
    portal = text_id(element.get("portalId"), "portalId")
    object_id = text_id(element.get("objectId"), "objectId")
    changed = kind[1] == "propertyChange"
    name = element.get("propertyName")
    if changed and not isinstance(name, str):
        raise Unmappable(f"HubSpot property change has no string propertyName: {preview(name)}")
    subscription_id = text_id(element.get("subscriptionId"), "subscriptionId")
    return _Change(
        event_id=_event_id(portal, subscription_id, text_id(element.get("eventId"), "eventId")),
        occurred_at=epoch_ms(element.get("occurredAt"), "occurredAt"),
        kind=kind[0],
        action=kind[1],
        ref=f"hubspot:{portal}:{kind[0]}:{object_id}",
        property=name if changed else None,
        value=element.get("propertyValue"),
    )


def _event_id(portal: str, subscription: str, event: str) -> str:
    """`hubspot:<portalId>:<subscriptionId>:<eventId>`, or its SHA-256 when that would be too long or ambiguous."""
    parts = (portal, subscription, event)
    readable = "hubspot:" + ":".join(parts)
    if len(readable) <= MAX_ID_LENGTH and not any(":" in part for part in parts):
        return readable
    # Length-prefixed, so that no two id triples hash the same text; surrogatepass: a JSON string may hold any.
    text = "".join(f"{len(part)}:{part}" for part in parts)
    return f"hubspot:sha256:{hashlib.sha256(text.encode('utf-8', 'surrogatepass')).hexdigest()}"


def _occurrence(element: Any) -> tuple[int, int]:
    """Sort key: occurredAt, then amount/currency changes before creations before other changes at one instant."""
    if not isinstance(element, dict):
        return (0, 0)
    at = element.get("occurredAt")
    at = at if isinstance(at, int) and not isinstance(at, bool) else 0
    name = element.get("propertyName")
    if isinstance(name, str) and name in _CREATION_VALUES:
        return (at, 0)
    subscription = element.get("subscriptionType")
    return (at, 1 if isinstance(subscription, str) and subscription.endswith(".creation") else 2)
