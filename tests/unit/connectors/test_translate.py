"""Raw records → input-topic records and dead letters, per source (no Kafka)."""

from __future__ import annotations

import json

import orjson

from revpulse.connectors.translate import Translator, translators
from revpulse.settings import Settings
from tests.support.paths import FIXTURES as FIXTURES_DIR

FIXTURES = FIXTURES_DIR
SETTINGS = Settings.from_env({})


def fixture(source: str, name: str) -> bytes:
    return (FIXTURES / source / f"{name}.json").read_bytes()


def translator(source: str) -> Translator:
    return next(t for t in translators(SETTINGS).values() if t.source == source)


def test_one_translator_per_raw_topic_and_the_cdc_topic() -> None:
    assert {topic: t.source for topic, t in translators(SETTINGS).items()} == {
        "ingest.raw.stripe": "stripe",
        "ingest.raw.hubspot": "hubspot",
        "ingest.raw.pipedrive": "pipedrive",
        "ingest.raw.events": "events",
        "salesforce.cdc": "salesforce",
    }


def test_a_stripe_event_goes_to_billing_keyed_by_customer() -> None:
    translation = translator("stripe").translate(fixture("stripe", "basil_02_updated_active"))
    [record] = translation.records
    event = orjson.loads(record.value)
    assert (record.topic, record.key, record.reason) == ("billing.events", event["account_id"].encode(), None)
    assert (event["type"], event["mrr"]) == ("subscription.updated", 98.0)
    assert translation.outcomes == {"mapped": 1}


def test_a_type_revpulse_does_not_use_is_counted_as_ignored() -> None:
    translation = translator("stripe").translate(fixture("stripe", "charge_succeeded"))
    assert (translation.records, translation.outcomes) == ([], {"ignored": 1})


def test_an_unmappable_single_event_is_dead_lettered_with_its_bytes_untouched() -> None:
    raw = fixture("stripe", "malformed_subscription_no_customer")
    [letter] = translator("stripe").translate(raw).records
    assert (letter.topic, letter.value, letter.reason) == ("revpulse.deadletter", raw, "unmappable")
    assert letter.detail is not None and letter.detail.startswith("stripe: ")


def test_not_json_is_dead_lettered_as_invalid_json() -> None:
    translation = translator("pipedrive").translate(b"{nope")
    [letter] = translation.records
    assert (letter.value, letter.reason, translation.outcomes) == (b"{nope", "invalid_json", {"invalid_json": 1})


def test_a_bad_element_of_a_hubspot_batch_is_dead_lettered_alone_as_its_json() -> None:
    good = json.loads(fixture("hubspot", "deal_lost"))
    bad = {"eventId": 7, "subscriptionType": "deal.propertyChange", "occurredAt": "yesterday"}
    translation = translator("hubspot").translate(orjson.dumps([*good, bad]))
    letters = [r for r in translation.records if r.reason is not None]
    events = [orjson.loads(r.value) for r in translation.records if r.reason is None]
    assert [letter.value for letter in letters] == [orjson.dumps(bad)]
    assert [e["type"] for e in events] == ["opportunity.created", "opportunity.lost"]
    assert translation.outcomes["unmappable"] == 1


def test_canonical_events_are_routed_as_replay_routes_them() -> None:
    body = orjson.dumps(
        [
            {"event_id": "e1", "type": "lead.created", "occurred_at": 0, "account_id": "a", "lead_id": "l"},
            {"event_id": "e2", "type": "no.such", "occurred_at": 0, "account_id": "a"},
        ]
    )
    translation = translator("events").translate(body)
    assert [(r.topic, r.reason) for r in translation.records] == [
        ("revpulse.deadletter", "unknown_type"),
        ("crm.events", None),
    ]
    assert translation.outcomes == {"unmappable": 1, "mapped": 1}


def test_replaying_a_topic_through_a_fresh_translator_rebuilds_the_state() -> None:
    """What the agent relies on: the output is a function of the records so far, so mapping them again from
    the start leaves the mapper where it was; without them, the win would lose its amount."""
    records = [fixture("hubspot", f"deal_won_{n}") for n in ("1_created", "2_amount", "3_stages")]
    rebuilt = translator("hubspot")
    for record in records[:-1]:
        rebuilt.translate(record)
    assert won_amounts(rebuilt, records[-1]) == [15000.5]  # the last known amount, from the second record
    assert won_amounts(translator("hubspot"), records[-1]) == [None]


def won_amounts(translator: Translator, record: bytes) -> list[float | None]:
    events = [orjson.loads(r.value) for r in translator.translate(record).records if r.reason is None]
    return [e.get("amount") for e in events if e["type"] == "opportunity.won"]
