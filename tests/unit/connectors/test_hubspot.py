"""HubSpot webhook bodies → canonical SPEC §1 events: exact outputs for a won and a lost deal, leads, retries."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest

from revpulse.connectors.base import Unmappable
from revpulse.connectors.hubspot import HubSpotMapper
from revpulse.schemas.models import Event, EventDecoder
from tests.support.paths import FIXTURES as FIXTURES_DIR

FIXTURES = FIXTURES_DIR / "hubspot"
DEAL = "hubspot:62515:deal:16583412021"
LOST_DEAL = "hubspot:62515:deal:16583412055"
CONTACT = "hubspot:62515:contact:751"
WON_LIFECYCLE = ("deal_won_1_created", "deal_won_2_amount", "deal_won_3_stages")


def load(name: str) -> Any:
    return json.loads((FIXTURES / f"{name}.json").read_text())


def map_all(*bodies: Any, mapper: HubSpotMapper | None = None) -> list[dict[str, Any]]:
    """Every canonical event of the bodies, mapped in order by one mapper."""
    mapper = mapper or HubSpotMapper()
    return [event for body in bodies for element in mapper.elements(body) for event in mapper.map(element)]


def change(event_id: int, at: int, stage: str, object_id: int = 16583412021) -> dict[str, Any]:
    return {
        "eventId": event_id,
        "subscriptionId": 2310470,
        "portalId": 62515,
        "occurredAt": at,
        "subscriptionType": "deal.propertyChange",
        "objectId": object_id,
        "propertyName": "dealstage",
        "propertyValue": stage,
    }


def test_elements_are_the_array_items_ordered_by_occurrence() -> None:
    body = load("deal_won_1_created")
    # Same instant: amount and currency first, so the creation carries them; then the creation; then the stage.
    assert [e["eventId"] for e in HubSpotMapper().elements(body)] == [1779932187, 1779932188, 1779932185, 1779932186]
    stages = load("deal_won_3_stages")
    assert [e["eventId"] for e in HubSpotMapper().elements(stages)] == [1781230117, 1781977402, 1781977455]
    assert HubSpotMapper().elements({"eventId": 1}) == [{"eventId": 1}]


def test_won_deal_lifecycle() -> None:
    mapper = HubSpotMapper()
    created, amount_changed, stages = (map_all(load(name), mapper=mapper) for name in WON_LIFECYCLE)
    assert created == [
        {
            "event_id": "hubspot:62515:2310466:1779932185",
            "type": "opportunity.created",
            "occurred_at": 1710669600000,  # 2024-03-17T10:00:00Z
            "account_id": DEAL,
            "opportunity_id": DEAL,
            "amount": 12000.0,
            "currency": "USD",
        }
    ]
    assert amount_changed == []  # remembered for the win, never a second creation
    assert stages == [
        {
            "event_id": "hubspot:62515:2310470:1781977402",
            "type": "opportunity.won",
            "occurred_at": 1712311200000,  # 2024-04-05T10:00:00Z
            "account_id": DEAL,
            "opportunity_id": DEAL,
            "amount": 15000.5,
            "currency": "USD",
        }
    ]


def test_a_retried_delivery_maps_to_the_same_event_ids() -> None:
    mapper = HubSpotMapper()
    first = map_all(*(load(name) for name in WON_LIFECYCLE), mapper=mapper)
    retry = map_all(load("deal_won_3_stages_retry"), mapper=mapper)
    assert retry == first[-1:]
    assert retry[0]["event_id"] == "hubspot:62515:2310470:1781977402"


def test_lost_deal() -> None:
    assert map_all(load("deal_lost")) == [
        {
            "event_id": "hubspot:62515:2310466:1782503370",
            "type": "opportunity.created",
            "occurred_at": 1712916000000,  # 2024-04-12T10:00:00Z
            "account_id": LOST_DEAL,
            "opportunity_id": LOST_DEAL,
            "amount": 4000.0,
        },
        {
            "event_id": "hubspot:62515:2310470:1784011290",
            "type": "opportunity.lost",
            "occurred_at": 1714125600000,  # 2024-04-26T10:00:00Z
            "account_id": LOST_DEAL,
            "opportunity_id": LOST_DEAL,
        },
    ]


def test_contact_lifecycle_stages() -> None:
    base = {"account_id": CONTACT, "lead_id": CONTACT}
    assert map_all(load("contact_lifecycle")) == [
        {"event_id": "hubspot:62515:2310501:1775001001", "type": "lead.created", "occurred_at": 1709287200000, **base},
        # "subscriber" has no SPEC stage: nothing.
        {
            "event_id": "hubspot:62515:2310502:1775220017",
            "type": "lead.stage_changed",
            "occurred_at": 1709373600000,
            **base,
            "stage": "mql",
        },
        {
            "event_id": "hubspot:62515:2310502:1775820950",
            "type": "lead.stage_changed",
            "occurred_at": 1709632800000,
            **base,
            "stage": "sql",
        },
        # A generic `object.propertyChange` subscription, objectTypeId 0-1 = contacts.
        {
            "event_id": "hubspot:62515:2310610:1776410333",
            "type": "lead.stage_changed",
            "occurred_at": 1710237600000,
            **base,
            "stage": "customer",
        },
    ]


def test_unhandled_kinds_map_to_nothing() -> None:
    mapper = HubSpotMapper()
    assert [mapper.map(element) for element in mapper.elements(load("unhandled"))] == [[]] * 6


def test_malformed_elements_are_unmappable() -> None:
    mapper = HubSpotMapper()
    details = []
    for element in load("malformed"):
        with pytest.raises(Unmappable) as caught:
            mapper.map(element)
        details.append(caught.value.detail)
    assert details == [
        "HubSpot event must be a JSON object, got int",
        "HubSpot event has no subscriptionType of the form object.action: None",
        "amount 'twelve thousand' is not a number",
        "portalId must be a non-empty string or integer id, got None",
        "occurredAt must be epoch milliseconds or an ISO 8601 string, got None",
    ]


def test_a_win_is_emitted_once_per_close_and_again_after_a_reopen() -> None:
    mapper = HubSpotMapper()
    ids = {"account_id": DEAL, "opportunity_id": DEAL}
    assert mapper.map(change(1, 1000, "closedwon")) == [
        {"event_id": "hubspot:62515:2310470:1", "type": "opportunity.won", "occurred_at": 1000, **ids}
    ]
    assert mapper.map(change(2, 2000, "closedwon")) == []  # a workflow setting the same stage again
    assert mapper.map(change(3, 3000, "contractsent")) == []  # re-opened: SPEC §1 has no event for it
    assert mapper.map(change(4, 4000, "closedwon")) == [
        {"event_id": "hubspot:62515:2310470:4", "type": "opportunity.won", "occurred_at": 4000, **ids}
    ]
    assert mapper.map(change(5, 5000, "closedlost")) == [  # won → lost: a correction the CRM reports
        {"event_id": "hubspot:62515:2310470:5", "type": "opportunity.lost", "occurred_at": 5000, **ids}
    ]


def test_custom_pipeline_stage_ids_extend_the_defaults() -> None:
    mapper = HubSpotMapper(deal_stages={"1046711": "won", "1046712": "lost"}, lifecycle_stages={"subscriber": "lead"})
    deal = "hubspot:62515:deal:7"
    # Never seen and no amount known: the win carries none, so RevPulse's default (last known amount) applies.
    assert mapper.map(change(10, 1000, "1046711", object_id=7)) == [
        {
            "event_id": "hubspot:62515:2310470:10",
            "type": "opportunity.won",
            "occurred_at": 1000,
            "account_id": deal,
            "opportunity_id": deal,
        }
    ]
    assert mapper.map(change(11, 2000, "closedlost", object_id=8))[0]["type"] == "opportunity.lost"
    subscriber = {**change(12, 3000, "subscriber", object_id=751), "subscriptionType": "contact.propertyChange"}
    subscriber["propertyName"] = "lifecyclestage"
    assert mapper.map(subscriber)[0]["stage"] == "lead"


def test_a_mapping_to_a_stage_the_spec_lacks_is_a_configuration_error() -> None:
    with pytest.raises(ValueError, match="'1046711' maps to 'closed'"):
        HubSpotMapper(deal_stages={"1046711": "closed"})
    with pytest.raises(ValueError, match="'evangelist' maps to 'fan'"):
        HubSpotMapper(lifecycle_stages={"evangelist": "fan"})


def test_every_emitted_event_passes_the_revpulse_validator() -> None:
    decoder = EventDecoder("USD", {"EUR": 1.08}, ("smb", "mid_market", "enterprise"))
    names = (*WON_LIFECYCLE, "deal_won_3_stages_retry", "deal_lost", "contact_lifecycle")
    events = map_all(*(load(name) for name in names))
    assert len(events) == 9
    for event in events:
        ((item, _),) = decoder.decode_record(orjson.dumps(event))
        assert isinstance(item, Event), (event, item)


# --- Event ids: HubSpot's eventId is not unique ------------------------------------------------------------------


def creation(portal: int | str, subscription: int | str, event_id: int | str, object_id: int, attempt: int = 0) -> dict:
    """A `deal.creation` webhook event, as HubSpot's Webhooks API documents its payload (fields objectId, eventId,
    subscriptionId, portalId, appId, occurredAt, subscriptionType, attemptNumber, changeSource, changeFlag:
    https://developers.hubspot.com/docs/api/webhooks, "Webhook payloads"), where eventId is "The ID of the event that
    triggered this notification. This value is not guaranteed to be unique."
    (https://developers.hubspot.com/docs/apps/legacy-apps/public-apps/create-generic-webhook-subscriptions)."""
    return {
        "objectId": object_id,
        "changeFlag": "CREATED",
        "changeSource": "CRM_UI",
        "eventId": event_id,
        "subscriptionId": subscription,
        "portalId": portal,
        "appId": 1160452,
        "occurredAt": 1717232400000,
        "subscriptionType": "deal.creation",
        "attemptNumber": attempt,
    }


def test_two_portals_creations_with_the_same_event_id_both_count() -> None:
    mapper = HubSpotMapper()
    # One app installed in two portals; each portal's deal creation arrives with eventId 100.
    first, second = map_all([creation(62515, 2310466, 100, 501), creation(88104, 2310466, 100, 501)], mapper=mapper)
    assert (first["event_id"], second["event_id"]) == ("hubspot:62515:2310466:100", "hubspot:88104:2310466:100")
    assert (first["account_id"], second["account_id"]) == ("hubspot:62515:deal:501", "hubspot:88104:deal:501")
    # Two subscriptions of one portal (e.g. a legacy deal.creation one and a generic object.creation one).
    generic = {**creation(62515, 2310610, 100, 502), "subscriptionType": "object.creation", "objectTypeId": "0-3"}
    [third] = map_all([generic], mapper=mapper)
    assert third["event_id"] == "hubspot:62515:2310610:100"
    # A retry of the first (higher attemptNumber) is still its duplicate.
    [retried] = map_all([creation(62515, 2310466, 100, 501, attempt=1)], mapper=mapper)
    assert retried == first


def test_event_ids_stay_within_the_spec_bounds() -> None:
    """Ids of up to 256 characters each would give a longer event_id, and a `:` inside one an ambiguous one: then it
    is a SHA-256 of the three, the same on every delivery."""
    decoder = EventDecoder("USD", {}, ("smb",))
    long_event = "9" * 256  # a string id may be that long; HubSpot's are integers
    [event] = map_all([creation(62515, 2310466, long_event, 501)])
    assert event["event_id"] == map_all([creation(62515, 2310466, long_event, 501, attempt=2)])[0]["event_id"]
    assert event["event_id"].startswith("hubspot:sha256:") and len(event["event_id"]) == len("hubspot:sha256:") + 64
    ((item, _),) = decoder.decode_record(orjson.dumps(event))
    assert isinstance(item, Event)
    ambiguous = {
        map_all([creation("1:2", 3, 4, 501)])[0]["event_id"],
        map_all([creation(1, "2:3", 4, 501)])[0]["event_id"],
    }
    assert len(ambiguous) == 2 and all(i.startswith("hubspot:sha256:") for i in ambiguous)


def test_an_event_without_a_subscription_id_is_unmappable() -> None:
    element = creation(62515, 2310466, 100, 501)
    del element["subscriptionId"]
    with pytest.raises(Unmappable) as caught:
        HubSpotMapper().map(element)
    assert caught.value.detail == "subscriptionId must be a non-empty string or integer id, got None"
