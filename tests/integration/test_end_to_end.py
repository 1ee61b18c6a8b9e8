"""End to end on the real embedded broker: `revpulse replay` a generated log into a running worker, then check
`/api/metrics`, `/metrics`, the metric topic and the dead-letter topic against the independent batch reference."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer
from prometheus_client.parser import text_string_to_metric_families

from revpulse.agents.base import read_topic
from revpulse.local.processes import WorkerProcess
from revpulse.settings import Topics
from revpulse.synth.bad_records import bad_records
from revpulse.synth.config import SynthConfig
from revpulse.synth.delivery import generate
from revpulse.topics import route_line
from tests.support.reference import RefResult, RefSettings, compute

pytestmark = pytest.mark.integration

UNROUTABLE = [b"this is not json", b'{"event_id": "x1", "type": "lead.exploded", "occurred_at": 0}', b"[1, 2]"]


@dataclass
class Replayed:
    expected: RefResult
    worker_bad: list[tuple[str, bytes]]  # raw bad records produced straight to the input topics
    replay_output: str
    api: list[dict[str, Any]]
    exposition: str


def _map_topic(default_topic: str, topics: Topics) -> str:
    return getattr(topics, default_topic.split(".")[0])  # type: ignore[no-any-return]


async def _produce(bootstrap: str, records: list[tuple[str, bytes]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for topic, value in records:
            await producer.send_and_wait(topic, value)
    finally:
        await producer.stop()


def _events_counted(exposition: str) -> Counter[str]:
    counts: Counter[str] = Counter()
    for family in text_string_to_metric_families(exposition):
        if family.name == "revpulse_events":
            for sample in family.samples:
                if sample.name == "revpulse_events_total":
                    counts[sample.labels["outcome"]] += int(sample.value)
    return counts


@pytest.fixture(scope="module")
def replayed(worker: WorkerProcess, broker: str, tmp_path_factory: pytest.TempPathFactory) -> Replayed:
    topics = worker.settings.topics
    log = tmp_path_factory.mktemp("log") / "events.jsonl"
    lines = [orjson.dumps(event) for _, event in generate(SynthConfig(accounts=300, days=45), events=20_000)]
    log.write_bytes(b"\n".join(lines[:1000] + UNROUTABLE + lines[1000:]) + b"\n")
    done = subprocess.run(
        [sys.executable, "-m", "revpulse.cli", "replay", str(log)],
        env=os.environ | worker.env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    worker_bad = [(_map_topic(topic, topics), value) for topic, value in bad_records()]
    asyncio.run(_produce(broker, worker_bad))

    # What the worker consumes, in an order that keeps each key's records in log order (as partitions do).
    consumed = [(o.topic, o.value) for line in lines for o in route_line(line, topics) if o.reason is None]
    defaults = Topics()
    rename = dict(zip(topics.inputs, defaults.inputs, strict=True))
    bad_for_reference = [(_map_topic(topic, defaults), value) for topic, value in bad_records()]
    expected = compute(
        [(rename[topic], value) for topic, value in consumed] + bad_for_reference, RefSettings(fx_rates={"EUR": 1.08})
    )
    total = sum(expected.outcomes.values())
    deadline = time.monotonic() + 120
    while True:
        exposition = worker.get("/metrics")[1].decode()
        if sum(_events_counted(exposition).values()) >= total:
            break
        assert time.monotonic() < deadline, f"worker counted {_events_counted(exposition)} of {total} events"
        time.sleep(0.5)
    time.sleep(1)  # a few publish intervals, so the metric topic has the final values too
    api = orjson.loads(worker.get("/api/metrics")[1])
    return Replayed(expected, worker_bad, done.stderr, api, worker.get("/metrics")[1].decode())


def test_replay_reports_what_it_sent(replayed: Replayed) -> None:
    assert "sent 20000 records (20000 events)" in replayed.replay_output
    # the array line is split: each of its two elements is dead-lettered on its own
    assert "4 unroutable lines dead-lettered" in replayed.replay_output


def test_events_total_accounts_for_every_event(replayed: Replayed) -> None:
    counted = _events_counted(replayed.exposition)
    assert counted == {k: v for k, v in replayed.expected.outcomes.items() if v}


def test_a_lone_worker_applies_most_events_before_they_cross_the_shard_topic(replayed: Replayed) -> None:
    """Its router sends each shard's first items through the shard topic (the gate), then applies them locally;
    the exact results above show both paths together count every event once."""
    routed = {
        sample.labels["path"]: sample.value
        for family in text_string_to_metric_families(replayed.exposition)
        for sample in family.samples
        if sample.name == "revpulse_routed_items_total"
    }
    total = sum(replayed.expected.outcomes.values())
    assert routed["local"] + routed["shard_topic"] == total
    assert routed["local"] > total / 2


def test_api_metrics_equal_the_batch_reference(replayed: Replayed) -> None:
    expected = replayed.expected
    assert expected.as_of is not None
    as_of = expected.as_of.isoformat().replace("+00:00", "Z")
    got: dict[str, float | None] = {}
    for record in replayed.api:
        assert record["as_of"] == as_of
        labels = ",".join(f'{k}="{v}"' for k, v in sorted(record["labels"].items()))
        got[f"{record['metric']}{{{labels}}}"] = record["value"]
    assert got.keys() == expected.series.keys()
    for key, value in expected.series.items():
        if value is None:
            assert got[key] is None, key
        else:
            assert got[key] == pytest.approx(value, rel=1e-9, abs=1e-6), key


def test_prometheus_exposition_matches_and_passes_promtool(replayed: Replayed) -> None:
    check = subprocess.run(
        ["promtool", "check", "metrics"], input=replayed.exposition, capture_output=True, text=True, check=False
    )
    assert check.returncode == 0, check.stdout + check.stderr
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(replayed.exposition)
        for sample in family.samples
    }
    for record in replayed.api:
        key = (f"revpulse_{record['metric']}", tuple(sorted(record["labels"].items())))
        if record["value"] is None:
            assert key not in samples
        else:
            assert samples[key] == pytest.approx(record["value"])
    assert samples[("revpulse_info", (("currency", "USD"), ("version", "0.1.0")))] == 1


def test_metric_topic_holds_the_final_value_of_every_series(
    worker: WorkerProcess, replayed: Replayed, broker: str
) -> None:
    records = asyncio.run(read_topic(worker.settings, worker.settings.topics.metrics))
    last = {record.key.decode(): orjson.loads(record.value) for record in records}
    api = {}
    for record in replayed.api:
        labels = ",".join(f'{k}="{v}"' for k, v in sorted(record["labels"].items()))
        api[f"{record['metric']}{{{labels}}}"] = record
    assert last.keys() == api.keys()
    for key, record in api.items():
        assert last[key]["value"] == record["value"], key
        assert (last[key]["metric"], last[key]["labels"]) == (record["metric"], record["labels"])


def test_dead_letter_topic_holds_each_bad_record_untouched(
    worker: WorkerProcess, replayed: Replayed, broker: str
) -> None:
    records = asyncio.run(read_topic(worker.settings, worker.settings.topics.deadletter))
    letters = [(record.value, {k: v.decode() for k, v in record.headers}) for record in records]
    by_payload: dict[bytes, dict[str, str]] = {}
    for payload, headers in letters:
        assert set(headers) == {
            "revpulse.reason",
            "revpulse.detail",
            "revpulse.source.topic",
            "revpulse.source.partition",
            "revpulse.source.offset",
        }
        by_payload[payload] = headers
    assert len(letters) == len(by_payload), "a bad record was dead-lettered twice"
    unroutable = [*UNROUTABLE[:2], b"1", b"2"]
    for line, reason in zip(
        unroutable, ["invalid_json", "unknown_type", "invalid_event", "invalid_event"], strict=True
    ):
        assert by_payload[line]["revpulse.reason"] == reason
        assert by_payload[line]["revpulse.source.topic"] == "replay:events.jsonl"
    # every rejection the reference makes of the raw bad records is on the topic, bytes and reason as sent
    rejected = replayed.expected.outcomes["rejected"]
    from_worker = [h for h in by_payload.values() if not h["revpulse.source.topic"].startswith("replay:")]
    assert len(from_worker) == rejected
    for topic, value in replayed.worker_bad:
        if value in by_payload:
            assert by_payload[value]["revpulse.source.topic"] == topic
