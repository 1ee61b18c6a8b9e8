"""Stripe webhook bodies → canonical SPEC §1 events: exact outputs, MRR worked out by hand in the comments."""

from __future__ import annotations

import copy
import json
from typing import Any

import orjson
import pytest

from revpulse.connectors.base import Unmappable
from revpulse.connectors.stripe import StripeMapper
from revpulse.schemas.models import Event, EventDecoder
from tests.support.paths import FIXTURES as FIXTURES_DIR

FIXTURES = FIXTURES_DIR / "stripe"

OLD_SUB = {"account_id": "cus_RXqYb8nKpW2mZa", "subscription_id": "sub_1QeHxk2eZvKYlo2CmS0ld001", "segment": "smb"}
BASIL_SUB = {
    "account_id": "cus_SQ2mH7vBnT4kXe",
    "subscription_id": "sub_1RVb8g2eZvKYlo2CbasilSub",
    "segment": "mid_market",
}


def load(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / f"{name}.json").read_text())


def map_all(*bodies: dict[str, Any], mapper: StripeMapper | None = None) -> list[dict[str, Any]]:
    """Every canonical event of the bodies, mapped in order by one mapper."""
    mapper = mapper or StripeMapper()
    return [event for body in bodies for element in mapper.elements(body) for event in mapper.map(element)]


def mrr(body: dict[str, Any], mapper: StripeMapper | None = None) -> float:
    (event,) = map_all(body, mapper=mapper)
    return event["mrr"]


def sub_of(body: dict[str, Any]) -> dict[str, Any]:
    return body["data"]["object"]


def first_price(body: dict[str, Any]) -> dict[str, Any]:
    return sub_of(body)["items"]["data"][0]["price"]


def unmappable(body: Any) -> str:
    mapper = StripeMapper()
    with pytest.raises(Unmappable) as caught:
        for element in mapper.elements(body):
            mapper.map(element)
    return caught.value.detail


def test_a_webhook_body_is_one_element() -> None:
    body = load("charge_succeeded")
    assert StripeMapper().elements(body) == [body]
    assert StripeMapper.source == "stripe"


def expected(
    event_id: str, kind: str, occurred_at: int, sub: dict[str, str], mrr: float | None = None
) -> dict[str, Any]:
    """A canonical subscription event; `mrr` (always with currency USD here) unless it is a cancel."""
    event = {"event_id": event_id, "type": kind, "occurred_at": occurred_at} | sub
    return event if mrr is None else event | {"mrr": mrr, "currency": "USD"}


LIFECYCLE = ["created_trialing", "updated_active", "updated_quantity", "updated_coupon", "paused", "resumed", "deleted"]


def test_old_shape_lifecycle() -> None:
    events = map_all(*(load(f"old_{n:02}_{name}") for n, name in enumerate(LIFECYCLE, 1)))
    started, updated, canceled = "subscription.started", "subscription.updated", "subscription.canceled"
    assert events == [
        # Trialing: not paying yet, MRR 0.
        expected("evt_1QeHxl2eZvKYlo2CsubCreated", started, 1736157600000, OLD_SUB, 0.0),
        # Trial converts: 3 seats × $49.00/month = 147.00.
        expected("evt_1QiJ0a2eZvKYlo2CtrialEnded", updated, 1737367200000, OLD_SUB, 147.0),
        # 5 seats × 49.00 = 245.00.
        expected("evt_1QlM3b2eZvKYlo2CseatsUp5x", updated, 1738144800000, OLD_SUB, 245.0),
        # Legacy `discount` LOYAL20, 20 % forever (also listed by id in `discounts`: applied once): 245 × 0.8 = 196.
        expected("evt_1QmN4c2eZvKYlo2Ccoupon20p", updated, 1738404000000, OLD_SUB, 196.0),
        # customer.subscription.paused, status paused: 0.
        expected("evt_1QsP5d2eZvKYlo2CsubPaused1", updated, 1740132000000, OLD_SUB, 0.0),
        # Resumed, coupon still on: 196.00.
        expected("evt_1QvR6e2eZvKYlo2CsubResumed", updated, 1740996000000, OLD_SUB, 196.0),
        # Deleted: canceled, no price.
        expected("evt_1R0S7f2eZvKYlo2CsubDeleted", canceled, 1744452000000, OLD_SUB),
    ]


def test_basil_shape_lifecycle() -> None:
    events = map_all(*(load(f"basil_{n:02}_{name}") for n, name in enumerate(LIFECYCLE, 1)))
    started, updated, canceled = "subscription.started", "subscription.updated", "subscription.canceled"
    assert events == [
        expected("evt_1RVb8h2eZvKYlo2CbCreated1", started, 1748858400000, BASIL_SUB, 0.0),
        # 2 seats × $49.00 = 98.00.
        expected("evt_1RYc9i2eZvKYlo2CbActive01", updated, 1749463200000, BASIL_SUB, 98.0),
        # 3 seats × 49.00 = 147.00.
        expected("evt_1RaD0j2eZvKYlo2CbSeatsUp3", updated, 1749895200000, BASIL_SUB, 147.0),
        # Expanded Discount in `discounts` (PARTNER20, 20 % forever): 3 × 49 × 0.8 = 117.60.
        expected("evt_1RbE1k2eZvKYlo2CbCoupon20", updated, 1750068000000, BASIL_SUB, 117.6),
        expected("evt_1RgF2l2eZvKYlo2CbPaused01", updated, 1751364000000, BASIL_SUB, 0.0),
        expected("evt_1RiG3m2eZvKYlo2CbResumed1", updated, 1751882400000, BASIL_SUB, 117.6),
        expected("evt_1RsH4n2eZvKYlo2CbDeleted1", canceled, 1755770400000, BASIL_SUB),
    ]


def test_yearly_plan_with_interval_count_ignores_a_once_coupon() -> None:
    # €2,280.00 every 2 years = 2280 / 24 = 95.00 a month; WELCOME50 is `once`, so not part of the run-rate.
    assert map_all(load("yearly_interval_count_created")) == [
        {
            "event_id": "evt_1QxYr42eZvKYlo2CyearlyNew",
            "type": "subscription.started",
            "occurred_at": 1740823200000,
            "account_id": "cus_RrTw5kLmN8pQzY",
            "subscription_id": "sub_1QxYr22eZvKYlo2CbiYearly",
            "segment": "enterprise",
            "mrr": 95.0,
            "currency": "EUR",
        }
    ]


def test_weekly_plan_with_forever_amount_off_and_an_expanded_customer() -> None:
    # 2 boxes × £15.00/week − £5.00 off each (weekly) invoice = £25.00/week; × 52/12 = 108.3333… → 108.333333.
    # The customer is expanded: account_id is its id, segment its metadata.segment.
    assert map_all(load("weekly_amount_off_created")) == [
        {
            "event_id": "evt_1ReWk32eZvKYlo2CweeklyNew",
            "type": "subscription.started",
            "occurred_at": 1750672800000,
            "account_id": "cus_SX9kP2qRt7VbNm",
            "subscription_id": "sub_1ReWk12eZvKYlo2CbWeekly1",
            "segment": "smb",
            "mrr": 108.333333,
            "currency": "GBP",
        }
    ]


def test_zero_decimal_currency() -> None:
    # JPY amounts are whole yen: 3 seats × ¥9,800 = ¥29,400 (not 294.00). No segment in metadata: none emitted.
    assert map_all(load("jpy_zero_decimal_updated")) == [
        {
            "event_id": "evt_1R8Jp22eZvKYlo2CjpySeats3",
            "type": "subscription.updated",
            "occurred_at": 1743674400000,
            "account_id": "cus_S2kLm9NpQr4StU",
            "subscription_id": "sub_1R8Jp12eZvKYlo2CjpyMonth",
            "mrr": 29400.0,
            "currency": "JPY",
        }
    ]


def test_three_decimal_currency() -> None:
    body = load("basil_03_updated_quantity")
    sub_of(body)["currency"] = "kwd"
    first_price(body).update(currency="kwd", unit_amount=12500, unit_amount_decimal="12500")
    assert mrr(body) == 37.5  # 3 × 12.500 KWD (minor unit = 1/1000)


@pytest.mark.parametrize(
    ("interval", "count", "expected"),
    [
        ("day", 1, 30.416667),  # $1.00/day × 365/12 = 30.41666… → 30.416667
        ("day", 7, 4.345238),  # $1.00 per 7 days: 365/84 = 4.3452380…
        ("week", 2, 2.166667),  # $1.00 per 2 weeks: 52/24 = 2.1666…
        ("month", 3, 0.333333),  # $1.00 per quarter
        ("year", 1, 0.083333),  # $1.00 per year: 1/12
    ],
)
def test_interval_normalisation(interval: str, count: int, expected: float) -> None:
    body = load("basil_03_updated_quantity")
    sub_of(body)["items"]["data"][0]["quantity"] = 1
    first_price(body).update(unit_amount=100, unit_amount_decimal="100")
    first_price(body)["recurring"].update(interval=interval, interval_count=count)
    assert mrr(body) == expected


def test_unit_amount_decimal_wins_over_unit_amount() -> None:
    body = load("basil_03_updated_quantity")
    first_price(body).update(unit_amount=4900, unit_amount_decimal="4900.5")
    assert mrr(body) == 147.015  # 3 × 49.005


def test_no_float_drift() -> None:
    # 3 × $0.10 with 33.33 % off: 0.30 × 0.6667 = 0.20001 exactly (in floats: 0.20001000000000005).
    body = load("basil_04_updated_coupon")
    first_price(body).update(unit_amount=10, unit_amount_decimal="10")
    sub_of(body)["discounts"][0]["coupon"]["percent_off"] = 33.33
    assert mrr(body) == 0.20001


def test_legacy_plan_only_items() -> None:
    # Very old API versions: items carry only a Plan (amount/interval on the plan itself). 5 × 49 = 245.
    body = load("old_03_updated_quantity")
    del sub_of(body)["items"]["data"][0]["price"]
    assert mrr(body) == 245.0


def test_several_items_and_a_metered_one() -> None:
    # 3 × $49/month + 1 × $600/year (= 50/month) + a metered item (usage in arrears: not run-rate) = 197.00.
    body = load("basil_03_updated_quantity")
    items = sub_of(body)["items"]["data"]
    yearly = copy.deepcopy(items[0])
    yearly.update(id="si_yearly", quantity=1)
    yearly["price"].update(unit_amount=60000, unit_amount_decimal="60000")
    yearly["price"]["recurring"]["interval"] = "year"
    metered = copy.deepcopy(items[0])
    metered["id"] = "si_metered"
    del metered["quantity"]
    metered["price"]["recurring"]["usage_type"] = "metered"
    items += [yearly, metered]
    assert mrr(body) == 197.0


def test_tiered_prices() -> None:
    body = load("basil_03_updated_quantity")
    sub_of(body)["items"]["data"][0]["quantity"] = 12
    price = first_price(body)
    price.update(billing_scheme="tiered", unit_amount=None, unit_amount_decimal=None, tiers_mode="graduated")
    price["tiers"] = [
        {"up_to": 5, "unit_amount": 1000, "unit_amount_decimal": "1000", "flat_amount": 2000},
        {"up_to": 10, "unit_amount": 800, "unit_amount_decimal": "800", "flat_amount": None},
        {"up_to": None, "unit_amount": 500, "unit_amount_decimal": "500", "flat_amount": None},
    ]
    # Graduated, 12 units: 20 + 5 × 10 + 5 × 8 + 2 × 5 = 120.00.
    assert mrr(body) == 120.0
    # Volume, 12 units: all at the last tier's price, 12 × 5 = 60.00.
    price["tiers_mode"] = "volume"
    assert mrr(body) == 60.0
    # Webhooks carry tiers only when expanded: without them the price is unknown.
    price["tiers"] = None
    assert unmappable(body) == (
        "data.object.items.data[0].price.tiers is required for a tiered price (expand items.data.price.tiers); got None"
    )


def test_transform_quantity() -> None:
    # 12 licences sold in packs of 5, rounded up: 3 packs × $49 = 147.00.
    body = load("basil_03_updated_quantity")
    sub_of(body)["items"]["data"][0]["quantity"] = 12
    first_price(body)["transform_quantity"] = {"divide_by": 5, "round": "up"}
    assert mrr(body) == 147.0


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ("active", 147.0),
        ("past_due", 147.0),  # Stripe is still retrying: not churn yet
        ("trialing", 0.0),
        ("incomplete", 0.0),
        ("incomplete_expired", 0.0),
        ("paused", 0.0),
        ("unpaid", 0.0),
        ("canceled", 0.0),
    ],
)
def test_statuses(status: str, expected: float) -> None:
    body = load("basil_03_updated_quantity")
    sub_of(body)["status"] = status
    assert mrr(body) == expected


def test_unknown_status_is_unmappable_rather_than_churn() -> None:
    body = load("basil_03_updated_quantity")
    sub_of(body)["status"] = "frozen"
    assert unmappable(body) == "data.object.status is not a subscription status RevPulse knows; got 'frozen'"


def test_pause_collection_gives_zero() -> None:
    body = load("basil_03_updated_quantity")
    sub_of(body)["pause_collection"] = {"behavior": "void", "resumes_at": None}
    assert mrr(body) == 0.0


def test_repeating_coupon_is_not_applied() -> None:
    body = load("basil_04_updated_coupon")
    sub_of(body)["discounts"][0]["coupon"].update(duration="repeating", duration_in_months=3)
    sub_of(body)["discounts"][0]["end"] = 1757844000
    assert mrr(body) == 147.0


def test_item_discount_then_subscription_discount() -> None:
    # Item: 3 × 49 = 147 − $7 forever (item discount) = 140; then the subscription's 20 % off: 112.00.
    body = load("basil_04_updated_coupon")
    item_coupon = copy.deepcopy(sub_of(body)["discounts"][0])
    item_coupon["id"] = "di_item"
    item_coupon["coupon"].update(id="SEVENOFF", percent_off=None, amount_off=700, currency="usd")
    sub_of(body)["items"]["data"][0]["discounts"] = [item_coupon]
    assert mrr(body) == 112.0


def test_amount_off_never_makes_mrr_negative() -> None:
    body = load("basil_04_updated_coupon")
    sub_of(body)["discounts"][0]["coupon"].update(percent_off=None, amount_off=50000, currency="usd")
    assert mrr(body) == 0.0


def test_amount_off_in_another_currency_uses_currency_options() -> None:
    # A EUR coupon with a USD option of $10.00 off each monthly invoice: 147 − 10 = 137.00.
    body = load("basil_04_updated_coupon")
    coupon = sub_of(body)["discounts"][0]["coupon"]
    coupon.update(percent_off=None, amount_off=900, currency="eur", currency_options={"usd": {"amount_off": 1000}})
    assert mrr(body) == 137.0
    del coupon["currency_options"]
    assert unmappable(body) == (
        "data.object.discounts[0].coupon.currency is not USD and currency_options has no usd; got 'eur'"
    )


def test_newer_discount_shape_with_source_coupon() -> None:
    # Later API versions put the coupon under `source.coupon`.
    body = load("basil_04_updated_coupon")
    discount = sub_of(body)["discounts"][0]
    discount["source"] = {"type": "coupon", "coupon": discount.pop("coupon")}
    assert mrr(body) == 117.6


def test_unexpanded_discount_ids_resolve_from_earlier_discount_events() -> None:
    id_only = load("basil_08_updated_discount_id_only")
    # Never seen: left out, MRR is the undiscounted 3 × 49 = 147.00.
    assert mrr(id_only) == 147.0
    # After the customer.discount.created event (itself no canonical event): 147 × 0.8 = 117.60.
    mapper = StripeMapper()
    assert map_all(load("basil_customer_discount_created"), mapper=mapper) == []
    assert mrr(id_only, mapper) == 117.6
    # customer.discount.deleted forgets it.
    deleted = load("basil_customer_discount_created")
    deleted.update(id="evt_deleted", type="customer.discount.deleted")
    assert map_all(deleted, mapper=mapper) == []
    assert mrr(id_only, mapper) == 147.0


def test_coupon_ids_resolve_from_earlier_coupon_events() -> None:
    body = load("basil_04_updated_coupon")
    discount = sub_of(body)["discounts"][0]
    coupon = discount.pop("coupon")
    discount["source"] = {"type": "coupon", "coupon": coupon["id"]}
    assert mrr(body) == 147.0
    mapper = StripeMapper()
    created = load("charge_succeeded")
    created.update(id="evt_coupon", type="coupon.created", data={"object": coupon})
    assert map_all(created, mapper=mapper) == []
    assert mrr(body, mapper) == 117.6


def clover_discount(coupon: Any) -> dict[str, Any]:
    """basil_04's subscription discount in the 2025-09-30.clover shape: `coupon` gone, `source` = {type, coupon}.

    Shapes from Stripe's API reference, The Discount object (https://docs.stripe.com/api/discounts/object):
    "source.coupon (string, nullable, expandable)", e.g. `"source": {"type": "coupon", "coupon": "nVJYDOag"}`, and
    the changelog "Adds the Discount source property and removes the Discount coupon property"
    (https://docs.stripe.com/changelog/clover/2025-09-30/add-discount-source-property): the coupon is no longer
    auto-expanded, "including within event notifications". The SDKs type it `string | Coupon | null`.
    """
    body = load("basil_04_updated_coupon")
    body["api_version"] = "2025-09-30.clover"
    discount = sub_of(body)["discounts"][0]
    del discount["coupon"]
    discount["source"] = {"type": "coupon", "coupon": coupon}
    return body


def test_a_clover_discount_whose_source_coupon_is_null_falls_back_to_the_undiscounted_price() -> None:
    """It dead-lettered the whole subscription ("source.coupon is required"): its MRR, and later its churn, lost."""
    assert mrr(clover_discount(None)) == 147.0  # 3 × 49, undiscounted: the discount names no coupon
    assert mrr(clover_discount("PARTNER20")) == 147.0  # an id never seen in a coupon.* event: the same rule
    assert mrr(clover_discount(load("basil_04_updated_coupon")["data"]["object"]["discounts"][0]["coupon"])) == 117.6
    legacy = load("old_04_updated_coupon")
    sub_of(legacy)["discount"]["coupon"] = None  # the pre-basil shape with its coupon null: the same rule
    assert mrr(legacy) == 245.0  # 5 × 49 undiscounted (196.00 with its 20 % coupon)


def test_a_clover_discount_event_whose_source_coupon_is_null_is_not_dead_lettered() -> None:
    event = load("basil_customer_discount_created")
    event["api_version"] = "2025-09-30.clover"
    discount = event["data"]["object"]
    del discount["coupon"]
    discount["source"] = {"type": "coupon", "coupon": None}
    mapper = StripeMapper()
    assert map_all(event, mapper=mapper) == []  # remembered: a discount that names no coupon discounts nothing
    assert mrr(load("basil_08_updated_discount_id_only"), mapper) == 147.0
    discount["source"]["coupon"] = {"duration": "forever", "percent_off": "20"}  # a malformed coupon still is refused
    assert unmappable(event) == "data.object.source.coupon.percent_off must be a finite number >= 0; got '20'"


def test_invoice_paid_for_a_cycle_is_a_renewal() -> None:
    # occurred_at is the event's `created`; the segment comes from the subscription metadata copied on the invoice.
    assert map_all(load("invoice_paid_cycle_old"), load("invoice_paid_cycle_basil")) == [
        expected("evt_1QnX8o2eZvKYlo2CinvPaidCy", "subscription.renewed", 1740049201000, OLD_SUB),
        expected("evt_1RjK9p2eZvKYlo2CbInvPaid1", "subscription.renewed", 1752058801000, BASIL_SUB),
    ]


def test_invoice_subscription_from_line_items() -> None:
    old = load("invoice_paid_cycle_old")
    del sub_of(old)["subscription"]
    basil = load("invoice_paid_cycle_basil")
    sub_of(basil)["parent"] = None
    (old_event, basil_event) = map_all(old, basil)
    assert old_event["subscription_id"] == OLD_SUB["subscription_id"]  # lines.data[0].subscription
    assert basil_event["subscription_id"] == BASIL_SUB["subscription_id"]  # ….parent.subscription_item_details
    assert "segment" not in basil_event  # the metadata snapshot was on the parent


@pytest.mark.parametrize("name", ["invoice_paid_subscription_create", "charge_succeeded"])
def test_events_revpulse_does_not_use(name: str) -> None:
    assert map_all(load(name)) == []


@pytest.mark.parametrize(
    ("name", "detail"),
    [
        ("malformed_no_type", "type is required; got None"),
        ("malformed_subscription_no_customer", "data.object.customer is required (the account); got None"),
        (
            "malformed_price_string_amount",
            "data.object.items.data[0].price.unit_amount must be an integer >= 0; got '4900'",
        ),
        (
            "malformed_invoice_no_subscription",
            "a subscription_cycle invoice names no subscription (looked at data.object.subscription, "
            "parent.subscription_details.subscription and the lines' subscription fields)",
        ),
    ],
)
def test_malformed_fixtures(name: str, detail: str) -> None:
    assert unmappable(load(name)) == detail


def test_not_a_stripe_event() -> None:
    assert unmappable([load("charge_succeeded")]) == "a Stripe event must be a JSON object; got list"
    no_id = load("charge_succeeded")
    del no_id["id"]
    assert unmappable(no_id) == "id is required; got None"


def test_other_malformed_subscriptions() -> None:
    truncated = load("basil_03_updated_quantity")
    sub_of(truncated)["items"]["has_more"] = True
    assert unmappable(truncated) == (
        "data.object.items.has_more is true: the webhook lists only some items, so MRR cannot be summed; got True"
    )
    bad_interval = load("basil_03_updated_quantity")
    first_price(bad_interval)["recurring"]["interval"] = "fortnight"
    assert unmappable(bad_interval) == (
        "data.object.items.data[0].price.recurring.interval must be one of day, week, month, year; got 'fortnight'"
    )
    mixed = load("basil_03_updated_quantity")
    first_price(mixed)["currency"] = "eur"
    assert unmappable(mixed) == (
        "data.object.items.data[0].price.currency differs from the subscription currency USD; got 'eur'"
    )
    no_time = load("basil_07_deleted")
    no_time["created"] = "2025-08-21"
    assert unmappable(no_time) == "created must be an integer >= 0; got '2025-08-21'"


def test_every_emitted_event_passes_the_revpulse_validator() -> None:
    decoder = EventDecoder("USD", {"EUR": 1.08, "GBP": 1.27, "JPY": 0.0067}, ("smb", "mid_market", "enterprise"))
    bodies = [json.loads(path.read_text()) for path in sorted(FIXTURES.glob("*.json")) if "malformed" not in path.name]
    events = map_all(*bodies)
    assert len(events) == 20
    for event in events:
        ((decoded, _),) = decoder.decode_record(orjson.dumps(event))
        assert isinstance(decoded, Event), (event, decoded)
        assert decoded.event_id == event["event_id"]
        assert decoded.t == event["occurred_at"] * 1000
