"""HTTP ingest (`POST /ingest/<source>`) on one real worker process and the embedded broker.

Every source is configured on that worker; what needs another configuration (an unconfigured source, a broker
that fails) runs the same `Ingest` handler behind an in-process aiohttp server instead of a second worker.
Signatures are computed here with `hmac` directly. An accepted body is read back from its raw topic with
`read_topic`; at the end each raw topic must hold exactly the accepted bodies, in order, and nothing rejected.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from datetime import datetime

import orjson
import pytest
from aiohttp import ClientSession, web
from aiokafka.errors import KafkaConnectionError, MessageSizeTooLargeError

from revpulse.agents import ingest as ingest_module
from revpulse.agents.base import read_topic
from revpulse.agents.ingest import Ingest
from revpulse.local.broker import free_port
from revpulse.local.processes import WorkerProcess
from revpulse.settings import Ingest as IngestSettings
from revpulse.topics import RAW_SOURCES, raw_topic
from tests.support.deployment import deployment
from tests.support.webhooks import (
    HUBSPOT_SECRET,
    MAX_BYTES,
    SECRETS,
    SIGNERS,
    TOKEN,
    Reply,
    basic_headers,
    bearer_headers,
    hubspot_headers,
    marker_body,
    request,
    stripe_headers,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def worker(broker: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerProcess]:
    workers = deployment(broker, tmp_path_factory.mktemp("ingest"), **SECRETS)
    try:
        yield workers.start("w1")
    finally:
        workers.stop_all()


@pytest.fixture(scope="module")
def accepted() -> dict[str, list[bytes]]:
    """Bodies the worker accepted, per source, in order (checked against the raw topics at the end)."""
    return {source: [] for source in RAW_SOURCES}


def assert_stored(
    worker: WorkerProcess, source: str, reply: Reply, body: bytes, content_type: str, sent_at: float
) -> None:
    status, _, answer = reply
    assert status == 200, answer
    topic = raw_topic(source, worker.settings.topics.ingest_raw)
    assert answer == {"accepted": True, "topic": topic, "partition": 0, "offset": answer["offset"]}
    records = asyncio.run(read_topic(worker.settings, topic))
    record = next(r for r in records if r.offset == answer["offset"])
    assert record.value == body
    assert record.key is None
    headers = dict(record.headers)
    assert set(headers) == {"revpulse.source", "revpulse.received_at", "revpulse.content_type"}
    assert headers["revpulse.source"] == source.encode()
    assert headers["revpulse.content_type"] == content_type.encode()
    received = datetime.fromisoformat(headers["revpulse.received_at"].decode().replace("Z", "+00:00"))
    assert sent_at - 1 <= received.timestamp() <= time.time() + 1


def test_each_source_accepts_a_correctly_signed_body(worker: WorkerProcess, accepted: dict[str, list[bytes]]) -> None:
    for source in RAW_SOURCES:
        body = marker_body(source=source)
        headers = SIGNERS[source](body)
        sent_at = time.time()
        reply = request(worker, f"/ingest/{source}", body, headers)
        assert_stored(worker, source, reply, body, headers["Content-Type"], sent_at)
        accepted[source].append(body)


def test_events_accepts_an_array_of_canonical_events(worker: WorkerProcess, accepted: dict[str, list[bytes]]) -> None:
    events = [
        {"event_id": f"e-{uuid.uuid4().hex}", "type": "lead.created", "occurred_at": "2024-03-17T10:00:00Z",
         "account_id": "acc-1", "lead_id": "lead-1"},
        {"event_id": f"e-{uuid.uuid4().hex}", "type": "marketing.spend", "occurred_at": 1710669600000,
         "channel": "ads", "amount": 120.5},
    ]  # fmt: skip
    body = orjson.dumps(events)
    sent_at = time.time()
    reply = request(worker, "/ingest/events", body, bearer_headers())
    assert_stored(worker, "events", reply, body, "application/json", sent_at)
    accepted["events"].append(body)


def test_a_body_of_exactly_the_limit_is_accepted(worker: WorkerProcess, accepted: dict[str, list[bytes]]) -> None:
    prefix = b'{"pad": "'
    body = prefix + b"x" * (MAX_BYTES - len(prefix) - 2) + b'"}'
    assert len(body) == MAX_BYTES
    reply = request(worker, "/ingest/events", body, bearer_headers())
    assert_stored(worker, "events", reply, body, "application/json", time.time() - 5)
    accepted["events"].append(body)


@pytest.mark.parametrize(
    ("source", "headers", "detail"),
    [
        ("stripe", {}, "missing Stripe-Signature header"),
        ("stripe", {"Stripe-Signature": "garbage"}, "Stripe-Signature has no valid timestamp"),
        ("stripe", "wrong-secret", "Stripe-Signature does not match the body"),
        ("hubspot", {}, "missing X-HubSpot-Signature-v3 header"),
        ("hubspot", "wrong-secret", "X-HubSpot-Signature-v3 does not match the request"),
        # Signed over the URL the worker itself sees: it must check the configured public URL instead.
        ("hubspot", "internal-url", "X-HubSpot-Signature-v3 does not match the request"),
        ("pipedrive", {}, "missing HTTP basic credentials"),
        ("pipedrive", basic_headers(password="wrong"), "wrong HTTP basic credentials"),
        ("pipedrive", basic_headers(user="admin"), "wrong HTTP basic credentials"),
        ("events", {}, "missing bearer token"),
        ("events", bearer_headers("wrong-token"), "wrong bearer token"),
    ],
)
def test_bad_signature_or_credentials_is_401(
    worker: WorkerProcess, source: str, headers: dict[str, str] | str, detail: str
) -> None:
    body = marker_body(rejected=True)
    if headers == "wrong-secret":
        headers = (
            stripe_headers(body, secret="whsec_other") if source == "stripe" else hubspot_headers(body, secret="x")
        )
    elif headers == "internal-url":
        headers = hubspot_headers(body, url=f"http://127.0.0.1:{worker.settings.web_port}/ingest/hubspot")
    assert isinstance(headers, dict)
    assert request(worker, f"/ingest/{source}", body, headers)[::2] == (
        401,
        {"error": "unauthorized", "detail": detail},
    )


def test_stale_timestamps_are_401(worker: WorkerProcess) -> None:
    body = marker_body(stale=True)
    stale_stripe = stripe_headers(body, t=int(time.time()) - 301)
    assert request(worker, "/ingest/stripe", body, stale_stripe)[::2] == (
        401,
        {"error": "unauthorized", "detail": "Stripe-Signature timestamp outside the tolerance"},
    )
    stale_hubspot = hubspot_headers(body, ms=int(time.time() * 1000) - 301_000)
    assert request(worker, "/ingest/hubspot", body, stale_hubspot)[::2] == (
        401,
        {"error": "unauthorized", "detail": "X-HubSpot-Request-Timestamp outside the tolerance"},
    )


TOO_LARGE = {"error": "too_large", "detail": f"the body is over {MAX_BYTES} bytes"}


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_over_size_is_413(worker: WorkerProcess, chunked: bool) -> None:
    body = b'{"pad": "' + b"x" * MAX_BYTES + b'"}'
    # A valid signature: the size alone is refused.
    reply = request(worker, "/ingest/stripe", body, stripe_headers(body), chunked=chunked)
    assert reply[::2] == (413, TOO_LARGE)


def test_not_json_is_400(worker: WorkerProcess) -> None:
    for source in RAW_SOURCES:
        body = b"event_id=1&type=lead.created"
        status, _, answer = request(worker, f"/ingest/{source}", body, SIGNERS[source](body))
        assert (status, answer["error"]) == (400, "invalid_json"), source
        assert answer["detail"].startswith("the body is not JSON: ")


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
def test_other_methods_are_405(worker: WorkerProcess, method: str) -> None:
    for source in RAW_SOURCES:
        status, headers, answer = request(worker, f"/ingest/{source}", method=method)
        assert status == 405
        assert headers["Allow"] == "POST"
        assert headers["Content-Type"] == "application/json"
        assert answer == {"error": "method_not_allowed", "detail": f"use POST for /ingest/{source}"}


def test_raw_topics_hold_exactly_the_accepted_bodies(worker: WorkerProcess, accepted: dict[str, list[bytes]]) -> None:
    for source in RAW_SOURCES:
        records = asyncio.run(read_topic(worker.settings, raw_topic(source, worker.settings.topics.ingest_raw)))
        assert [r.value for r in records] == accepted[source], source
        assert {r.partition for r in records} <= {0}


# The same handler in-process, for configurations the worker above does not have.


async def _serve(ingest: Ingest, scenario: Callable[[str, ClientSession], Awaitable[None]]) -> None:
    async def handle(request: web.Request) -> web.StreamResponse:
        return await ingest.respond(request.match_info["source"], request)

    app = web.Application()
    app.router.add_route("*", "/ingest/{source}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        async with ClientSession() as session:
            await scenario(f"http://127.0.0.1:{port}", session)
    finally:
        await runner.cleanup()


async def _unexpected_send(topic: str, value: bytes, headers: list[tuple[str, bytes]]) -> tuple[int, int]:
    raise AssertionError(f"nothing should be written to {topic}")


def test_an_unconfigured_source_is_404_naming_its_setting() -> None:
    expected = {
        "stripe": "REVPULSE_STRIPE_WEBHOOK_SECRET",
        "hubspot": "REVPULSE_HUBSPOT_CLIENT_SECRET",
        "pipedrive": "REVPULSE_PIPEDRIVE_USER and REVPULSE_PIPEDRIVE_PASSWORD",
        "events": "REVPULSE_INGEST_TOKEN",
    }

    async def scenario(base: str, session: ClientSession) -> None:
        for source, setting in expected.items():
            async with session.post(f"{base}/ingest/{source}", data=b"{}", headers=SIGNERS[source](b"{}")) as reply:
                assert reply.status == 404
                assert await reply.json() == {
                    "error": "not_configured",
                    "detail": f"/ingest/{source} is disabled: set {setting} to enable it",
                }

    asyncio.run(_serve(Ingest(IngestSettings(), _unexpected_send), scenario))


def test_broker_failures(monkeypatch: pytest.MonkeyPatch) -> None:
    """A failed or unacknowledged write is a 503 (the provider retries); a body the broker can never take is 413."""
    monkeypatch.setattr(ingest_module, "WRITE_TIMEOUT", 0.2)
    failures: list[BaseException | None] = [KafkaConnectionError("down"), None, MessageSizeTooLargeError("big")]

    async def send(topic: str, value: bytes, headers: list[tuple[str, bytes]]) -> tuple[int, int]:
        failure = failures.pop(0)
        if failure is None:
            await asyncio.sleep(10)  # never acknowledged
        else:
            raise failure
        return 0, 0

    async def scenario(base: str, session: ClientSession) -> None:
        for status, detail in [
            (503, "the body could not be stored; retry later"),
            (503, "the body could not be stored; retry later"),
            (413, "the body is larger than the broker accepts"),
        ]:
            async with session.post(f"{base}/ingest/events", data=b"[]", headers=bearer_headers()) as reply:
                assert reply.status == status
                assert await reply.json() == {
                    "error": "unavailable" if status == 503 else "too_large",
                    "detail": detail,
                }
                assert reply.headers.get("Retry-After") == ("5" if status == 503 else None)

    asyncio.run(_serve(Ingest(IngestSettings(token=TOKEN), send), scenario))
    assert failures == []


def test_without_a_public_url_hubspot_signs_the_request_url() -> None:
    written: list[bytes] = []

    async def send(topic: str, value: bytes, headers: list[tuple[str, bytes]]) -> tuple[int, int]:
        written.append(value)
        return 0, len(written) - 1

    async def scenario(base: str, session: ClientSession) -> None:
        body = marker_body()
        url = f"{base}/ingest/hubspot?portalId=42"
        async with session.post(url, data=body, headers=hubspot_headers(body, url=url)) as reply:
            assert reply.status == 200
            assert await reply.json() == {"accepted": True, "topic": "ingest.raw.hubspot", "partition": 0, "offset": 0}
        assert written == [body]
        async with session.post(url, data=body, headers=hubspot_headers(body)) as reply:
            assert reply.status == 401

    asyncio.run(_serve(Ingest(IngestSettings(hubspot_client_secret=HUBSPOT_SECRET), send), scenario))


def test_raw_topic_names() -> None:
    assert [raw_topic(s) for s in RAW_SOURCES] == [
        "ingest.raw.stripe",
        "ingest.raw.hubspot",
        "ingest.raw.pipedrive",
        "ingest.raw.events",
    ]
    with pytest.raises(ValueError):
        raw_topic("salesforce")
