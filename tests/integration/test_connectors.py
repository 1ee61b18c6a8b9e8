"""End to end on the embedded broker: provider webhooks posted over HTTP become metrics on `/api/metrics`.

A Stripe subscription's whole lifecycle (basil API shape) and a HubSpot deal won and one lost, posted with real
signatures to one worker, must give the MRR movements, win rate and sales cycle worked out by hand below; a
provider retry changes nothing, and a payload no mapper can read is dead-lettered untouched.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from revpulse.agents.base import read_topic
from revpulse.local.processes import WorkerProcess
from tests.support.deployment import deployment
from tests.support.paths import FIXTURES as FIXTURES_DIR
from tests.support.webhooks import SECRETS, basic_headers, hubspot_headers, request, stripe_headers

pytestmark = pytest.mark.integration

FIXTURES = FIXTURES_DIR
STRIPE_LIFECYCLE = [
    "basil_01_created_trialing",  # trialing: MRR 0
    "basil_02_updated_active",  # 2 × $49 = 98: new 98
    "basil_03_updated_quantity",  # 3 × $49 = 147: expansion 49
    "basil_04_updated_coupon",  # 20 % off forever = 117.60: contraction 29.40
    "basil_05_paused",  # 0: churn 117.60
    "basil_06_resumed",  # 117.60: reactivation 117.60
    "basil_07_deleted",  # 0: churn 117.60 (2025-08-21T10:00Z, the last event: as_of)
]
HUBSPOT_BATCHES = ["deal_won_1_created", "deal_won_2_amount", "deal_won_3_stages", "deal_lost"]
# The HubSpot examples are from 2024: move them so the lost deal closes 10 days before the Stripe deletion,
# inside the 90-day window ending there.
AS_OF_MS = 1_755_770_400_000
SHIFT_MS = AS_OF_MS - 10 * 86_400_000 - 1_714_125_600_000


Metrics = dict[tuple[str, tuple[tuple[str, str], ...]], Any]  # (metric, sorted labels) -> value


@pytest.fixture(scope="module")
def worker(broker: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerProcess]:
    workers = deployment(broker, tmp_path_factory.mktemp("connectors"), **SECRETS)
    try:
        yield workers.start("w1")
    finally:
        workers.stop_all()


def hubspot_body(name: str) -> bytes:
    batch = orjson.loads((FIXTURES / "hubspot" / f"{name}.json").read_bytes())
    return orjson.dumps([event | {"occurredAt": event["occurredAt"] + SHIFT_MS} for event in batch])


def post(worker: WorkerProcess, source: str, body: bytes) -> None:
    signers = {"stripe": stripe_headers, "hubspot": hubspot_headers, "pipedrive": lambda body: basic_headers()}
    headers = signers[source](body)
    status, _, reply = request(worker, f"/ingest/{source}", body, headers)
    assert status == 200, reply


def series(worker: WorkerProcess) -> Metrics:
    return {
        (s["metric"], tuple(sorted(s["labels"].items()))): s["value"]
        for s in orjson.loads(worker.get("/api/metrics")[1])
    }


def value(metrics: Metrics, metric: str, **labels: str) -> Any:
    return metrics[(metric, tuple(sorted({"segment": "all", "window": "90d", **labels}.items())))]


@pytest.fixture(scope="module")
def metrics(worker: WorkerProcess) -> Metrics:
    for name in STRIPE_LIFECYCLE:
        post(worker, "stripe", (FIXTURES / "stripe" / f"{name}.json").read_bytes())
    for name in HUBSPOT_BATCHES:
        post(worker, "hubspot", hubspot_body(name))
    post(worker, "hubspot", hubspot_body("deal_won_3_stages_retry"))  # HubSpot's retry: the same event ids
    post(worker, "stripe", (FIXTURES / "stripe" / "malformed_subscription_no_customer.json").read_bytes())
    return wait_for(worker, lambda m: value(m, "deals_lost") == 1 and value(m, "mrr_movement", kind="churn") > 200)


def test_stripe_lifecycle_gives_its_mrr_movements(metrics: Metrics) -> None:
    movements = {kind: value(metrics, "mrr_movement", kind=kind) for kind in ("new", "expansion", "contraction")}
    assert movements == pytest.approx({"new": 98.0, "expansion": 49.0, "contraction": 29.4})
    assert value(metrics, "mrr_movement", kind="churn") == pytest.approx(2 * 117.6)
    assert value(metrics, "mrr_movement", kind="reactivation") == pytest.approx(117.6)
    assert value(metrics, "new_customers") == 1
    assert metrics[("mrr", (("segment", "all"),))] == 0.0


def test_hubspot_deals_give_win_rate_and_sales_cycle(metrics: Metrics) -> None:
    assert (value(metrics, "deals_won"), value(metrics, "deals_lost")) == (1, 1)  # the retry counted once
    assert value(metrics, "win_rate") == 0.5
    # Created 2024-03-17T10:00Z, won 2024-04-05T10:00Z (both shifted alike): 19 days.
    assert value(metrics, "sales_cycle_seconds") == 19 * 86_400
    assert value(metrics, "won_amount") == 15000.5  # the last amount HubSpot sent before the win


def test_retries_are_duplicates_and_the_unmappable_payload_is_dead_lettered(
    worker: WorkerProcess, metrics: Metrics
) -> None:
    text = worker.get("/metrics")[1].decode()
    assert 'revpulse_connector_elements_total{outcome="mapped",source="stripe"} 7.0' in text
    assert 'revpulse_connector_elements_total{outcome="unmappable",source="stripe"} 1.0' in text
    duplicates = [line for line in text.splitlines() if 'outcome="duplicate"' in line and "opportunity.won" in line]
    assert [line.rsplit(" ", 1)[1] for line in duplicates] == ["1.0"]
    letters = asyncio.run(read_topic(worker.settings, worker.settings.topics.deadletter))
    raw = (FIXTURES / "stripe" / "malformed_subscription_no_customer.json").read_bytes()
    [letter] = [r for r in letters if r.value == raw]
    headers = dict(letter.headers)
    assert headers["revpulse.reason"] == b"unmappable"
    assert headers["revpulse.source.topic"] == f"{worker.settings.topics.ingest_raw}.stripe".encode()


def test_a_restarted_worker_remembers_what_the_mappers_knew(broker: str, tmp_path: Path) -> None:
    """The deal's amount reaches RevPulse only on the win; the worker that maps the win is not the one that saw
    the amount: its connector rebuilt the HubSpot mapper from the raw topic."""
    workers = deployment(broker, tmp_path, **SECRETS)
    try:
        first = workers.start("w1")
        for name in HUBSPOT_BATCHES[:2]:
            post(first, "hubspot", hubspot_body(name))
        wait_for(first, lambda m: value(m, "opportunities_created") == 1)
        time.sleep(1)  # the connector commits right after its output is acknowledged
        workers.kill("w1")
        second = workers.start("w2")
        post(second, "hubspot", hubspot_body(HUBSPOT_BATCHES[2]))
        won = wait_for(second, lambda m: value(m, "deals_won") == 1)
        assert value(won, "won_amount") == 15000.5
        assert value(won, "opportunities_created") == 1  # the re-mapped creation was a duplicate
    finally:
        workers.stop_all()


def wait_for(worker: WorkerProcess, done: Callable[[Metrics], bool], timeout: float = 60) -> Metrics:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        current = series(worker)
        if current and done(current):
            return current
        time.sleep(0.3)
    raise AssertionError(f"metrics did not arrive:\n{worker.tail()}")


SALESFORCE_CHANGES = [
    "won_1_create",  # Amount 50,000, created 2024-03-18T09:15:00Z
    "won_2_amount",  # only Amount changes: 65,000
    "won_3_stage",
    "won_4_closed_won",  # won 2024-04-19T16:45:00Z with the last known amount, 65,000
    "lost_1_create",
    "lost_2_create",
    "lost_3_bulk_closed_lost",  # one change closing both as lost (merged with an unknown record below)
]
# An opportunity RevPulse never saw, merged into the bulk close: dead-lettered alone, the other two closes count.
UNSEEN_OPPORTUNITY = "0065e00000AaQ7zAAF"
PIPEDRIVE_WEBHOOKS = [
    "deal_won_1_create",  # added 2024-03-18T09:15:00Z
    "deal_won_2_value",  # value EUR 1,500 = USD 1,620 at the test deployment's rate of 1.08
    "deal_won_3_stage",
    "deal_won_4_won",  # won 2024-04-19T16:45:02Z
    "deal_won_4_won_retry",  # the same meta.id: a duplicate
    "deal_lost_1_create",
    "deal_lost_2_lost",
]


async def produce_cdc(worker: WorkerProcess, values: list[bytes]) -> None:
    """What a Salesforce CDC source connector does: JSON change events on the CDC topic."""
    producer = AIOKafkaProducer(bootstrap_servers=worker.settings.bootstrap_servers)
    await producer.start()
    try:
        for value in values:
            await producer.send_and_wait(worker.settings.topics.salesforce_cdc, value)
    finally:
        await producer.stop()


def test_salesforce_cdc_and_pipedrive_deals(broker: str, tmp_path: Path) -> None:
    workers = deployment(broker, tmp_path, **SECRETS)
    try:
        worker = workers.start("w1")
        changes = [(FIXTURES / "salesforce" / f"{name}.json").read_bytes() for name in SALESFORCE_CHANGES]
        merged = orjson.loads(changes[-1])
        merged["ChangeEventHeader"]["recordIds"].insert(1, UNSEEN_OPPORTUNITY)
        changes[-1] = orjson.dumps(merged)
        asyncio.run(produce_cdc(worker, changes))
        for name in PIPEDRIVE_WEBHOOKS:
            post(worker, "pipedrive", (FIXTURES / "pipedrive" / f"{name}.json").read_bytes())
        metrics = wait_for(worker, lambda m: value(m, "deals_lost") == 3 and value(m, "deals_won") == 2)
        assert value(metrics, "opportunities_created") == 5  # Salesforce 3, Pipedrive 2
        assert value(metrics, "won_amount") == pytest.approx(65_000 + 1_620)
        assert value(metrics, "win_rate") == 2 / 5
        # Both won 32 days 7 h 30 min after creation; Pipedrive's 2 s later: mean 2,791,801 s.
        assert value(metrics, "sales_cycle_seconds") == 2_791_801
        letters = asyncio.run(read_topic(worker.settings, worker.settings.topics.deadletter))
        [letter] = [
            r
            for r in letters
            if dict(r.headers)["revpulse.source.topic"] == worker.settings.topics.salesforce_cdc.encode()
        ]
        assert orjson.loads(letter.value)["ChangeEventHeader"]["recordIds"] == [UNSEEN_OPPORTUNITY]
        assert b"account unknown" in dict(letter.headers)["revpulse.detail"]
    finally:
        workers.stop_all()
