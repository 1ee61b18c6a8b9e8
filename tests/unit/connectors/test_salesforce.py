"""Salesforce OpportunityChangeEvents → canonical SPEC §1 events: exact outputs in all three delivery forms."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest

from revpulse.connectors.base import PartlyUnmappable, Unmappable
from revpulse.connectors.salesforce import SalesforceMapper, _field_order, _listed
from revpulse.connectors.translate import Translator
from revpulse.schemas.models import Event, EventDecoder
from revpulse.settings import Settings
from tests.support.paths import FIXTURES as FIXTURES_DIR

FIXTURES = FIXTURES_DIR / "salesforce"
SETTINGS = Settings.from_env({})
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


# --- Merged change events: one header, several recordIds ---------------------------------------------------------

MERGED_KNOWN = (OPP_A, OPP_D)
UNSEEN = "0065e00000AaQ7zAAF"  # an opportunity RevPulse has never seen: its account is unknown


def merged_closed_won(*record_ids: str) -> dict[str, Any]:
    """One mass update closing several opportunities as won, merged by Salesforce into one change event.

    Shape from Salesforce's Change Data Capture Developer Guide, "Merged Change Events" (API 60.0 example,
    https://developer.salesforce.com/docs/atlas.en-us.change_data_capture.meta/change_data_capture/cdc_subscribe_merged_events.htm):
    "Salesforce sends one change event for all affected records and the recordIds field contains the IDs for all
    records that have the same change". Here an Opportunity list-view mass update instead of their Account example.
    """
    header = {
        "entityName": "Opportunity",
        "recordIds": list(record_ids),
        "changeType": "UPDATE",
        "changeOrigin": "com/salesforce/api/soap/60.0;client=devconsole",
        "transactionKey": "00065380-d1a9-a64a-9341-14f6f12f674c",
        "sequenceNumber": 1,
        "commitTimestamp": 1714170102000,
        "commitNumber": 1100823480049,
        "commitUser": "0055e000003QmFzAAK",
        "changedFields": ["StageName", "IsClosed", "IsWon", "ForecastCategory", "LastModifiedDate"],
    }
    closed = {"StageName": "Closed Won", "IsClosed": True, "IsWon": True, "ForecastCategory": "Closed"}
    return {"ChangeEventHeader": header, **closed, "LastModifiedDate": "2024-04-26T22:21:42.000Z"}


def known_mapper() -> SalesforceMapper:
    """A mapper that has seen OPP_A created (50,000, then 65,000) and OPP_D created, both with their accounts."""
    mapper = SalesforceMapper()
    map_each("won_1_create", "won_2_amount", mapper=mapper)
    opp_d = load("created_closed_won")
    opp_d.update(StageName="Negotiation/Review", IsClosed=False, IsWon=False)
    map_each_body(opp_d, mapper)
    return mapper


def map_each_body(body: Any, mapper: SalesforceMapper) -> list[dict[str, Any]]:
    return [e for element in mapper.elements(body) for e in mapper.map(element)]


def won(record_id: str, account: str, amount: float) -> dict[str, Any]:
    return {
        "event_id": f"salesforce:00065380-d1a9-a64a-9341-14f6f12f674c:1:{record_id}",
        "type": "opportunity.won",
        "occurred_at": 1714170102000,
        "account_id": account,
        "opportunity_id": record_id,
        "amount": amount,
        "currency": "USD",
    }


def test_a_merged_change_with_one_unknown_record_maps_the_others_and_dead_letters_that_one_alone() -> None:
    mapper = known_mapper()
    with pytest.raises(PartlyUnmappable) as caught:
        mapper.map(merged_closed_won(OPP_A, UNSEEN, OPP_D))
    refusal = caught.value
    # The known records' closes are not lost: each has its own event.
    assert refusal.events == [won(OPP_A, ACC_A, 65000.0), won(OPP_D, ACC_D, 1200.0)]
    assert refusal.detail == (
        "1 of the 3 records of a merged change event (the other 2 mapped): account unknown: no change seen so far "
        f"links opportunity {UNSEEN} to an account"
    )
    # What is dead-lettered is the same change event, narrowed to the record that failed.
    assert refusal.rest == merged_closed_won(UNSEEN)


def test_a_merged_change_through_the_translator_in_every_delivery_form() -> None:
    """Plain payload, the Streaming API envelope and Kafka Connect's pair: the dead letter keeps the form."""
    plain = merged_closed_won(OPP_A, UNSEEN, OPP_D)
    streaming = {
        "data": {"schema": "-xRsAXGqO6qUNAM2hPNZnw", "payload": plain, "event": {"replayId": 14610}},
        "channel": "/data/OpportunityChangeEvent",
    }
    connect = {"schema": load("lost_1_create")["schema"], "payload": plain}
    for body, narrowed in (
        (plain, merged_closed_won(UNSEEN)),
        (streaming, {**streaming, "data": {**streaming["data"], "payload": merged_closed_won(UNSEEN)}}),
        (connect, {**connect, "payload": merged_closed_won(UNSEEN)}),
    ):
        t = Translator("salesforce", known_mapper(), SETTINGS.topics)
        translation = t.translate(orjson.dumps(body))
        mapped = [orjson.loads(r.value) for r in translation.records if r.reason is None]
        letters = [r for r in translation.records if r.reason is not None]
        assert mapped == [won(OPP_A, ACC_A, 65000.0), won(OPP_D, ACC_D, 1200.0)]
        assert [(orjson.loads(r.value), r.reason, r.topic) for r in letters] == [
            (narrowed, "unmappable", SETTINGS.topics.deadletter)
        ]
        assert (
            letters[0].detail is not None
            and f"account unknown: no change seen so far links opportunity {UNSEEN}" in letters[0].detail
        )
        assert translation.outcomes == {"unmappable": 1}


def test_a_merged_change_whose_records_all_fail_is_dead_lettered_as_it_came() -> None:
    other = "0065e00000AaQ80AAF"
    body = merged_closed_won(UNSEEN, other)
    raw = orjson.dumps(body)
    translation = Translator("salesforce", SalesforceMapper(), SETTINGS.topics).translate(raw)
    assert [(r.value, r.reason) for r in translation.records] == [(raw, "unmappable")]
    assert translation.records[0].detail == (
        "salesforce: 2 of the 2 records of a merged change event: account unknown: no change seen so far links "
        f"opportunity {UNSEEN} to an account; account unknown: no change seen so far links opportunity {other} "
        "to an account"
    )


def test_a_record_listed_twice_in_a_merged_change_is_one_change() -> None:
    mapper = known_mapper()
    assert mapper.map(merged_closed_won(OPP_A, OPP_A)) == [won(OPP_A, ACC_A, 65000.0)]


# --- Pub/Sub API change events: bitmap-encoded changedFields / nulledFields / diffFields --------------------------

# Kafka Connect's schema of the event, in the field order of its Avro schema (the fixture's order; an org's real
# OpportunityChangeEvent schema has more fields, in its own order: the positions are the schema's, whatever it is).
CONNECT_SCHEMA = load("lost_1_create")["schema"]
ORDER = [field["field"] for field in CONNECT_SCHEMA["fields"]]


def bitmap(*names: str) -> str:
    """Salesforce's encoding: bit i (least significant first) set for the field at position i of the schema."""
    return hex(sum(1 << ORDER.index(name) for name in names))


def pubsub_update(record_id: str, changed: list[str], nulled: list[str] | None = None, **values: Any) -> dict[str, Any]:
    """An UPDATE as the Pub/Sub API delivers it, decoded from Avro to JSON by a connector.

    Shape from Salesforce's docs: Pub/Sub API "Event Deserialization Considerations"
    (https://developer.salesforce.com/docs/platform/pub-sub-api/guide/event-deserialization-considerations.html:
    changedFields / nulledFields / diffFields are bitmaps, e.g. ['0x650004E0','4-0x10','7-0x06'], "a bit set to 1
    indicates that the field at the corresponding position in the Avro schema was changed"), and the Change Data
    Capture guide's "Change Event Body Fields": in Pub/Sub API clients an UPDATE's body "includes all record and
    system fields, even if they're unchanged or empty. Unchanged fields have an empty value"; changedFields "include
    fields set to null"; date fields are epoch milliseconds.
    """
    nulled = nulled or []
    header = {
        "entityName": "Opportunity",
        "recordIds": [record_id],
        "changeType": "UPDATE",
        "changeOrigin": "com/salesforce/api/rest/62.0",
        "transactionKey": "000e1a2b-3c4d-4e5f-8a9b-0c1d2e3f4a5b",
        "sequenceNumber": 1,
        "commitTimestamp": 1716890400000,
        "commitNumber": 10714902211004,
        "commitUser": "0055e000003QmFzAAK",
        "nulledFields": [bitmap(*nulled)] if nulled else [],
        "diffFields": [],
        "changedFields": [bitmap(*changed, *nulled, "LastModifiedDate")],
    }
    body: dict[str, Any] = {name: None for name in ORDER[1:]}
    body.update(values, LastModifiedDate=1716890400000)
    return {"ChangeEventHeader": header, **body}


CLOSED_WON = {"StageName": "Closed Won", "Probability": 100.0, "IsClosed": True, "IsWon": True}
WON_AT_PUBSUB = {
    "event_id": f"salesforce:000e1a2b-3c4d-4e5f-8a9b-0c1d2e3f4a5b:1:{OPP_A}",
    "type": "opportunity.won",
    "occurred_at": 1716890400000,
    "account_id": ACC_A,
    "opportunity_id": OPP_A,
    "amount": 65000.0,
    "currency": "USD",
}


def test_a_pubsub_closed_won_update_with_its_schema_decodes_the_bitmap() -> None:
    update = pubsub_update(OPP_A, list(CLOSED_WON), **CLOSED_WON)
    assert update["ChangeEventHeader"]["changedFields"] == ["0x8360"]  # positions 5, 6, 8, 9 and 15
    mapper = known_mapper()
    assert mapper.map({"schema": CONNECT_SCHEMA, "payload": update}) == [WON_AT_PUBSUB]


def test_a_pubsub_closed_won_update_without_its_schema_counts_every_non_null_field_as_changed() -> None:
    """The update that was silently ignored (the bitmap named no field RevPulse knew): every field Salesforce
    left null is unchanged, so the non-null ones are the changes."""
    mapper = known_mapper()
    assert mapper.map(pubsub_update(OPP_A, list(CLOSED_WON), **CLOSED_WON)) == [WON_AT_PUBSUB]
    streaming = {"data": {"schema": "Eo7Yhy2cq0XWsv3oyCG6qA", "payload": pubsub_update(OPP_D, ["Amount"], Amount=9.0)}}
    assert mapper.map(streaming) == []  # a schema id, not a schema: the same rule; Amount 9 is remembered
    assert mapper.map(pubsub_update(OPP_D, list(CLOSED_WON), **CLOSED_WON))[0]["amount"] == 9.0


def test_a_pubsub_nulled_field_is_cleared_with_the_schema_and_refused_without_it() -> None:
    clear_and_win = pubsub_update(OPP_A, list(CLOSED_WON), nulled=["Amount"], **CLOSED_WON)
    mapper = known_mapper()
    assert mapper.map({"schema": CONNECT_SCHEMA, "payload": clear_and_win}) == [
        {**WON_AT_PUBSUB, "amount": 0}  # Amount cleared in the same change: the win carries 0, as SPEC §1 reads it
    ]
    # Without the schema, a cleared Amount cannot be told from an unchanged one: refused, never applied in part.
    assert unmappable(clear_and_win, known_mapper()) == (
        "nulledFields ['0x8'] is a Pub/Sub bitmap and the record carries no schema to decode it: cannot tell "
        "whether AccountId, Amount, CurrencyIsoCode were cleared (deliver the events with their schema, e.g. Kafka "
        "Connect JSON with schemas.enable=true, or with field names)"
    )
    # A cleared field that is not a mapped one changes nothing the mapping keeps: mapped.
    full = pubsub_update(OPP_A, list(CLOSED_WON), nulled=["CloseDate"], **CLOSED_WON)
    full.update(AccountId=ACC_A, Amount=65000.0, CurrencyIsoCode="USD")
    assert known_mapper().map(full) == [WON_AT_PUBSUB]


def test_a_schema_that_is_not_the_events_is_refused() -> None:
    update = pubsub_update(OPP_A, list(CLOSED_WON), **CLOSED_WON)
    shuffled = {**CONNECT_SCHEMA, "fields": list(reversed(CONNECT_SCHEMA["fields"]))}
    assert unmappable({"schema": shuffled, "payload": update}, known_mapper()) == (
        "changedFields ['0x8360'] does not mark StageName, IsWon, which the Pub/Sub payload carries values for: the "
        "schema's field order is not this event's"
    )
    short = {**CONNECT_SCHEMA, "fields": CONNECT_SCHEMA["fields"][:10]}
    assert unmappable({"schema": short, "payload": update}, known_mapper()) == (
        "changedFields marks field position 15, but the event's schema has 10 fields: the schema is not this event's"
    )


def test_bitmaps_decode_as_salesforces_own_utility_does() -> None:
    """The documented example bitmap, decoded against forcedotcom/pub-sub-api's python/util/ChangeEventHeaderUtility
    (the hex string as bits, reversed: position i is bit i from the least significant end), and an Avro schema
    given as its JSON text (what Pub/Sub's GetSchema returns) instead of Kafka Connect's."""
    avro = {"type": "record", "name": "X", "fields": [{"name": f"F{i}", "type": "string"} for i in range(32)]}
    avro["fields"][0]["name"] = "ChangeEventHeader"
    names = [field["name"] for field in avro["fields"]]
    bits = bin(int("650004E0", 16))[2:][::-1]  # BitArray(hex=…).bin[::-1], without the bitstring package
    expected = [names[i] for i, bit in enumerate(bits) if bit == "1"]
    assert expected == ["F5", "F6", "F7", "F10", "F24", "F26", "F29", "F30"]
    listed = _listed({"changedFields": ["0x650004E0", "4-0x10", "7-0x06"]}, "changedFields")
    assert listed is not None and listed.is_bitmap
    order = _field_order({"schema": orjson.dumps(avro).decode(), "payload": {}})
    assert order == names
    assert listed.decoded(order, "changedFields") == {*expected, "F4", "F7"}  # + the two compound fields' own


def test_a_pubsub_create_maps_like_any_create() -> None:
    created = pubsub_update(UNSEEN, [], AccountId=ACC_B, Amount=700.0, CurrencyIsoCode="USD", StageName="Prospecting")
    header = created["ChangeEventHeader"]
    header.update(changeType="CREATE", changedFields=[], nulledFields=[])
    created.update(IsClosed=False, IsWon=False)
    [event] = SalesforceMapper().map(created)
    assert (event["type"], event["amount"], event["account_id"]) == ("opportunity.created", 700.0, ACC_B)


def test_a_changed_fields_list_of_neither_names_nor_bitmaps_is_unmappable() -> None:
    """Before, it counted as no list at all (every non-null field a change): a guess, now a clear refusal."""
    assert unmappable(update(OPP_A, "StageName", StageName="Closed Won")) == (
        "changedFields must be a list of field names or Pub/Sub bitmaps, got 'StageName'"
    )
    assert unmappable(update(OPP_A, ["StageName", 22], StageName="Closed Won")) == (
        "changedFields must be a list of field names or Pub/Sub bitmaps, got ['StageName', 22]"
    )
