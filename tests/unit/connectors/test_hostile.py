"""Hostile provider payloads that once escaped the connectors as exceptions, and the outcomes they have now.

Each of these crashed the connector agent (and, since raw topics are mapped again from offset 0 on every
assignment, crashed it for good): they must become dead letters with exact reasons and details, leave the mapper's
state as it was, and let the rest of the record and of the topic go on.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import orjson
import pytest

from revpulse.connectors.base import Unmappable, preview
from revpulse.connectors.hubspot import HubSpotMapper
from revpulse.connectors.salesforce import SalesforceMapper
from revpulse.connectors.translate import DETAIL_LIMIT, Translation, Translator, translators
from revpulse.schemas.models import element_json
from revpulse.settings import Settings
from tests.support.paths import FIXTURES

SETTINGS = Settings.from_env({})
DEADLETTER = "revpulse.deadletter"


def translator(source: str) -> Translator:
    return next(t for t in translators(SETTINGS).values() if t.source == source)


def load(source: str, name: str) -> Any:
    return json.loads((FIXTURES / source / f"{name}.json").read_text())


def letters(translation: Translation) -> list[tuple[bytes, str | None, str | None]]:
    return [(r.value, r.reason, r.detail) for r in translation.records if r.reason is not None]


def events(translation: Translation) -> list[dict[str, Any]]:
    return [orjson.loads(r.value) for r in translation.records if r.reason is None]


def rejected(source: str, body: Any, detail: str, t: Translator | None = None) -> None:
    """The record is one dead letter: its bytes untouched, reason `unmappable`, this detail."""
    raw = orjson.dumps(body)
    translation = (t or translator(source)).translate(raw)
    assert letters(translation) == [(raw, "unmappable", f"{source}: {detail}")]
    assert translation.records[0].topic == DEADLETTER
    assert translation.outcomes == {"unmappable": 1}


# --- The reproductions -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "shown"), [(["amount"], "['amount']"), ({"p": 1}, "{'p': 1}"), (7, "7"), (None, "None")]
)
def test_a_hubspot_property_change_without_a_string_property_name(name: Any, shown: str) -> None:
    """A list propertyName raised TypeError while the batch was being sorted, before any element was mapped."""
    batch = load("hubspot", "deal_won_1_created")
    bad = {**load("hubspot", "deal_won_2_amount")[0], "propertyName": name}
    translation = translator("hubspot").translate(orjson.dumps([*batch, bad]))
    assert letters(translation) == [
        (orjson.dumps(bad), "unmappable", f"hubspot: HubSpot property change has no string propertyName: {shown}")
    ]
    assert [e["type"] for e in events(translation)] == ["opportunity.created"]
    assert translation.outcomes == {"mapped": 1, "ignored": 3, "unmappable": 1}  # ignored: amount, currency, stage


@pytest.mark.parametrize(
    ("where", "status", "detail"),
    [
        ("data", ["won"], "Pipedrive deal data.status must be a string, got ['won']"),
        ("data", {"won": True}, "Pipedrive deal data.status must be a string, got {'won': True}"),
        ("data", 1, "Pipedrive deal data.status must be a string, got 1"),
        ("previous", ["open"], "Pipedrive deal previous.status must be a string, got ['open']"),
    ],
)
def test_a_pipedrive_status_that_is_a_list_or_an_object(where: str, status: Any, detail: str) -> None:
    """`_OUTCOMES.get(status)` raised TypeError (unhashable). The values the bad webhook carried are not kept:
    the win that follows still has the value of the last good change."""
    t = translator("pipedrive")
    for name in ("deal_won_1_create", "deal_won_2_value", "deal_won_3_stage"):
        t.translate(orjson.dumps(load("pipedrive", name)))
    bad = load("pipedrive", "deal_won_4_won")
    bad[where]["status"] = status
    bad["data"]["value"] = 999_999
    rejected("pipedrive", bad, detail, t)
    [won] = events(t.translate(orjson.dumps(load("pipedrive", "deal_won_4_won"))))
    assert (won["type"], won["amount"]) == ("opportunity.won", 1500)


def test_a_stripe_discount_id_that_is_a_list() -> None:
    """The legacy `discount.id` went into `not in seen` (a set): TypeError, unhashable list."""
    body = load("stripe", "old_04_updated_coupon")
    body["data"]["object"]["discount"]["id"] = ["di_1QmN4c2eZvKYlo2CLoyal20x"]
    rejected("stripe", body, "data.object.discount.id must be a non-empty string; got ['di_1QmN4c2eZvKYlo2CLoyal20x']")
    expanded = load("stripe", "basil_04_updated_coupon")
    expanded["data"]["object"]["discounts"][0]["id"] = {"id": "di_1"}
    rejected("stripe", expanded, "data.object.discounts[0].id must be a non-empty string; got {'id': 'di_1'}")
    listed = load("stripe", "basil_08_updated_discount_id_only")
    listed["data"]["object"]["discounts"] = [["di_1RbE1k2eZvKYlo2CPartner2"]]
    rejected(
        "stripe",
        listed,
        "data.object.discounts[0] must be a discount id or a Discount object; got ['di_1RbE1k2eZvKYlo2CPartner2']",
    )


def test_a_stripe_created_that_overflows_as_milliseconds() -> None:
    """`created * 1000` passed 2**64 and orjson could not write the event: TypeError."""
    body = load("stripe", "basil_02_updated_active")
    body["created"] = 10**17
    rejected("stripe", body, "created must be epoch seconds before the year 10000; got 100000000000000000")
    body["created"] = 253402300799  # 9999-12-31T23:59:59Z: mapped; too far ahead is the event validator's call
    [event] = events(translator("stripe").translate(orjson.dumps(body)))
    assert event["occurred_at"] == 253402300799000


@pytest.mark.parametrize(
    ("decimal", "detail"),
    [
        ("1e400", "must have at most 20 integer and 20 fractional digits; got '1e400'"),
        # Read exactly, this one was a billion-digit integer: the mapper hung instead of raising.
        ("1e999999999", "must have at most 20 integer and 20 fractional digits; got '1e999999999'"),
        ("1e-999999999", "must have at most 20 integer and 20 fractional digits; got '1e-999999999'"),
        ("NaN", "must be a decimal string >= 0; got 'NaN'"),
    ],
)
def test_a_stripe_decimal_amount_too_large_to_compute(decimal: str, detail: str) -> None:
    body = load("stripe", "basil_02_updated_active")
    body["data"]["object"]["items"]["data"][0]["price"]["unit_amount_decimal"] = decimal
    rejected("stripe", body, f"data.object.items.data[0].price.unit_amount_decimal {detail}")


def test_a_malformed_discount_event_is_not_remembered() -> None:
    """Remembered, a discount with a bad coupon made every later subscription naming it unmappable."""
    t = translator("stripe")
    bad = load("stripe", "basil_customer_discount_created")
    bad["data"]["object"]["coupon"] = {"duration": "forever", "percent_off": "20"}
    rejected("stripe", bad, "data.object.coupon.percent_off must be a finite number >= 0; got '20'", t)
    [event] = events(t.translate(orjson.dumps(load("stripe", "basil_08_updated_discount_id_only"))))
    assert event["mrr"] == 147.0  # 3 × 49 undiscounted: the discount id is unknown, as if the bad event never came


# --- Deep nesting -----------------------------------------------------------------------------------------------


def deep(depth: int) -> Any:
    value: Any = None
    for _ in range(depth):
        value = [value]
    return value


def test_an_element_nested_deeper_than_orjson_writes_is_dead_lettered_as_its_json() -> None:
    """orjson reads 1024 levels but writes 255: dead-lettering such an element of a batch raised TypeError."""
    batch = load("hubspot", "deal_lost")
    body = [*batch, {"subscriptionType": "deal.creation", "nested": deep(600)}]
    raw = json.dumps(body).encode()
    translation = translator("hubspot").translate(raw)
    expected = b'{"subscriptionType":"deal.creation","nested":' + b"[" * 600 + b"null" + b"]" * 600 + b"}"
    assert letters(translation) == [
        (expected, "unmappable", "hubspot: portalId must be a non-empty string or integer id, got None")
    ]
    assert [e["type"] for e in events(translation)] == ["opportunity.created", "opportunity.lost"]


def test_the_json_of_a_deep_value_is_what_orjson_would_write() -> None:
    assert element_json(deep(1000)) == b"[" * 1000 + b"null" + b"]" * 1000
    doc = {"a": [1, 2.5, "x\u00e9", {"b": None, "c": True}], "d": {}}
    assert element_json(doc) == orjson.dumps(doc)
    deep_doc: Any = doc
    for _ in range(300):
        deep_doc = {"k": deep_doc, "l": []}
    assert orjson.loads(element_json(deep_doc)) is not None  # valid JSON, written without recursion


# --- Isolation of failures the mappers do not foresee -------------------------------------------------------------


class Boom(RuntimeError):
    pass


def test_an_element_the_mapper_fails_on_is_a_processing_error_and_the_batch_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    t = translator("hubspot")
    assert isinstance(t.mapper, HubSpotMapper)
    real = t.mapper.map

    def flaky(element: Any) -> list[dict[str, Any]]:
        if element.get("eventId") == 1781230117:
            raise Boom("mapper defect")
        return real(element)

    t.mapper.map = flaky  # type: ignore[method-assign]
    body = load("hubspot", "deal_won_3_stages")
    with caplog.at_level(logging.ERROR, logger="revpulse.connectors.translate"):
        translation = t.translate(orjson.dumps(body))
    failed = next(element for element in body if element["eventId"] == 1781230117)
    assert letters(translation) == [
        (orjson.dumps(failed), "processing_error", "hubspot: internal error: Boom: mapper defect")
    ]
    assert translation.outcomes == {"processing_error": 1, "ignored": 1, "mapped": 1}
    [logged] = caplog.records
    assert logged.levelno == logging.ERROR and logged.exc_info is not None and logged.exc_info[0] is Boom


def test_a_single_element_record_the_mapper_fails_on_keeps_its_bytes(caplog: pytest.LogCaptureFixture) -> None:
    t = translator("salesforce")

    def broken(element: Any) -> list[dict[str, Any]]:
        raise KeyError("surprise")

    t.mapper.map = broken  # type: ignore[union-attr, method-assign]
    raw = (FIXTURES / "salesforce" / "won_1_create.json").read_bytes()
    with caplog.at_level(logging.ERROR, logger="revpulse.connectors.translate"):
        translation = t.translate(raw)
    assert letters(translation) == [(raw, "processing_error", "salesforce: internal error: KeyError: 'surprise'")]
    assert translation.outcomes == {"processing_error": 1}
    assert len(caplog.records) == 1


def test_a_record_the_mapper_cannot_split_is_a_processing_error_whole() -> None:
    t = translator("pipedrive")

    def broken(body: Any) -> list[Any]:
        raise RecursionError("too deep")

    t.mapper.elements = broken  # type: ignore[union-attr, method-assign]
    raw = orjson.dumps([load("pipedrive", "deal_won_1_create")])
    translation = t.translate(raw)
    assert letters(translation) == [(raw, "processing_error", "pipedrive: internal error: RecursionError: too deep")]
    assert translation.outcomes == {"processing_error": 1}


def test_a_mapper_output_orjson_cannot_write_is_a_processing_error() -> None:
    t = translator("stripe")
    t.mapper.map = lambda element: [{"type": "subscription.canceled", "occurred_at": 2**64}]  # type: ignore[union-attr, method-assign]
    raw = (FIXTURES / "stripe" / "basil_07_deleted.json").read_bytes()
    translation = t.translate(raw)
    assert letters(translation) == [
        (raw, "processing_error", "stripe: internal error: TypeError: Integer exceeds 64-bit range")
    ]


# --- Values the mappers must survive ------------------------------------------------------------------------------


def hubspot_amount(value: Any) -> list[dict[str, Any]] | str:
    """The win after an amount change to `value`, or the change's Unmappable detail."""
    mapper = HubSpotMapper()
    for element in load("hubspot", "deal_won_1_created"):
        mapper.map(element)
    change = {**load("hubspot", "deal_won_2_amount")[0], "propertyValue": value}
    try:
        mapper.map(change)
    except Unmappable as exc:
        return exc.detail
    return [e for element in mapper.elements(load("hubspot", "deal_won_3_stages")) for e in mapper.map(element)]


@pytest.mark.parametrize(("value", "amount"), [("2e10", 2e10), ("1e300", 1e300), (2e10, 2e10), (2**64 - 1, 2**64 - 1)])
def test_huge_amounts_are_mapped_and_left_to_the_event_validator(value: Any, amount: float) -> None:
    [won] = hubspot_amount(value)
    assert won["amount"] == amount


@pytest.mark.parametrize(
    ("value", "detail"),
    [
        ("1e400", "amount '1e400' is not a finite amount ≥ 0"),
        ("NaN", "amount 'NaN' is not a finite amount ≥ 0"),
        ("-inf", "amount '-inf' is not a finite amount ≥ 0"),
        (True, "amount must be a number, got True"),
        ([1], "amount must be a number, got [1]"),
        ("9" * 400, f"amount {preview('9' * 400)} is not a finite amount ≥ 0"),
    ],
)
def test_amounts_that_are_no_finite_number_are_unmappable(value: Any, detail: str) -> None:
    assert hubspot_amount(value) == detail
    assert len(detail) < 200


@pytest.mark.parametrize(
    ("occurred_at", "expected"),
    [
        ("9999-12-31T23:59:59Z", 253402300799000),
        ("9999-12-31T23:59:59.999-00:00", 253402300799999),
        ("9999-12-31T23:59:59-23:59", "occurredAt '9999-12-31T23:59:59-23:59' is out of range"),  # 10000-01-01Z
        ("0001-01-01T00:00:00Z", -62135596800000),
        (-62135596800000, -62135596800000),
        (253402300799999, 253402300799999),
        ("0001-01-01T00:00:00+01:00", "occurredAt '0001-01-01T00:00:00+01:00' is out of range"),
        (253402300800000, "occurredAt 253402300800000 is out of range"),
        (2**64 - 1, "occurredAt 18446744073709551615 is out of range"),
        (1e12, "occurredAt must be epoch milliseconds or an ISO 8601 string, got 1000000000000.0"),
        ("2024-02-30T00:00:00Z", "occurredAt '2024-02-30T00:00:00Z' is not an ISO 8601 time"),
    ],
)
def test_times_in_the_years_0001_and_9999(occurred_at: Any, expected: int | str) -> None:
    element = {**load("hubspot", "contact_lifecycle")[0], "occurredAt": occurred_at}
    try:
        [event] = HubSpotMapper().map(element)
    except Unmappable as exc:
        assert isinstance(expected, str) and exc.detail.startswith(expected)
    else:
        assert event["occurred_at"] == expected


def test_ids_longer_than_the_spec_allows_are_unmappable() -> None:
    element = {**load("hubspot", "contact_lifecycle")[0], "objectId": "7" * 10_000}
    with pytest.raises(Unmappable) as caught:
        HubSpotMapper().map(element)
    assert caught.value.detail == f"objectId {preview('7' * 10_000)} is longer than 256 characters"
    assert len(caught.value.detail) < 300


def test_a_huge_value_makes_a_short_detail() -> None:
    body = load("stripe", "basil_02_updated_active")
    body["data"]["object"]["status"] = "x" * 1_000_000
    [(_, reason, detail)] = letters(translator("stripe").translate(orjson.dumps(body)))
    assert reason == "unmappable" and detail is not None and len(detail) < DETAIL_LIMIT
    assert detail.startswith("stripe: data.object.status is not a subscription status RevPulse knows; got 'xxx")


def sf_update(**fields: Any) -> dict[str, Any]:
    header = {
        "entityName": "Opportunity",
        "recordIds": ["0065e00000BxT3mAAF"],
        "changeType": "UPDATE",
        "transactionKey": "tx",
        "sequenceNumber": 1,
        "commitTimestamp": 1000,
        "changedFields": list(fields),
    }
    return {"ChangeEventHeader": header, **fields}


@pytest.mark.parametrize(
    ("bad", "detail"),
    [
        ({"Amount": True}, "Amount must be a number, got True"),
        ({"Amount": "lots"}, "Amount 'lots' is not a number"),
        ({"StageName": ["Closed Won"]}, "StageName must be a string, got ['Closed Won']"),
        ({"IsWon": "true"}, "IsWon must be a boolean, got 'true'"),
        ({"AccountId": {"Id": "001"}}, "AccountId must be a non-empty string or integer id, got {'Id': '001'}"),
    ],
)
def test_a_salesforce_change_with_one_bad_value_changes_nothing(bad: dict[str, Any], detail: str) -> None:
    """The values are checked before any is kept: the close in the bad change is not half-applied."""
    mapper = SalesforceMapper()
    for name in ("won_1_create", "won_2_amount"):
        mapper.map(load("salesforce", name))
    closing = {"IsClosed": True, "IsWon": True, "StageName": "Closed Won", "Amount": 1.0}
    with pytest.raises(Unmappable) as caught:
        mapper.map(sf_update(**(closing | bad)))
    assert caught.value.detail == detail
    [won] = mapper.map(sf_update(IsClosed=True, IsWon=True, StageName="Closed Won"))
    assert (won["type"], won["amount"]) == ("opportunity.won", 65000.0)  # won_2_amount's, not the bad 1.0
