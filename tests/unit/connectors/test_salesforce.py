"""Salesforce OpportunityChangeEvents → canonical SPEC §1 events: exact outputs in all three delivery forms."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest

from revpulse.connectors.base import Unmappable
from revpulse.connectors.salesforce import SalesforceMapper
from revpulse.schemas.models import Event, EventDecoder
from tests.support.paths import FIXTURES as FIXTURES_DIR

FIXTURES = FIXTURES_DIR / "salesforce"
OPP_A, OPP_B, OPP_C, OPP_D = "0065e00000BxT3mAAF", "0065e00000BxU9qAAF", "0065e00000BxU9rAAF", "0065e00000BxZ1aAAF"
ACC_A, ACC_B, ACC_D = "0015e00000LmRqXAAV", "0015e00000LmS2kAAF", "0015e00000LmT8pAAF"
WON_LIFECYCLE = ("won_1_create", "won_2_amount", "won_3_stage", "won_4_closed_won")
LOST_LIFECYCLE = ("lost_1_create", "lost_2_create", "lost_3_bulk_closed_lost")


def load(name: str) -> Any:
    return json.loads((FIXTURES / f"{name}.json").read_text())


def map_each(*names: str, mapper: SalesforceMapper | None = None) -> list[list[dict[str, Any]]]:
    """The canonical events of each fixture, mapped in order by one mapper."""
    mapper = mapper or SalesforceMapper()
    return [[e for element in mapper.elements(load(name)) for e in mapper.map(element)] for name in names]


def unmappable(element: Any, mapper: SalesforceMapper | None = None) -> str:
    with pytest.raises(Unmappable) as caught:
        (mapper or SalesforceMapper()).map(element)
    return caught.value.detail


def update(record_id: str, changed: list[str], tx: str = "tx", **fields: Any) -> dict[str, Any]:
    header = {
        "entityName": "Opportunity",
        "recordIds": [record_id],
        "changeType": "UPDATE",
        "transactionKey": tx,
        "sequenceNumber": 1,
        "commitTimestamp": 1000,
        "changedFields": changed,
    }
    return {"ChangeEventHeader": header, **fields}


def test_won_opportunity_lifecycle_in_plain_envelope_and_connect_forms() -> None:
    created, amount_changed, stage_changed, won = map_each(*WON_LIFECYCLE)
    ids = {"account_id": ACC_A, "opportunity_id": OPP_A}
    assert created == [
        {
            "event_id": f"salesforce:0001b8f2-7d5c-4e1a-9c2e-3f6a1d8b4e07:1:{OPP_A}",
            "type": "opportunity.created",
            "occurred_at": 1710753300000,  # commitTimestamp, 2024-03-18T09:15:00Z
            **ids,
            "amount": 50000.0,
            "currency": "USD",
        }
    ]
    assert amount_changed == []
    # The Kafka Connect form carries every field, unchanged ones null: they must not clear Amount or AccountId.
    assert stage_changed == []
    assert won == [
        {
            "event_id": f"salesforce:0004e5f1-2c8b-4a6d-9f07-b1e3d9c5a724:1:{OPP_A}",
            "type": "opportunity.won",
            "occurred_at": 1713545100000,  # 2024-04-19T16:45:00Z
            **ids,
            "amount": 65000.0,  # the last known Amount, from the update of 2024-03-26
            "currency": "USD",
        }
    ]


def test_one_change_covering_two_records_closes_both_lost() -> None:
    created_b, created_c, lost = map_each(*LOST_LIFECYCLE)
    assert created_b == [
        {
            "event_id": f"salesforce:00058d3c-4a1f-4b9e-a2d6-7e0c5f8b1a93:1:{OPP_B}",
            "type": "opportunity.created",
            "occurred_at": 1712131200000,
            "account_id": ACC_B,
            "opportunity_id": OPP_B,
            "amount": 0,  # Amount null
            "currency": "USD",
        }
    ]
    assert created_c[0]["amount"] == 8000.0
    assert lost == [
        {
            "event_id": f"salesforce:00079b1e-3d7a-4f2c-8e5b-a6c0d4f1e382:1:{record_id}",
            "type": "opportunity.lost",
            "occurred_at": 1714996800000,  # 2024-05-06T12:00:00Z
            "account_id": ACC_B,
            "opportunity_id": record_id,
            "reason": "Closed Lost",
        }
        for record_id in (OPP_B, OPP_C)
    ]


def test_created_already_won_emits_created_then_won() -> None:
    base = f"salesforce:00083e7d-5b2c-4a9f-9d1e-f4a7c2b0e516:1:{OPP_D}"
    common = {"occurred_at": 1715335200000, "account_id": ACC_D, "opportunity_id": OPP_D}
    assert map_each("created_closed_won") == [
        [
            {"event_id": base, "type": "opportunity.created", **common, "amount": 1200.0, "currency": "USD"},
            {"event_id": f"{base}:won", "type": "opportunity.won", **common, "amount": 1200.0, "currency": "USD"},
        ]
    ]


def test_redelivery_maps_to_the_same_event_ids_and_never_closes_twice() -> None:
    replayed = map_each(*WON_LIFECYCLE)
    mapper = SalesforceMapper()
    assert map_each(*WON_LIFECYCLE, mapper=mapper) == replayed  # re-mapping the topic from its start
    # A connector redelivering its last records after a restart: the same ids, and the win is not emitted again.
    assert map_each("won_3_stage", "won_4_closed_won", mapper=mapper) == [[], []]


def test_delete_undelete_and_other_entities_map_to_nothing() -> None:
    mapper = SalesforceMapper()
    map_each(*WON_LIFECYCLE, mapper=mapper)
    assert map_each("delete", "undelete", "account_change", mapper=mapper) == [[], [], []]


def test_gap_events_unknown_accounts_and_malformed_records_are_unmappable() -> None:
    assert unmappable(load("gap_update")) == (
        "GAP_UPDATE gap event: Salesforce lost these changes; re-read records ['0065e00000BxT3mAAF'] from the org"
    )
    assert unmappable(load("unknown_record")) == (
        "account unknown: no change seen so far links opportunity 0065e00000AaQ7zAAF to an account"
    )
    assert unmappable(load("malformed")) == (
        "not a Salesforce change event: no ChangeEventHeader in the record, data.payload or payload"
    )
    wildcard = update("006*", ["Type"], Type="New Customer")
    assert (
        unmappable(wildcard)
        == "wildcard recordIds ['006*']: a field type conversion changed every record; re-read them"
    )
    snapshot = update(OPP_A, [])
    snapshot["ChangeEventHeader"]["changeType"] = "SNAPSHOT"
    assert unmappable(snapshot) == "unknown changeType 'SNAPSHOT'"


def test_an_unseen_record_maps_once_an_update_names_its_account() -> None:
    mapper = SalesforceMapper()
    record = "0065e00000AaQ7zAAF"
    assert mapper.map(update(record, ["Amount"], tx="t1", Amount=300.0)) == []  # no event needed: no account needed
    closed = update(record, ["AccountId", "StageName", "IsClosed", "IsWon"], tx="t2", AccountId=ACC_A)
    closed.update(StageName="Closed Won", IsClosed=True, IsWon=True)
    assert mapper.map(closed) == [
        {
            "event_id": f"salesforce:t2:1:{record}",
            "type": "opportunity.won",
            "occurred_at": 1000,
            "account_id": ACC_A,
            "opportunity_id": record,
            "amount": 300.0,
        }
    ]


def test_nulled_amount_is_zero_and_a_flip_of_is_won_on_a_closed_record_is_a_new_close() -> None:
    mapper = SalesforceMapper()
    map_each(*WON_LIFECYCLE, mapper=mapper)
    nulled = update(OPP_A, ["Amount"], tx="t1", Amount=None)
    nulled["ChangeEventHeader"]["nulledFields"] = ["Amount"]
    assert mapper.map(nulled) == []
    flip = mapper.map(update(OPP_A, ["StageName", "IsWon"], tx="t2", StageName="Closed - No Budget", IsWon=False))
    assert flip == [
        {
            "event_id": f"salesforce:t2:1:{OPP_A}",
            "type": "opportunity.lost",
            "occurred_at": 1000,
            "account_id": ACC_A,
            "opportunity_id": OPP_A,
            "reason": "Closed - No Budget",
        }
    ]
    rewon = mapper.map(update(OPP_A, ["IsWon"], tx="t3", IsWon=True))
    assert rewon[0]["amount"] == 0  # cleared by the nulled update


def test_without_changed_fields_only_non_null_values_are_changes() -> None:
    mapper = SalesforceMapper()
    map_each("won_1_create", mapper=mapper)
    legacy = update(OPP_A, [], tx="t1", AccountId=None, Amount=None, IsClosed=True, IsWon=True)
    del legacy["ChangeEventHeader"]["changedFields"]
    assert mapper.map(legacy)[0] | {"event_id": "-"} == {
        "event_id": "-",
        "type": "opportunity.won",
        "occurred_at": 1000,
        "account_id": ACC_A,
        "opportunity_id": OPP_A,
        "amount": 50000.0,
        "currency": "USD",
    }


def test_every_emitted_event_passes_the_revpulse_validator() -> None:
    decoder = EventDecoder("USD", {"EUR": 1.08}, ("smb", "mid_market", "enterprise"))
    events = [e for batch in map_each(*WON_LIFECYCLE, *LOST_LIFECYCLE, "created_closed_won") for e in batch]
    assert len(events) == 8
    for event in events:
        ((item, _),) = decoder.decode_record(orjson.dumps(event))
        assert isinstance(item, Event), (event, item)
