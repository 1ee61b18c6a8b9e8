"""The JSON Schemas in `schemas/` (SPEC §1 events, SPEC §5 metric record) are valid and say what the SPEC says."""

from __future__ import annotations

import copy
import json
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.exceptions import Unresolvable

from tests.support.paths import ROOT

SCHEMAS_DIR = ROOT / "schemas"
EVENTS_DIR = SCHEMAS_DIR / "events"
COMMON = "common"
BASE_URI = "https://revpulse.dev/schemas/"

# SPEC §1, hard-coded on purpose: adding or renaming an event type must be a deliberate change here too.
EVENT_TYPES = (
    "account.updated",
    "lead.created",
    "lead.stage_changed",
    "opportunity.created",
    "opportunity.won",
    "opportunity.lost",
    "subscription.started",
    "subscription.updated",
    "subscription.canceled",
    "subscription.renewed",
    "product.signup",
    "product.trial_started",
    "product.activated",
    "product.usage",
    "marketing.spend",
)

Event = dict[str, Any]


def _load(path: Path) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return document


def _schema_files() -> list[Path]:
    return sorted([*SCHEMAS_DIR.glob("*.schema.json"), *EVENTS_DIR.glob("*.schema.json")])


@cache
def _registry() -> Registry[Any]:
    """Every schema on disk, under its `$id`; no retrieval, so a `$ref` outside `schemas/` is unresolvable."""
    resources = [(doc["$id"], Resource.from_contents(doc)) for doc in map(_load, _schema_files())]
    return Registry().with_resources(resources)


@cache
def _validator(name: str) -> Draft202012Validator:
    """The validator of `schemas/events/<name>.schema.json`, or of `schemas/<name>.schema.json`."""
    path = EVENTS_DIR / f"{name}.schema.json"
    if not path.exists():
        path = SCHEMAS_DIR / f"{name}.schema.json"
    return Draft202012Validator(_load(path), registry=_registry())


def _errors(name: str, instance: Any) -> list[str]:
    return [error.message for error in _validator(name).iter_errors(instance)]


def _event(type_: str, **fields: Any) -> Event:
    base: Event = {
        "event_id": f"evt-{type_}",
        "type": type_,
        "occurred_at": "2024-03-17T10:00:00Z",
        "account_id": "acct-1",
    }
    base.update(fields)
    return base


# At least one valid sample of every type; several for the types with alternatives.
VALID: list[Event] = [
    _event("account.updated"),
    _event("account.updated", segment="enterprise", name="Acme Corp", currency=None),
    _event("lead.created", lead_id="lead-1"),
    _event("lead.created", lead_id="lead-1", source="paid_search", segment="smb"),
    _event("lead.stage_changed", lead_id="lead-1", stage="mql"),
    *[_event("lead.stage_changed", lead_id="l", stage=s) for s in ("lead", "sql", "opportunity", "customer")],
    _event("lead.stage_changed", lead_id="lead-1", stage="disqualified", occurred_at=1_710_669_600_000),
    _event("opportunity.created", opportunity_id="opp-1", amount=12_000),
    _event("opportunity.created", opportunity_id="opp-1", amount=0, lead_id="lead-1", currency="EUR"),
    _event("opportunity.created", opportunity_id="opp-1", amount=99.5, lead_id=None),
    _event("opportunity.won", opportunity_id="opp-1"),
    _event("opportunity.won", opportunity_id="opp-1", amount=15_000.25),
    _event("opportunity.won", opportunity_id="opp-1", amount=None),
    _event("opportunity.lost", opportunity_id="opp-1"),
    _event("opportunity.lost", opportunity_id="opp-1", reason="price"),
    _event("subscription.started", subscription_id="sub-1", mrr=100),
    _event("subscription.started", subscription_id="sub-1", amount=1200, interval="year"),
    _event("subscription.started", subscription_id="sub-1", amount=30, interval="week", interval_count=2),
    _event("subscription.started", subscription_id="sub-1", amount=300, interval="quarter", interval_count=None),
    # mrr wins when both are given; a lone amount is then harmless.
    _event("subscription.started", subscription_id="sub-1", mrr=100, amount=1200),
    _event("subscription.started", subscription_id="sub-1", mrr=100, amount=None, interval=None),
    _event("subscription.updated", subscription_id="sub-1", mrr=0),
    _event("subscription.updated", subscription_id="sub-1", amount=50, interval="month"),
    _event("subscription.canceled", subscription_id="sub-1"),
    _event("subscription.renewed", subscription_id="sub-1"),
    _event("subscription.renewed", subscription_id="sub-1", mrr=None, amount=None, interval=None),
    _event("subscription.renewed", subscription_id="sub-1", mrr=120),
    _event("subscription.renewed", subscription_id="sub-1", amount=1440, interval="year", interval_count=1),
    _event("product.signup"),
    _event("product.signup", user_id="u-1", segment="mid_market"),
    _event("product.trial_started", user_id="u-1"),
    _event("product.activated", user_id="u-1", feature="dashboards"),
    _event("product.usage", user_id="u-1", feature="api", quantity=42.5),
    _event("product.usage", user_id=None, feature=None, quantity=None),
    {
        "event_id": "e-ms",
        "type": "marketing.spend",
        "occurred_at": "2024-03-17T10:00:00Z",
        "channel": "ads",
        "amount": 500,
    },
    _event("marketing.spend", account_id=None, channel="ads", amount=0, segment="smb", currency="GBP"),
    # occurred_at forms: fraction, offsets, epoch milliseconds (from 0: 1970-01-01T00:00:00Z).
    _event("account.updated", occurred_at="2024-03-17T10:00:00.123456Z"),
    _event("account.updated", occurred_at="2024-03-17T12:00:00+02:00"),
    _event("account.updated", occurred_at="2024-03-17T05:30:00-04:30"),
    _event("account.updated", occurred_at="2024-03-17T05:30:00+23:59"),
    _event("account.updated", occurred_at=0),
    # SPEC §1 bounds, at the bound: ids of 256 characters, money of 10^12.
    _event("lead.created", event_id="e" * 256, account_id="a" * 256, lead_id="l" * 256),
    _event("opportunity.created", opportunity_id="o" * 256, amount=10**12, lead_id="l" * 256),
    _event("subscription.started", subscription_id="s" * 256, mrr=1e12),
    _event("marketing.spend", channel="c" * 256, amount=10**12),
    # unknown extra fields are allowed and ignored.
    _event("lead.created", lead_id="lead-1", utm={"campaign": "x"}, extra=[1, 2]),
]

# (description, schema name, instance): each one must be rejected by its schema.
INVALID: list[tuple[str, str, Any]] = [
    ("numeric-string amount", "opportunity.created", _event("opportunity.created", opportunity_id="o", amount="10")),
    ("numeric-string mrr", "subscription.started", _event("subscription.started", subscription_id="s", mrr="100")),
    ("numeric-string spend", "marketing.spend", _event("marketing.spend", channel="ads", amount="5.0")),
    ("numeric-string won amount", "opportunity.won", _event("opportunity.won", opportunity_id="o", amount="1")),
    ("negative amount", "opportunity.created", _event("opportunity.created", opportunity_id="o", amount=-1)),
    ("boolean amount", "marketing.spend", _event("marketing.spend", channel="ads", amount=True)),
    ("empty account_id", "lead.created", _event("lead.created", lead_id="l", account_id="")),
    ("null account_id", "product.signup", _event("product.signup", account_id=None)),
    (
        "missing account_id",
        "subscription.canceled",
        {k: v for k, v in _event("subscription.canceled", subscription_id="s").items() if k != "account_id"},
    ),
    ("empty event_id", "lead.created", _event("lead.created", lead_id="l", event_id="")),
    ("empty lead_id", "lead.created", _event("lead.created", lead_id="")),
    (
        "empty optional lead_id",
        "opportunity.created",
        _event("opportunity.created", opportunity_id="o", amount=1, lead_id=""),
    ),
    ("empty channel", "marketing.spend", _event("marketing.spend", channel="", amount=1)),
    ("empty marketing account_id", "marketing.spend", _event("marketing.spend", channel="a", amount=1, account_id="")),
    ("bad stage", "lead.stage_changed", _event("lead.stage_changed", lead_id="l", stage="won")),
    ("upper-case stage", "lead.stage_changed", _event("lead.stage_changed", lead_id="l", stage="MQL")),
    ("null stage", "lead.stage_changed", _event("lead.stage_changed", lead_id="l", stage=None)),
    (
        "bad interval",
        "subscription.started",
        _event("subscription.started", subscription_id="s", amount=10, interval="day"),
    ),
    (
        "bad interval with mrr",
        "subscription.updated",
        _event("subscription.updated", subscription_id="s", mrr=10, interval="monthly"),
    ),
    (
        "interval_count 0",
        "subscription.started",
        _event("subscription.started", subscription_id="s", amount=10, interval="month", interval_count=0),
    ),
    (
        "fractional interval_count",
        "subscription.started",
        _event("subscription.started", subscription_id="s", amount=10, interval="month", interval_count=1.5),
    ),
    ("missing subscription_id", "subscription.started", _event("subscription.started", mrr=10)),
    ("missing subscription_id", "subscription.canceled", _event("subscription.canceled")),
    ("null subscription_id", "subscription.renewed", _event("subscription.renewed", subscription_id=None)),
    ("no price", "subscription.started", _event("subscription.started", subscription_id="s")),
    ("null mrr only", "subscription.updated", _event("subscription.updated", subscription_id="s", mrr=None)),
    ("amount without interval", "subscription.started", _event("subscription.started", subscription_id="s", amount=10)),
    (
        "interval without amount",
        "subscription.updated",
        _event("subscription.updated", subscription_id="s", interval="month"),
    ),
    (
        "amount with null interval",
        "subscription.updated",
        _event("subscription.updated", subscription_id="s", amount=10, interval=None),
    ),
    (
        "incomplete renewal price",
        "subscription.renewed",
        _event("subscription.renewed", subscription_id="s", amount=10),
    ),
    (
        "lowercase currency",
        "opportunity.created",
        _event("opportunity.created", opportunity_id="o", amount=1, currency="usd"),
    ),
    ("currency with trailing newline", "lead.created", _event("lead.created", lead_id="l", currency="USD\n")),
    ("4-letter currency", "marketing.spend", _event("marketing.spend", channel="a", amount=1, currency="USDT")),
    (
        "occurred_at without offset",
        "lead.created",
        _event("lead.created", lead_id="l", occurred_at="2024-03-17T10:00:00"),
    ),
    ("occurred_at date only", "lead.created", _event("lead.created", lead_id="l", occurred_at="2024-03-17")),
    (
        "occurred_at without seconds",
        "lead.created",
        _event("lead.created", lead_id="l", occurred_at="2024-03-17T10:00Z"),
    ),
    ("occurred_at with space", "lead.created", _event("lead.created", lead_id="l", occurred_at="2024-03-17 10:00:00Z")),
    (
        "occurred_at trailing newline",
        "lead.created",
        _event("lead.created", lead_id="l", occurred_at="2024-03-17T10:00:00Z\n"),
    ),
    (
        "occurred_at non-ASCII digits",
        "lead.created",
        _event("lead.created", lead_id="l", occurred_at="\u0662\u0660\u0662\u0664-03-17T10:00:00Z"),
    ),
    ("occurred_at numeric string", "lead.created", _event("lead.created", lead_id="l", occurred_at="1710669600000")),
    ("occurred_at float", "lead.created", _event("lead.created", lead_id="l", occurred_at=1710669600000.5)),
    ("occurred_at boolean", "lead.created", _event("lead.created", lead_id="l", occurred_at=True)),
    ("occurred_at out of range", "lead.created", _event("lead.created", lead_id="l", occurred_at=10**18)),
    ("occurred_at before 1970", "lead.created", _event("lead.created", lead_id="l", occurred_at=-1)),
    (
        "occurred_at offset of 24 hours",
        "lead.created",
        _event("lead.created", lead_id="l", occurred_at="2024-03-17T10:00:00+24:00"),
    ),
    (
        "occurred_at offset of 60 minutes",
        "lead.created",
        _event("lead.created", lead_id="l", occurred_at="2024-03-17T10:00:00+05:60"),
    ),
    ("event_id of 257 characters", "lead.created", _event("lead.created", lead_id="l", event_id="e" * 257)),
    ("account_id of 257 characters", "lead.created", _event("lead.created", lead_id="l", account_id="a" * 257)),
    ("lead_id of 257 characters", "lead.created", _event("lead.created", lead_id="l" * 257)),
    (
        "optional lead_id of 257 characters",
        "opportunity.created",
        _event("opportunity.created", opportunity_id="o", amount=1, lead_id="l" * 257),
    ),
    ("channel of 257 characters", "marketing.spend", _event("marketing.spend", channel="c" * 257, amount=1)),
    ("user_id of 257 characters", "product.usage", _event("product.usage", user_id="u" * 257)),
    (
        "amount over 10^12",
        "opportunity.created",
        _event("opportunity.created", opportunity_id="o", amount=10**12 + 1),
    ),
    ("won amount over 10^12", "opportunity.won", _event("opportunity.won", opportunity_id="o", amount=1.0000001e12)),
    ("mrr over 10^12", "subscription.started", _event("subscription.started", subscription_id="s", mrr=2e12)),
    (
        "price amount over 10^12",
        "subscription.updated",
        _event("subscription.updated", subscription_id="s", amount=1e13, interval="year"),
    ),
    ("spend over 10^12", "marketing.spend", _event("marketing.spend", channel="ads", amount=1.8e299)),
    ("null occurred_at", "lead.created", _event("lead.created", lead_id="l", occurred_at=None)),
    ("missing opportunity amount", "opportunity.created", _event("opportunity.created", opportunity_id="o")),
    ("missing spend amount", "marketing.spend", _event("marketing.spend", channel="ads")),
    ("non-string segment", "account.updated", _event("account.updated", segment=3)),
    ("non-string reason", "opportunity.lost", _event("opportunity.lost", opportunity_id="o", reason=1)),
    ("non-number quantity", "product.usage", _event("product.usage", quantity="3")),
    ("wrong type for schema", "lead.created", _event("lead.stage_changed", lead_id="l", stage="mql")),
    ("not an object", "lead.created", [_event("lead.created", lead_id="l")]),
]


def test_one_schema_file_per_event_type() -> None:
    names = sorted(p.name.removesuffix(".schema.json") for p in EVENTS_DIR.glob("*.schema.json"))
    assert names == sorted([*EVENT_TYPES, COMMON])
    assert len(EVENT_TYPES) == len(set(EVENT_TYPES)) == 15
    # Nothing else hides in the events folder (e.g. a misspelt suffix).
    assert sorted(p.name for p in EVENTS_DIR.iterdir() if p.is_file()) == [f"{n}.schema.json" for n in names]


@pytest.mark.parametrize("path", _schema_files(), ids=lambda p: p.name)
def test_schema_is_valid_draft_2020_12(path: Path) -> None:
    schema = _load(path)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    Draft202012Validator.check_schema(schema)
    assert schema["description"]
    relative = path.relative_to(SCHEMAS_DIR).as_posix()
    assert schema["$id"] == BASE_URI + relative


@pytest.mark.parametrize("type_", EVENT_TYPES)
def test_event_schema_pins_its_type(type_: str) -> None:
    schema = _load(EVENTS_DIR / f"{type_}.schema.json")
    assert schema["properties"]["type"] == {"const": type_}
    assert "type" in schema["required"]


@pytest.mark.parametrize("path", _schema_files(), ids=lambda p: p.name)
def test_every_ref_resolves_locally(path: Path) -> None:
    """Each `$ref` resolves from the registry of files on disk alone (nothing is fetched)."""
    schema = _load(path)
    resolver = _registry().resolver(base_uri=schema["$id"])

    def refs(node: Any) -> list[str]:
        if isinstance(node, dict):
            found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
            return found + [r for value in node.values() for r in refs(value)]
        if isinstance(node, list):
            return [r for item in node for r in refs(item)]
        return []

    for ref in refs(schema):
        try:
            resolver.lookup(ref)
        except Unresolvable as exc:  # pragma: no cover - the failure message is the point
            pytest.fail(f"{path.name}: $ref {ref!r} does not resolve: {exc!r}")


def test_valid_samples_cover_every_type() -> None:
    assert {event["type"] for event in VALID} == set(EVENT_TYPES)


@pytest.mark.parametrize("event", VALID, ids=lambda e: e["type"])
def test_valid_event_passes(event: Event) -> None:
    assert _errors(event["type"], event) == []


@pytest.mark.parametrize("event", VALID, ids=lambda e: e["type"])
def test_valid_event_fails_every_other_type(event: Event) -> None:
    for other in EVENT_TYPES:
        if other != event["type"]:
            assert _errors(other, event), f"{other} schema accepted a {event['type']} event"


@pytest.mark.parametrize(("why", "name", "instance"), INVALID, ids=[f"{n}:{w}" for w, n, _ in INVALID])
def test_invalid_event_fails(why: str, name: str, instance: Any) -> None:
    assert _errors(name, instance), f"{name} schema accepted an event with {why}"


@pytest.mark.parametrize("field", ["event_id", "type", "occurred_at"])
@pytest.mark.parametrize("type_", EVENT_TYPES)
def test_common_fields_are_required(type_: str, field: str) -> None:
    sample = copy.deepcopy(next(e for e in VALID if e["type"] == type_))
    del sample[field]
    assert _errors(type_, sample)


VALID_METRICS: list[dict[str, Any]] = [
    {
        "metric": "win_rate",
        "labels": {"segment": "smb", "window": "30d"},
        "value": 0.31,
        "as_of": "2024-05-01T12:00:00Z",
    },
    {"metric": "mrr", "labels": {"segment": "all"}, "value": 12500, "as_of": "2024-05-01T12:00:00.5+02:00"},
    {
        "metric": "cac",
        "labels": {"segment": "enterprise", "window": "7d"},
        "value": None,
        "as_of": "2024-05-01T12:00:00Z",
    },
    {
        "metric": "mrr_movement",
        "labels": {"segment": "all", "window": "1d", "kind": "churn"},
        "value": 0,
        "as_of": "2024-05-01T12:00:00Z",
    },
    {
        "metric": "stage_conversion_rate",
        "labels": {"segment": "other", "window": "90d", "from": "lead", "to": "mql"},
        "value": 1.25,
        "as_of": "2024-05-01T12:00:00Z",
    },
    {
        "metric": "leads_in_stage_share",
        "labels": {"segment": "unknown", "stage": "sql"},
        "value": 0.5,
        "as_of": "2024-05-01T12:00:00Z",
    },
]

_GOOD = VALID_METRICS[0]
INVALID_METRICS: list[tuple[str, Any]] = [
    ("missing segment label", {**_GOOD, "labels": {"window": "30d"}}),
    ("non-string label value", {**_GOOD, "labels": {"segment": "smb", "window": 30}}),
    ("null label value", {**_GOOD, "labels": {"segment": None}}),
    ("labels not an object", {**_GOOD, "labels": [["segment", "smb"]]}),
    ("string value", {**_GOOD, "value": "0.31"}),
    ("boolean value", {**_GOOD, "value": False}),
    ("missing value", {k: v for k, v in _GOOD.items() if k != "value"}),
    ("missing metric", {k: v for k, v in _GOOD.items() if k != "metric"}),
    ("empty metric", {**_GOOD, "metric": ""}),
    ("prefixed-style metric with label syntax", {**_GOOD, "metric": 'win_rate{segment="smb"}'}),
    ("metric with trailing newline", {**_GOOD, "metric": "win_rate\n"}),
    ("label name with a dash", {**_GOOD, "labels": {"segment": "smb", "time-window": "30d"}}),
    ("missing as_of", {k: v for k, v in _GOOD.items() if k != "as_of"}),
    ("as_of without offset", {**_GOOD, "as_of": "2024-05-01T12:00:00"}),
    ("as_of epoch milliseconds", {**_GOOD, "as_of": 1714564800000}),
    ("not an object", [_GOOD]),
]


@pytest.mark.parametrize("record", VALID_METRICS, ids=lambda r: r["metric"])
def test_valid_metric_record_passes(record: dict[str, Any]) -> None:
    assert _errors("metric_record", record) == []


@pytest.mark.parametrize(("why", "record"), INVALID_METRICS, ids=[w for w, _ in INVALID_METRICS])
def test_invalid_metric_record_fails(why: str, record: Any) -> None:
    assert _errors("metric_record", record), f"metric record with {why} was accepted"
