"""Pipedrive webhooks v2 → canonical SPEC §1 events: exact outputs for deals and leads, retries, other kinds."""

from __future__ import annotations

import copy
import json
from typing import Any

import orjson
import pytest

from revpulse.connectors.base import Unmappable
from revpulse.connectors.pipedrive import PipedriveMapper
from revpulse.schemas.models import Event, EventDecoder
from tests.support.paths import FIXTURES as FIXTURES_DIR

FIXTURES = FIXTURES_DIR / "pipedrive"
COMPANY = "pipedrive:8087566"
WON_LIFECYCLE = ("deal_won_1_create", "deal_won_2_value", "deal_won_3_stage", "deal_won_4_won")
LOST_LIFECYCLE = ("deal_lost_1_create", "deal_lost_2_lost")
LEAD_LIFECYCLE = ("lead_create", "lead_archived", "lead_unarchived", "lead_delete")
LEAD = {"account_id": f"{COMPANY}:org:2", "lead_id": f"{COMPANY}:lead:b1810230-6c0d-11ed-9826-a53d0eb706a5"}


def load(name: str) -> Any:
    return json.loads((FIXTURES / f"{name}.json").read_text())


def map_each(*names: str, mapper: PipedriveMapper | None = None) -> list[list[dict[str, Any]]]:
    """The canonical events of each fixture, mapped in order by one mapper."""
    mapper = mapper or PipedriveMapper()
    return [[e for element in mapper.elements(load(name)) for e in mapper.map(element)] for name in names]


def unmappable(body: Any) -> str:
    with pytest.raises(Unmappable) as caught:
        PipedriveMapper().map(body)
    return caught.value.detail


def test_a_webhook_body_is_one_element() -> None:
    body = load("deal_won_1_create")
    assert PipedriveMapper().elements(body) == [body]


def test_won_deal_lifecycle() -> None:
    created, value_changed, stage_changed, won = map_each(*WON_LIFECYCLE)
    ids = {"account_id": f"{COMPANY}:org:1", "opportunity_id": f"{COMPANY}:deal:8"}
    assert created == [
        {
            "event_id": "pipedrive:71825ee0-0054-4267-b5fd-d28b7a414212",
            "type": "opportunity.created",
            "occurred_at": 1710753300000,  # add_time 2024-03-18T09:15:00Z
            **ids,
            "amount": 100,
            "currency": "EUR",
        }
    ]
    assert value_changed == []
    assert stage_changed == []
    assert won == [
        {
            "event_id": "pipedrive:5b7e0d93-2a6c-4f18-8d4e-c3a9f1b2e706",
            "type": "opportunity.won",
            "occurred_at": 1713545102000,  # won_time 2024-04-19T16:45:02Z
            **ids,
            "amount": 1500,
            "currency": "EUR",
        }
    ]


def test_a_retried_delivery_maps_to_the_same_event_ids() -> None:
    mapper = PipedriveMapper()
    first = map_each(*WON_LIFECYCLE, mapper=mapper)[-1]
    assert map_each("deal_won_4_won_retry", mapper=mapper) == [first]  # meta.attempt 2, same meta.id


def test_lost_deal() -> None:
    created, lost = map_each(*LOST_LIFECYCLE)
    ids = {"account_id": f"{COMPANY}:org:2", "opportunity_id": f"{COMPANY}:deal:9"}
    assert created == [
        {
            "event_id": "pipedrive:a0d4e6b1-3c5f-4a27-9e8d-6b2c1f0a7d53",
            "type": "opportunity.created",
            "occurred_at": 1712131200000,
            **ids,
            "amount": 2400,
            "currency": "USD",
        }
    ]
    assert lost == [
        {
            "event_id": "pipedrive:e6c2a9f4-1b8d-4e3a-b7f5-0d9c3e6a2b48",
            "type": "opportunity.lost",
            "occurred_at": 1714996801000,  # lost_time 2024-05-06T12:00:01Z
            **ids,
            "reason": "Chose a competitor",
        }
    ]


def test_a_deal_created_won_without_organization_belongs_to_its_person() -> None:
    common = {
        "occurred_at": 1715331600000,  # add_time = won_time = 2024-05-10T09:00:00Z
        "account_id": f"{COMPANY}:person:15",
        "opportunity_id": f"{COMPANY}:deal:10",
        "amount": 900,
        "currency": "EUR",
    }
    event_id = "pipedrive:9f3d7b20-6e4a-4c81-a2d9-b5e0f8c1a63e"
    assert map_each("deal_create_won") == [
        [
            {"event_id": event_id, "type": "opportunity.created", **common},
            {"event_id": f"{event_id}:won", "type": "opportunity.won", **common},
        ]
    ]


def test_lead_lifecycle() -> None:
    assert map_each(*LEAD_LIFECYCLE) == [
        [
            {
                "event_id": "pipedrive:b18fa830-6c0d-11ed-9826-a53d0eb706a5",
                "type": "lead.created",
                "occurred_at": 1709287200675,  # add_time 2024-03-01T10:00:00.675Z
                **LEAD,
                "source": "Web forms",
            }
        ],
        [
            {
                "event_id": "pipedrive:e235ba60-6c0d-11ed-a825-71d0cf99387b",
                "type": "lead.stage_changed",
                "occurred_at": 1709912240391,  # meta.timestamp 2024-03-08T15:37:20.391Z
                **LEAD,
                "stage": "disqualified",
            }
        ],
        [
            {
                "event_id": "pipedrive:4f8e2c61-7d3a-11ed-b912-2c6e8d4f1a05",
                "type": "lead.stage_changed",
                "occurred_at": 1710148365120,  # 2024-03-11T09:12:45.120Z
                **LEAD,
                "stage": "lead",
            }
        ],
        [],  # a delete: nothing (it may be the lead's conversion to a deal)
    ]


def test_deletes_and_other_entities_map_to_nothing() -> None:
    assert map_each("deal_delete", "person_change") == [[], []]


def test_a_change_that_leaves_the_status_alone_closes_nothing() -> None:
    mapper = PipedriveMapper()
    value_of_won_deal = load("deal_won_2_value")
    value_of_won_deal["data"]["status"] = "won"  # a deal won before RevPulse saw it, re-valued
    assert mapper.map(value_of_won_deal) == []
    reopened = load("deal_won_4_won")
    reopened["data"]["status"], reopened["previous"] = "open", {"status": "won"}
    assert mapper.map(reopened) == []


def test_without_meta_id_the_event_id_is_a_stable_composite() -> None:
    body = load("deal_lost_2_lost")
    del body["meta"]["id"]
    retry = copy.deepcopy(body)
    retry["meta"]["attempt"] = 2
    expected = "pipedrive:8087566:deal:9:change:2024-05-06T12:00:01.647Z"
    assert PipedriveMapper().map(body)[0]["event_id"] == expected
    assert PipedriveMapper().map(retry)[0]["event_id"] == expected


def test_integer_meta_timestamps_are_seconds_and_times_without_offset_are_utc() -> None:
    body = load("lead_archived")
    body["meta"]["timestamp"] = 1709912240
    assert PipedriveMapper().map(body)[0]["occurred_at"] == 1709912240000
    lost = load("deal_lost_2_lost")
    lost["data"]["lost_time"] = "2024-05-06 12:00:01"  # the older API's form
    assert PipedriveMapper().map(lost)[0]["occurred_at"] == 1714996801000


def test_malformed_bodies_are_unmappable() -> None:
    assert unmappable(load("v1_body")) == "not a Pipedrive webhooks v2 body: meta.version is None"
    assert unmappable(load("deal_no_account")) == (
        "account unknown: no change seen so far links opportunity pipedrive:8087566:deal:11 to an account"
    )
    assert unmappable([1, 2]) == "not a Pipedrive webhook: no meta object"
    no_data = load("lead_create") | {"data": None}
    assert unmappable(no_data) == "Pipedrive lead create: data must be an object and previous an object or null"
    bad_value = load("deal_won_2_value")
    bad_value["data"]["value"] = -1500
    assert unmappable(bad_value) == "value -1500 is not a finite amount ≥ 0"
    bad_action = load("lead_create")
    bad_action["meta"]["action"] = "merge"
    assert unmappable(bad_action) == "unknown Pipedrive action 'merge'"


def test_every_emitted_event_passes_the_revpulse_validator() -> None:
    decoder = EventDecoder("USD", {"EUR": 1.08}, ("smb", "mid_market", "enterprise"))
    names = (*WON_LIFECYCLE, "deal_won_4_won_retry", *LOST_LIFECYCLE, "deal_create_won", *LEAD_LIFECYCLE)
    events = [e for batch in map_each(*names) for e in batch]
    assert len(events) == 10
    for event in events:
        ((item, _),) = decoder.decode_record(orjson.dumps(event))
        assert isinstance(item, Event), (event, item)
