"""The ingest replay cache: an accepted webhook request seen again while its signature holds is refused (409),
counted, and not written; a provider's own retry (signed anew) and a request whose write failed pass."""

from __future__ import annotations

import asyncio
from typing import Any

import faust
import pytest
from aiokafka.errors import KafkaConnectionError
from multidict import CIMultiDict
from prometheus_client import CollectorRegistry, generate_latest

from revpulse.agents.ingest import Answer, Ingest, register_ingest
from revpulse.agents.replay_guard import ReplayCache
from revpulse.settings import Ingest as IngestSettings
from revpulse.settings import Settings
from tests.support.webhooks import (
    HUBSPOT_SECRET,
    PIPEDRIVE_PASSWORD,
    PIPEDRIVE_USER,
    PUBLIC_URL,
    STRIPE_SECRET,
    TOKEN,
    basic_headers,
    bearer_headers,
    hubspot_headers,
    marker_body,
    stripe_headers,
)

NOW = 1_700_000_000.0
SETTINGS = IngestSettings(
    stripe_webhook_secret=STRIPE_SECRET,
    hubspot_client_secret=HUBSPOT_SECRET,
    pipedrive_user=PIPEDRIVE_USER,
    pipedrive_password=PIPEDRIVE_PASSWORD,
    token=TOKEN,
    public_url=PUBLIC_URL,
    stripe_tolerance=300.0,
    replay_window=60.0,
)


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


class Fixture:
    def __init__(self, settings: IngestSettings = SETTINGS) -> None:
        self.clock = Clock()
        self.written: list[bytes] = []
        self.failures: list[BaseException] = []
        self.ingest = Ingest(settings, self.send, clock=self.clock)

    async def send(self, topic: str, value: bytes, headers: list[tuple[str, bytes]]) -> tuple[int, int]:
        if self.failures:
            raise self.failures.pop(0)
        self.written.append(value)
        return 0, len(self.written) - 1

    def post(self, source: str, body: bytes, headers: dict[str, str]) -> Answer:
        url = f"{PUBLIC_URL}/ingest/{source}"
        return asyncio.run(self.ingest.accept(source, method="POST", url=url, headers=CIMultiDict(headers), body=body))


def _signed(source: str, body: bytes, now: float = NOW) -> dict[str, str]:
    if source == "stripe":
        return stripe_headers(body, t=int(now))
    if source == "hubspot":
        return hubspot_headers(body, ms=int(now * 1000))
    return basic_headers() if source == "pipedrive" else bearer_headers()


@pytest.mark.parametrize("source", ["stripe", "hubspot", "pipedrive", "events"])
def test_a_replayed_request_is_refused_and_counted(source: str) -> None:
    f = Fixture()
    body = marker_body()
    headers = _signed(source, body)
    assert f.post(source, body, headers).status == 200
    for _ in range(3):
        answer = f.post(source, body, headers)
        assert (answer.status, answer.body) == (
            409,
            {"error": "replayed", "detail": "this request was already accepted; it is not written again"},
        )
    assert f.written == [body]
    assert f.ingest.replays.refused == {source: 3}
    # Another body with the same credentials is no replay.
    other = marker_body()
    assert f.post(source, other, _signed(source, other)).status == 200


def test_a_stripe_retry_signed_anew_passes_and_rewritten_headers_do_not() -> None:
    f = Fixture()
    body = marker_body()
    headers = stripe_headers(body, t=int(NOW))
    assert f.post("stripe", body, headers).status == 200
    # The same signature with the header rewritten around it: still the same request.
    signature = headers["Stripe-Signature"]
    for rewritten in (
        signature + ",v1=" + "0" * 64,
        ",".join(reversed(signature.split(","))),
        signature + ",v0=abc",
        " " + signature.replace(",", " , "),
    ):
        assert f.post("stripe", body, {**headers, "Stripe-Signature": rewritten}).status == 409, rewritten
    # Stripe's retry of the same event carries a new timestamp and signature.
    f.clock.now += 60
    assert f.post("stripe", body, stripe_headers(body, t=int(f.clock.now))).status == 200
    assert f.written == [body, body]


def test_signed_requests_are_remembered_until_their_signature_expires() -> None:
    f = Fixture()
    body = marker_body()
    signed_at = NOW - 200  # accepted 200 s after signing: the signature holds 100 s more
    headers = stripe_headers(body, t=int(signed_at))
    assert f.post("stripe", body, headers).status == 200
    f.clock.now = signed_at + 300  # the last second the signature passes
    assert f.post("stripe", body, headers).status == 409
    f.clock.now = signed_at + 302
    assert f.post("stripe", body, headers).status == 401  # the signature's own limit takes over
    # The entry expired with it: the next accepted request leaves only itself in the cache.
    other = marker_body()
    assert f.post("stripe", other, stripe_headers(other, t=int(f.clock.now))).status == 200
    assert len(f.ingest.replays) == 1


def test_undated_sources_are_remembered_for_the_replay_window() -> None:
    f = Fixture()
    body = marker_body()
    assert f.post("events", body, bearer_headers()).status == 200
    f.clock.now += 60
    assert f.post("events", body, bearer_headers()).status == 409
    f.clock.now += 1.5
    assert f.post("events", body, bearer_headers()).status == 200
    assert f.written == [body, body]
    # Sources are apart: the same bytes on another source are another request.
    assert f.post("pipedrive", body, basic_headers()).status == 200


def test_a_request_whose_write_failed_passes_again() -> None:
    f = Fixture()
    body = marker_body()
    f.failures.append(KafkaConnectionError("down"))
    assert f.post("events", body, bearer_headers()).status == 503
    assert f.post("events", body, bearer_headers()).status == 200
    assert f.written == [body]
    assert f.ingest.replays.refused == {}


def test_unauthenticated_or_invalid_requests_never_enter_the_cache() -> None:
    f = Fixture()
    body = marker_body()
    assert f.post("events", body, bearer_headers("wrong")).status == 401
    assert f.post("events", b"not json", bearer_headers()).status == 400
    assert len(f.ingest.replays) == 0
    assert f.post("events", body, bearer_headers()).status == 200


def test_the_cache_is_bounded() -> None:
    cache = ReplayCache(capacity=100)
    keys = [ReplayCache.key("events", "", str(i).encode()) for i in range(250)]
    for i, key in enumerate(keys):
        assert cache.claim("events", key, NOW + 300 + i, NOW)
    assert (len(cache), cache.evicted) == (100, 150)
    # The newest are kept: the oldest (closest to expiry) went first.
    assert all(key in cache for key in keys[150:]) and not any(key in cache for key in keys[:150])
    # Released claims do not leave the heap growing.
    for key in keys[150:]:
        cache.release(key)
    for i in range(10_000):
        key = ReplayCache.key("events", "", b"x%d" % i)
        assert cache.claim("events", key, NOW + 300, NOW)
        cache.release(key)
    assert len(cache) == 0 and len(cache._heap) <= 2 * 64 + 1


def test_the_replay_counters_are_served(tmp_path: Any) -> None:
    registry = CollectorRegistry()
    settings = Settings(ingest=SETTINGS, data_dir=tmp_path)
    app = faust.App("replay-metrics-test", datadir=str(tmp_path))
    ingest = register_ingest(app, settings, producer=None, registry=registry)  # type: ignore[arg-type]
    ingest.replays.refused["stripe"] += 2
    text = generate_latest(registry).decode()
    assert 'revpulse_ingest_replays_refused_total{source="stripe"} 2.0' in text
    assert 'revpulse_ingest_replays_refused_total{source="events"} 0.0' in text
    assert "revpulse_ingest_replay_cache_evictions_total 0.0" in text
    assert "revpulse_ingest_replay_cache_entries 0.0" in text
