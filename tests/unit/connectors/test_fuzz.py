"""Property-based fuzzing of the provider connectors: no payload, however hostile, makes a `Translator` raise.

SPEC §1: provider payloads never stop a worker. The connector agent maps its raw topics again from offset 0 on
every assignment, so one payload that raised would crash it on every restart. Payloads here are the real fixture
payloads with leaves and subtrees replaced, deleted, wrapped or added (hostile values: None, booleans, huge,
negative and non-finite numbers, 10**30, long strings, dates in the years 0001 and 9999, lists, objects, nesting
300 deep), and random JSON, written with the stdlib encoder so that NaN, Infinity and huge integers reach the
bytes as a provider could send them. Every record must come out as input-topic records and/or dead letters with
a reason, one outcome per element, and no `processing_error`: the mappers themselves must refuse what they cannot
map (`Unmappable`), the translator's catch-all is only the last line of defence.
"""

from __future__ import annotations

import copy
import json
import math
import random
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from revpulse.connectors.common import MAX_MS, MIN_MS
from revpulse.connectors.translate import DETAIL_LIMIT, Translation, Translator, translators
from revpulse.schemas.models import EVENT_TYPES
from revpulse.settings import Settings
from tests.support.paths import FIXTURES

SETTINGS = Settings.from_env({})
DEADLETTER = SETTINGS.topics.deadletter
PROVIDERS = ("stripe", "hubspot", "pipedrive", "salesforce")
FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
REASONS = {"invalid_json", "unmappable", "processing_error"}
ROUTE_REASONS = {"invalid_json", "invalid_event", "unknown_type", "processing_error"}
MONEY = ("amount", "mrr")


def translator(source: str) -> Translator:
    return next(t for t in translators(SETTINGS).values() if t.source == source)


def nested(depth: int, leaf: Any = None) -> Any:
    value = leaf
    for level in range(depth):
        value = [value] if level % 2 else {"a": value}
    return value


def encode(value: Any) -> bytes:
    """JSON as a provider might write it: the stdlib's NaN/Infinity and exact big integers, and no recursion (a
    value nested 1,000 deep must be written too)."""
    out: list[str] = []
    stack: list[Any] = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, _Raw):
            out.append(item.text)
        elif isinstance(item, list):
            parts: list[Any] = [_Raw("[")]
            for index, child in enumerate(item):
                parts += [_Raw(",")] if index else []
                parts.append(child)
            stack += reversed([*parts, _Raw("]")])
        elif isinstance(item, dict):
            parts = [_Raw("{")]
            for index, (key, child) in enumerate(item.items()):
                parts += [_Raw(("," if index else "") + json.dumps(str(key)) + ":"), child]
            stack += reversed([*parts, _Raw("}")])
        else:
            out.append(json.dumps(item))
    return "".join(out).encode()


class _Raw:
    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text


HOSTILE: list[Any] = [
    None,
    True,
    False,
    0,
    -1,
    -0.5,
    0.1,
    2e10,
    2**31,
    2**53 + 1,
    2**63,
    2**64 - 1,
    2**64,
    -(2**63),
    10**17,
    253402300800,
    -62135596801000,
    10**30,
    -(10**30),
    10**400,
    1e300,
    -1e300,
    5e-324,
    math.inf,
    -math.inf,
    math.nan,
    "",
    " ",
    "x" * 10_000,
    "9" * 400,
    "1" * 5000,
    "1e400",
    "1e300",
    "NaN",
    "inf",
    "-1",
    "2e10",
    "0e-999999999",
    "1e-999999999",
    "1e999999999",
    "9999-12-31T23:59:59Z",
    "9999-12-31T23:59:59-23:59",
    "0001-01-01T00:00:00Z",
    "0001-01-01T00:00:00+23:59",
    "2024-02-30T00:00:00Z",
    "2024-03-17 10:00:00",
    "\u0000",
    "\ud83d",
    "😀" * 100,
    "usd",
    "USD",
    "won",
    "lost",
    "forever",
    "tiered",
    "volume",
    "graduated",
    "up",
    "metered",
    "plan",
    "subscription_cycle",
    "closedwon",
    "customer",
    "CREATE",
    "UPDATE",
    "GAP_UPDATE",
    "006*",
    "0x8360",
    "0x" + "F" * 2000,
    "4-0x01",
    "999999999-0x1",
    "0-3",
    "deal.propertyChange",
    "object.propertyChange",
    [],
    {},
    [None],
    [[]],
    ["x"],
    [1, 2, 3],
    {"": None},
    {"id": ["x"]},
    {"id": "x"},
    {"coupon": "PARTNER20"},
    {"coupon": {"duration": "forever", "percent_off": 1e300}},
    {"source": {"coupon": 5}},
    {"up_to": None, "unit_amount": 2**63},
    nested(300),
    nested(300, "x"),
    nested(1000),
]
# Keys the mappers read that the fixtures may lack: added with a hostile value, they reach code the fixtures don't.
KEYS = [
    "id",
    "type",
    "created",
    "customer",
    "metadata",
    "segment",
    "status",
    "currency",
    "discount",
    "discounts",
    "coupon",
    "source",
    "duration",
    "percent_off",
    "amount_off",
    "currency_options",
    "pause_collection",
    "has_more",
    "billing_scheme",
    "tiers",
    "tiers_mode",
    "up_to",
    "flat_amount",
    "unit_amount_decimal",
    "transform_quantity",
    "transform_usage",
    "divide_by",
    "round",
    "usage_type",
    "object",
    "plan",
    "interval_count",
    "parent",
    "subscription_details",
    "subscription",
    "lines",
    "billing_reason",
    "objectTypeId",
    "propertyName",
    "propertyValue",
    "changedFields",
    "nulledFields",
    "diffFields",
    "schema",
    "fields",
    "field",
    "recordIds",
    "previous",
    "data",
    "payload",
    "lost_reason",
    "won_time",
    "lost_time",
    "add_time",
    "org_id",
    "person_id",
    "organization_id",
    "is_archived",
    "value",
    "StageName",
    "IsClosed",
    "IsWon",
    "Amount",
    "AccountId",
    "CurrencyIsoCode",
]

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.sampled_from([value for value in HOSTILE if not isinstance(value, list | dict)]),
)
random_json = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)


def readable(value: Any) -> bool:
    try:
        orjson.loads(encode(value))
    except orjson.JSONDecodeError:
        return False
    return not isinstance(value, list | dict)


READABLE = [value for value in HOSTILE if readable(value)]


def fresh(value: Any) -> Any:
    """A copy of a hostile value, so that later mutations never change HOSTILE itself (orjson reads 1024 deep)."""
    return orjson.loads(encode(value)) if isinstance(value, list | dict) else value


hostile = st.sampled_from(HOSTILE).map(fresh) | random_json


def load(path: Any) -> Any:
    return json.loads(path.read_text())


def seeds(source: str) -> list[Any]:
    """The provider's fixture payloads, plus variants that reach code no fixture does."""
    found = [load(path) for path in sorted((FIXTURES / source).glob("*.json"))]
    if source == "stripe":
        tiered = load(FIXTURES / "stripe" / "basil_02_updated_active.json")
        price = tiered["data"]["object"]["items"]["data"][0]["price"]
        price.update(
            billing_scheme="tiered", tiers_mode="graduated", transform_quantity={"divide_by": 5, "round": "up"}
        )
        price["tiers"] = [
            {"up_to": 1, "unit_amount": 1000, "flat_amount": 100},
            {"up_to": None, "unit_amount_decimal": "5.5"},
        ]
        coupon = {
            "id": "evt_coupon",
            "type": "coupon.updated",
            "created": 1750068000,
            "data": {
                "object": {
                    "id": "C1",
                    "duration": "forever",
                    "amount_off": 500,
                    "currency": "eur",
                    "currency_options": {"usd": {"amount_off": 550}},
                }
            },
        }
        sourced = load(FIXTURES / "stripe" / "basil_customer_discount_created.json")
        discount = sourced["data"]["object"]
        discount["source"] = {"coupon": "C1", "type": "coupon"}
        del discount["coupon"]
        found += [tiered, coupon, sourced]
    if source == "salesforce":
        # A Pub/Sub API update (bitmaps; every field present, unchanged ones null) with its Kafka Connect schema, the
        # same without it and clearing a field, and a change merged over a known and an unknown record.
        connect = load(FIXTURES / "salesforce" / "lost_1_create.json")
        names = [field["field"] for field in connect["schema"]["fields"]]
        header = {**connect["payload"]["ChangeEventHeader"], "changeType": "UPDATE", "transactionKey": "tx-pubsub"}
        header.update(changedFields=["0x8360", "4-0x01"], nulledFields=[], diffFields=[])
        payload = {name: None for name in names[1:]} | {"StageName": "Closed Won", "IsClosed": True, "IsWon": True}
        pubsub = {"schema": connect["schema"], "payload": {"ChangeEventHeader": header, **payload}}
        bare = copy.deepcopy(pubsub["payload"])
        bare["ChangeEventHeader"]["nulledFields"] = ["0x8"]
        merged = load(FIXTURES / "salesforce" / "lost_3_bulk_closed_lost.json")
        merged["ChangeEventHeader"]["recordIds"].insert(1, "0065e00000AaQ80AAF")
        merged["ChangeEventHeader"].update(transactionKey="tx-merged", changedFields=["StageName", "IsClosed", "IsWon"])
        merged.update(StageName="Closed Won", IsWon=True)
        found += [pubsub, bare, merged]
    return found


SEEDS = {source: seeds(source) for source in PROVIDERS}


def paths(doc: Any) -> list[tuple[Any, ...]]:
    """The path of every node under the root (object keys and list indexes), iteratively."""
    out: list[tuple[Any, ...]] = []
    stack: list[tuple[tuple[Any, ...], Any]] = [((), doc)]
    while stack:
        path, node = stack.pop()
        children = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
        for key, child in children:
            out.append((*path, key))
            if len(path) < 12:
                stack.append(((*path, key), child))
    return out


def at(doc: Any, path: tuple[Any, ...]) -> Any:
    for key in path:
        doc = doc[key]
    return doc


@st.composite
def mutated(draw: st.DrawFn, source: str) -> Any:
    """A fixture payload with one to four nodes replaced, deleted, wrapped in a list, or added."""
    doc = copy.deepcopy(draw(st.sampled_from(SEEDS[source])))
    for _ in range(draw(st.integers(1, 4))):
        nodes = paths(doc)
        op = draw(st.sampled_from(["replace", "replace", "replace", "delete", "wrap", "add"]))
        if not nodes or op == "add":
            containers = [p for p in [(), *nodes] if isinstance(at(doc, p), dict)]
            if containers:
                at(doc, draw(st.sampled_from(containers)))[draw(st.sampled_from(KEYS))] = draw(hostile)
            continue
        path = draw(st.sampled_from(nodes))
        parent, key = at(doc, path[:-1]), path[-1]
        if op == "delete" and isinstance(parent, dict):
            del parent[key]
        elif op == "wrap":
            parent[key] = [parent[key]]
        else:
            parent[key] = draw(hostile)
    return doc


@st.composite
def scrambled(draw: st.DrawFn, source: str) -> Any:
    """A fixture payload with every leaf replaced by a hostile value with probability p (only values orjson
    reads: one NaN among many would make nearly every payload `invalid_json`)."""
    doc = copy.deepcopy(draw(st.sampled_from(SEEDS[source])))
    rng: random.Random = draw(st.randoms(use_true_random=False))
    p = rng.choice([0.05, 0.2, 0.5])
    for path in paths(doc):
        parent = at(doc, path[:-1])
        if not isinstance(parent[path[-1]], dict | list) and rng.random() < p:
            parent[path[-1]] = rng.choice(READABLE)
    return doc


def check(source: str, raw: bytes, t: Translator | None = None) -> Translation:
    """Translate one raw record and check what any record must become; the translation."""
    translation = (t or translator(source)).translate(raw)
    letters = [r for r in translation.records if r.reason is not None]
    events = [r for r in translation.records if r.reason is None]
    assert all(r.topic == DEADLETTER for r in letters)
    assert all(r.topic != DEADLETTER for r in events)
    for letter in letters:
        assert letter.reason in (ROUTE_REASONS if source == "events" else REASONS)
        assert isinstance(letter.detail, str) and 0 < len(letter.detail) <= DETAIL_LIMIT
        # Untouched: the record's own bytes, or (for an element of a batch) that element's JSON.
        assert letter.value == raw or parses(letter.value)
    if source == "events":
        return translation  # route_line's own rules (e.g. an element too deep to write: processing_error)
    assert translation.outcomes["processing_error"] == 0, letters
    # One outcome per element (a record that is an empty batch has none), one dead letter per rejected one.
    assert sum(translation.outcomes.values()) >= 1 or orjson.loads(raw) == []
    assert len(letters) == sum(translation.outcomes[o] for o in REASONS)
    if translation.outcomes["mapped"]:
        assert len(events) >= translation.outcomes["mapped"]
    for record in events:
        canonical(orjson.loads(record.value))
    return translation


def parses(value: bytes) -> bool:
    orjson.loads(value)
    return True


def canonical(event: Any) -> None:
    """The shape every mapper promises (value ranges are the event validator's call, downstream)."""
    assert isinstance(event, dict) and event["type"] in EVENT_TYPES
    assert all(isinstance(event[name], str) and event[name] for name in ("event_id", "account_id"))
    assert isinstance(event["occurred_at"], int) and MIN_MS <= event["occurred_at"] <= MAX_MS
    for name in MONEY:
        if name in event:
            assert isinstance(event[name], int | float) and not isinstance(event[name], bool)
            assert math.isfinite(event[name]) and event[name] >= 0
    for name, value in event.items():
        assert value is not None and isinstance(value, str | int | float), (name, value)


@FUZZ
@given(st.data())
def test_mutated_fixture_payloads_never_escape_the_translator(data: st.DataObject) -> None:
    for source in PROVIDERS:
        check(source, encode(data.draw(mutated(source), label=source)))


@settings(FUZZ, max_examples=150)
@given(st.data())
def test_scrambled_fixture_payloads_never_escape_the_translator(data: st.DataObject) -> None:
    for source in PROVIDERS:
        check(source, encode(data.draw(scrambled(source), label=source)))


@settings(FUZZ, max_examples=300)
@given(random_json | st.sampled_from(HOSTILE), st.binary(max_size=64))
def test_random_json_and_bytes_never_escape_any_translator(doc: Any, junk: bytes) -> None:
    for source in (*PROVIDERS, "events"):
        check(source, encode(doc))
        check(source, junk)
        check(source, encode([doc, doc]))


@settings(FUZZ, max_examples=100)
@given(st.data())
def test_a_dead_lettered_record_leaves_the_mapper_state_as_it_was(data: st.DataObject) -> None:
    """Mapping the fixtures in order with one hostile record slipped in: when that record is dead-lettered whole,
    every later record maps exactly as if it had never been seen. (Except "account unknown": the mappers
    remember the values of such a change on purpose, so that a later change naming the account maps.)"""
    for source in PROVIDERS:
        records = [encode(doc) for doc in SEEDS[source]]
        bad = encode(data.draw(mutated(source), label=source))
        where = data.draw(st.integers(0, len(records)), label="position")
        with_bad, without = translator(source), translator(source)
        for record in records[:where]:
            with_bad.translate(record)
            without.translate(record)
        translation = check(source, bad, with_bad)
        letters = [r for r in translation.records if r.reason is not None]
        whole = letters == translation.records and sum(translation.outcomes.values()) == len(letters)
        if not whole or any("account unknown" in (r.detail or "") for r in letters):
            continue
        for record in records[where:]:
            assert with_bad.translate(record) == without.translate(record)
