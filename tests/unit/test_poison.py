"""No record can stop a worker (SPEC §1), in process: each poison record interleaved with a valid event mix is
exactly one dead letter (input) or one skipped record (internal topics), and every series, and `as_of`, equal
those of the same run without it. The pipeline's wall clock stands at 2024-03-17T10:00:00Z."""

from __future__ import annotations

import pickle
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson
import pytest

from revpulse.agents.base import ProducerService
from revpulse.agents.snapshots import SnapshotStore, parse_manifest
from revpulse.schemas.models import latest_occurred_at
from revpulse.settings import Settings, Topics
from revpulse.streams.engine import EngineConfig
from revpulse.streams.partition import InputRecord
from revpulse.streams.pipeline import Pipeline
from revpulse.streams.rollup import Pending
from revpulse.streams.state_codec import FORMAT, seal
from revpulse.streams.wire import WireError, decode_items, encode_items, parse_partial, partial_records
from revpulse.topics import topic_of
from tests.support.deployment import settings_for
from tests.support.harness import Harness
from tests.support.poison import (
    BIG_MRR,
    BIG_OPEN_PIPELINE,
    BIG_WON,
    FOREIGN_ITEMS,
    FOREIGN_PARTIALS,
    FOREIGN_RECORDS,
    FOREIGN_SHARD_RECORDS,
    NOW,
    POISON,
    SHARDS,
    Poison,
    big_amount_events,
    clocked_harness,
    valid_events,
)

SETTINGS = Settings(clock="event", fx_rates={"EUR": 1.08})
TOPICS = Topics()
VALID = valid_events()


def fed(*records: dict[str, Any] | Poison, settings: Settings = SETTINGS) -> Harness:
    """A harness on the fixed clock fed valid events and poison records, in this order."""
    harness = clocked_harness(settings)
    for record in records:
        if isinstance(record, Poison):
            harness.send_raw(record.value, getattr(TOPICS, record.topic))
        else:
            harness.send(record)
    return harness


@pytest.fixture(scope="module")
def baseline() -> Harness:
    harness = fed(*VALID)
    assert harness.dead == []
    return harness


def assert_same_metrics(got: Harness, expected: Harness) -> None:
    values, wanted = got.values(), expected.values()
    assert values.keys() == wanted.keys()
    wrong = {key: (value, wanted[key]) for key, value in values.items() if value != wanted[key]}
    assert not wrong, f"{len(wrong)} series differ, e.g. {list(wrong.items())[:3]}"
    assert got.pipeline.as_of_text == expected.pipeline.as_of_text


def test_the_valid_mix_covers_the_metrics(baseline: Harness) -> None:
    values = baseline.values()
    assert baseline.pipeline.as_of_text == "2024-03-16T16:00:00Z"
    for metric, labels in [
        ("mrr", {}),
        ("open_pipeline_amount", {}),
        ("won_amount", {"window": "7d"}),
        ("win_rate", {"window": "7d"}),
        ("marketing_spend", {"window": "1d"}),
        ("mrr_movement", {"window": "7d", "kind": "expansion"}),
        ("mrr_movement", {"window": "7d", "kind": "churn"}),
        ("leads_in_stage", {"stage": "disqualified"}),
        ("activation_rate", {"window": "7d", "segment": "other"}),
    ]:
        assert baseline.value(metric, **labels), (metric, labels)
    assert sum(value is not None for value in values.values()) > 800


# 1. Money up to 10¹² is valid and exact all the way to the series.


def test_amounts_of_2e10_and_1e12_come_out_exact(baseline: Harness) -> None:
    harness = fed(*VALID, *big_amount_events())
    assert harness.dead == []
    assert harness.value("open_pipeline_amount") == baseline.value("open_pipeline_amount") + BIG_OPEN_PIPELINE
    for window in ("1d", "7d", "30d", "90d"):
        before = baseline.value("won_amount", window=window)
        assert harness.value("won_amount", window=window) == before + (BIG_WON if window != "1d" else 0)
    assert harness.value("mrr") == baseline.value("mrr") + BIG_MRR
    assert harness.value("arr") == 12 * (baseline.value("mrr") + BIG_MRR)
    unknown = baseline.value("open_pipeline_amount", segment="unknown")  # acc-big has no segment
    assert harness.value("open_pipeline_amount", segment="unknown") == unknown + BIG_OPEN_PIPELINE


# 1–3. Poison input records: one dead letter each, nothing else changes, wherever they arrive.


@pytest.mark.parametrize("where", ["first", "middle", "last"])
@pytest.mark.parametrize("poison", POISON, ids=[p.name for p in POISON])
def test_a_poison_record_is_one_dead_letter_and_changes_no_metric(
    baseline: Harness, poison: Poison, where: str
) -> None:
    at = {"first": 0, "middle": len(VALID) // 2, "last": len(VALID)}[where]
    harness = fed(*VALID[:at], poison, *VALID[at:])
    (letter,) = harness.dead
    assert (letter.reason, letter.payload, letter.topic, letter.offset) == (
        poison.reason,
        poison.value,
        getattr(TOPICS, poison.topic),
        at,
    )
    assert poison.detail in letter.detail
    assert_same_metrics(harness, baseline)


def test_every_poison_record_interleaved_at_once(baseline: Harness) -> None:
    records: list[dict[str, Any] | Poison] = list(VALID)
    for i, poison in enumerate(POISON):
        records.insert(i * len(records) // len(POISON), poison)
    harness = fed(*records)
    assert [(letter.reason, letter.payload) for letter in harness.dead] == [(p.reason, p.value) for p in POISON]
    assert all(p.detail in letter.detail for p, letter in zip(POISON, harness.dead, strict=True))
    assert_same_metrics(harness, baseline)
    rejected = sum(
        sample.value
        for metric in harness.pipeline.registry.collect()
        if metric.name == "revpulse_events"
        for sample in metric.samples
        if sample.name == "revpulse_events_total" and sample.labels["outcome"] == "rejected"
    )
    assert rejected == len(POISON)


def test_the_first_event_dated_9999_does_not_give_an_as_of() -> None:
    harness = fed(*(p for p in POISON if p.name.startswith(("year-", "valid-but"))))
    assert [letter.reason for letter in harness.dead] == ["invalid_event"] * 3
    assert harness.values() == {}
    assert harness.pipeline.as_of_text is None
    harness.send(VALID[0])
    harness.values()
    assert harness.pipeline.as_of_text == VALID[0]["occurred_at"]


# 3. Arrays: up to 10,000 elements each element on its own, past it the record whole.


def test_an_array_of_10000_elements_is_rejected_element_by_element(baseline: Harness) -> None:
    harness = fed(*VALID)
    harness.send_raw(b"[" + b",".join([b"{}"] * 10_000) + b"]", TOPICS.crm)
    assert len(harness.dead) == 10_000
    assert {(letter.reason, letter.detail, letter.payload) for letter in harness.dead} == {
        ("invalid_event", "event has no string 'type'", b"{}")
    }
    assert_same_metrics(harness, baseline)


@pytest.mark.parametrize("padding", [10_000 - len(VALID), 10_001 - len(VALID)])
def test_valid_events_in_an_array_apply_only_up_to_10000_elements(baseline: Harness, padding: int) -> None:
    value = orjson.dumps([*VALID, *([{}] * padding)])
    harness = clocked_harness(SETTINGS)
    harness.send_raw(value, TOPICS.crm)
    if len(VALID) + padding == 10_000:
        assert len(harness.dead) == padding
        assert_same_metrics(harness, baseline)
    else:
        assert [(letter.reason, letter.payload) for letter in harness.dead] == [("invalid_event", value)]
        assert harness.dead[0].detail == "record is an array of 10001 elements; at most 10000 are allowed"
        assert harness.values() == {}


# 4. Internal topics: records RevPulse did not write are skipped and counted, never applied.

ITEMS_PER_RECORD = 10  # small records, so that poison can sit between them
LATEST = latest_occurred_at(NOW)


def through_the_internal_topics(
    shard_poison: Sequence[bytes | None], partial_poison: Sequence[tuple[bytes | None, bytes | None, str]]
) -> tuple[dict[str, float | None], Counter[str], int]:
    """The valid mix the worker's way: routed, encoded to shard-topic records (poison between them), decoded
    and applied per shard, the partials written as partials-topic records (poison between them), parsed into the
    rollup. A record that does not decode is skipped and counted, as the agents do. Returns the series, the
    skips by topic role and reason, and how many shards had a partition of records (each got the poison)."""
    pipeline = Pipeline(SETTINGS, clock=NOW.timestamp)
    inputs = [
        InputRecord(topic_of(str(event["type"]), TOPICS) or TOPICS.crm, 0, offset, orjson.dumps(event), 1.0)
        for offset, event in enumerate(VALID)
    ]
    skipped: Counter[str] = Counter()
    partials: list[tuple[bytes | None, bytes | None]] = []
    routed = pipeline.router.route(inputs, NOW)
    for shard_id, items in sorted(routed.items()):
        records: list[bytes | None] = [
            encode_items(items[i : i + ITEMS_PER_RECORD]) for i in range(0, len(items), ITEMS_PER_RECORD)
        ]
        for i, poison in enumerate(shard_poison):
            records.insert(i * len(records) // len(shard_poison) + i, poison)
        shard = pipeline.shards[shard_id]
        for offset, value in enumerate(records):
            try:
                valid, invalid = decode_items(value, LATEST)
            except WireError:
                skipped["shards/invalid_record"] += 1
                valid, invalid = [], 0
            skipped["shards/invalid_item"] += invalid
            output = shard.apply(valid, offset + 1, whole_points=True)
            assert output.dead == [] and output.points is not None
            partials += partial_records(shard_id, output.partials, output.points)
    for i, (key, value, _) in enumerate(partial_poison):
        partials.insert(i * len(partials) // len(partial_poison) + i, (key, value))
    pending = Pending(pipeline.rollup)
    for key, value in partials:
        try:
            parsed = parse_partial(key, value, SHARDS)
        except WireError:
            skipped["partials/invalid_record"] += 1
            continue
        pending.add_record(parsed)
        pending.apply()
    return {series.key: series.value for series in pipeline.refresh()}, skipped, len(routed)


def test_the_internal_topics_carry_the_valid_mix_exactly(baseline: Harness) -> None:
    values, skipped, shards = through_the_internal_topics([], [])
    assert values == baseline.values()
    assert +skipped == Counter()
    assert shards > 1


def test_foreign_records_on_the_shard_and_partials_topics_are_skipped_and_counted(baseline: Harness) -> None:
    values, skipped, shards = through_the_internal_topics(FOREIGN_SHARD_RECORDS, FOREIGN_PARTIALS)
    assert values == baseline.values()
    assert +skipped == Counter(
        {
            "shards/invalid_record": FOREIGN_RECORDS * shards,
            "shards/invalid_item": FOREIGN_ITEMS * shards,
            "partials/invalid_record": len(FOREIGN_PARTIALS),
        }
    )


@pytest.mark.parametrize(("key", "value", "detail"), FOREIGN_PARTIALS, ids=[str(p[0]) for p in FOREIGN_PARTIALS])
def test_each_foreign_partial_is_a_wire_error_saying_why(key: bytes | None, value: bytes | None, detail: str) -> None:
    with pytest.raises(WireError) as raised:
        parse_partial(key, value, SHARDS)
    assert detail in str(raised.value)


def test_a_foreign_shard_topic_record_never_raises_anything_but_a_wire_error() -> None:
    for value in FOREIGN_SHARD_RECORDS[:FOREIGN_RECORDS]:
        with pytest.raises(WireError):
            decode_items(value, LATEST)
    assert decode_items(FOREIGN_SHARD_RECORDS[FOREIGN_RECORDS], LATEST) == ([], FOREIGN_ITEMS)


class _Skips(list[tuple[str, str]]):
    def __call__(self, role: str, reason: str) -> None:
        self.append((role, reason))


def _store(tmp_path: Path) -> tuple[SnapshotStore, _Skips]:
    settings = settings_for(tmp_path)
    skips = _Skips()
    return SnapshotStore(settings, EngineConfig(), ProducerService(settings), skips), skips


def _manifest(shard: int, next_offset: int, chunks: int = 1) -> bytes:
    return orjson.dumps(
        {"snapshot": f"{shard}/{next_offset}", "chunks": chunks, "next_offset": next_offset, "format": FORMAT}
    )


@pytest.mark.parametrize(
    ("values", "reason"),
    [
        ({b"0": b"garbage"}, "invalid_manifest"),
        ({b"0": b'{"an": "object"}'}, "invalid_manifest"),
        ({b"0": _manifest(1, 5)}, "invalid_manifest"),  # another shard's snapshot
        ({b"0": _manifest(0, 5, chunks=0)}, "invalid_manifest"),
        ({b"0": _manifest(0, 5), b"0/5/0": b"\x80\x05garbage"}, "invalid_snapshot"),
        ({b"0": _manifest(0, 5), b"0/5/0": pickle.dumps({"not": "a state"})}, "invalid_snapshot"),
        ({b"0": _manifest(0, 5), b"0/5/0": seal(b'{"shard": 0}')}, "invalid_snapshot"),
    ],
    ids=["garbage", "object", "other-shard", "no-chunks", "garbage-chunk", "other-pickle", "sealed-not-a-state"],
)
def test_an_invalid_snapshot_on_the_topic_is_skipped_and_counted(
    tmp_path: Path, values: dict[bytes, bytes], reason: str
) -> None:
    store, skips = _store(tmp_path)
    assert store._from_topic(values, 0, after=-1) is None
    assert skips == [("snapshots", reason)]


def test_an_invalid_manifest_leaves_the_restored_metrics_as_they_were(tmp_path: Path) -> None:
    """A shard restored from the topic's valid snapshot serves the same metrics; the same shard behind a forged
    manifest is not restored from it (it replays instead), and nothing else happens."""
    settings = Settings(clock="event", fx_rates={"EUR": 1.08}, shards=1)
    original = fed(*VALID, settings=settings)
    state = original.pipeline.shards[0].state
    store, skips = _store(tmp_path)
    blob = store.encode(0, state)
    good = {b"0": _manifest(0, state.next_offset), f"0/{state.next_offset}/0".encode(): blob}
    restored = store._from_topic(good, 0, after=-1)
    assert restored is not None and skips == []
    assert restored.size == len(blob)
    harness = clocked_harness(settings)
    harness.pipeline.shards[0].state = restored.state
    harness.pipeline.rollup.update(0, harness.pipeline.shards[0].all_partials())
    assert_same_metrics(harness, original)
    assert parse_manifest(b"\x00" * 64, 0) is None
    assert store._from_topic({**good, b"0": b"\x00" * 64}, 0, after=-1) is None
    assert skips == [("snapshots", "invalid_manifest")]
