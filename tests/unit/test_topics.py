"""Topic names and the routing of log lines to input topics (what `revpulse replay` and the connectors send)."""

from __future__ import annotations

import orjson
import pytest

from revpulse import topics as topics_module
from revpulse.settings import Settings, Topics
from revpulse.topics import (
    Outgoing,
    partials_topic,
    raw_topic,
    raw_topics,
    route_line,
    router_group,
    shard_topic,
    snapshot_generation,
    snapshot_generations,
    snapshot_topic,
)

TOPICS = Topics()


def test_internal_names_follow_the_app_id() -> None:
    settings = Settings(app_id="acme")
    names = (shard_topic(settings), partials_topic(settings), snapshot_topic(settings), router_group(settings))
    assert names == ("acme-shards", "acme-partials", "acme-snapshots", "acme-router")
    assert raw_topics(Topics(ingest_raw="hooks")) == [
        "hooks.stripe",
        "hooks.hubspot",
        "hooks.pipedrive",
        "hooks.events",
    ]
    with pytest.raises(ValueError, match="unknown ingest source"):
        raw_topic("salesforce")


def test_snapshot_generations_are_found_by_name_newest_first() -> None:
    settings = Settings(app_id="acme")
    assert snapshot_generation(settings, 3, 1200) == "acme-snapshots.3.1200"
    names = [
        "acme-snapshots.3.1200",
        "acme-snapshots.3.900",
        "acme-snapshots.0.5",
        "acme-snapshots",  # the compacted topic
        "acme-snapshots.3",
        "acme-snapshots.3.x",
        "acme-snapshots.3.-1",
        "acme-snapshots.3.1.2",
        "acme-snapshots.3." + "9" * 19,  # beyond any offset
        "other-snapshots.3.7",
        "acme-shards",
    ]
    assert snapshot_generations(settings, names) == {
        3: [(1200, "acme-snapshots.3.1200"), (900, "acme-snapshots.3.900")],
        0: [(5, "acme-snapshots.0.5")],
    }


def test_an_array_line_is_split_by_topic_and_keyed_when_its_elements_share_a_key() -> None:
    usage = {"type": "product.usage", "account_id": "a"}
    spend = {"type": "marketing.spend", "channel": "ads"}
    line = orjson.dumps([usage, spend, usage, {"type": "nope"}])
    assert route_line(line, TOPICS) == [
        Outgoing(TOPICS.deadletter, None, b'{"type":"nope"}', "unknown_type", "unknown event type 'nope'"),
        Outgoing(TOPICS.product, b"a", orjson.dumps([usage, usage])),
        Outgoing(TOPICS.marketing, b"ads", orjson.dumps([spend])),
    ]


def test_an_array_line_of_more_than_ten_thousand_elements_is_one_dead_letter() -> None:
    line = orjson.dumps([{"type": "product.usage", "account_id": "a"}] * 10_001)
    assert route_line(line, TOPICS) == [
        Outgoing(
            TOPICS.deadletter,
            None,
            line,
            "invalid_event",
            "line is an array of 10001 elements; at most 10000 are allowed",
        )
    ]
    assert [o.topic for o in route_line(orjson.dumps([{"type": "product.usage"}] * 10_000), TOPICS)] == [TOPICS.product]


def test_an_element_deeper_than_orjson_writes_is_its_own_letter_and_the_rest_goes_on() -> None:
    deep = b"[" * 300 + b"]" * 300  # orjson reads 1024 levels but writes 254
    usage = b'{"type":"product.usage","account_id":"a"}'
    assert route_line(b"[" + deep + b"," + usage + b"]", TOPICS) == [
        Outgoing(TOPICS.deadletter, None, deep, "invalid_event", "not an object with a string 'type'"),
        Outgoing(TOPICS.product, b"a", b"[" + usage + b"]"),
    ]


def test_a_line_no_rule_covers_is_a_processing_error_not_an_exception(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: object) -> Outgoing:
        raise RecursionError("a defect")

    monkeypatch.setattr(topics_module, "route_event", broken)
    line = b'{"type": "product.usage", "account_id": "a"}'
    assert route_line(line, TOPICS) == [
        Outgoing(TOPICS.deadletter, None, line, "processing_error", "line not routable: RecursionError('a defect')")
    ]
