"""HTTP ingest on the worker's web port: `POST /ingest/<source>` writes the raw body to `ingest.raw.<source>`.

A request is answered 2xx only once its body is on the raw topic, acknowledged by every in-sync replica (the
shared producer uses acks=all and the handler awaits the acknowledgement), so a crash after the answer loses
nothing; a provider retries anything else. The record value is the body exactly as received (a signature covers
those bytes, and the mappers re-read the topic from its start); what the request said about it goes in headers.

| answer | when |
|---|---|
| 200 `{"accepted": true, "topic", "partition", "offset"}` | written |
| 404 `not_configured` | the source's secret is not set (the detail names the setting): never unauthenticated |
| 405 `method_not_allowed` | not a POST |
| 413 `too_large` | Content-Length or the body read over `REVPULSE_INGEST_MAX_BYTES`, or over what the broker takes |
| 401 `unauthorized` | signature, credentials or token missing or wrong; signed timestamp too old |
| 400 `invalid_json` | the body is not JSON |
| 503 `unavailable` | the broker did not acknowledge in time: try again |

Every error body is `{"error": <code>, "detail": <text>}`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar

import faust
import orjson
from aiohttp import web as aiohttp_web
from aiohttp.web import Response
from aiokafka.errors import KafkaConnectionError, KafkaError, MessageSizeTooLargeError, RecordListTooLargeError
from faust.web import Request, View
from revpulse.agents.base import ProducerService
from revpulse.connectors.signatures import SignatureError, verify_basic, verify_bearer, verify_hubspot_v3, verify_stripe

from revpulse.settings import Ingest as IngestSettings
from revpulse.settings import Settings, Topics
from revpulse.topics import RAW_SOURCES, raw_topic

log = logging.getLogger(__name__)

# Webhook providers give up after a few seconds (HubSpot after 5): an answer later than that is never read, and
# the provider retries anyway.
WRITE_TIMEOUT = 5.0
_READ_CHUNK = 64 * 1024

# (topic, value, headers) → (partition, offset), once the broker acknowledged the record.
Send = Callable[[str, bytes, list[tuple[str, bytes]]], Awaitable[tuple[int, int]]]


@dataclass(frozen=True)
class Answer:
    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def error(cls, status: int, code: str, detail: str, **headers: str) -> Answer:
        return cls(status, {"error": code, "detail": detail}, headers)

    def response(self) -> Response:
        return Response(
            body=orjson.dumps(self.body), status=self.status, headers=self.headers, content_type="application/json"
        )


class Ingest:
    """The ingest logic, independent of the web framework: configuration check, verification, JSON check, write."""

    def __init__(
        self,
        settings: IngestSettings,
        send: Send,
        clock: Callable[[], float] = time.time,
        raw_prefix: str = Topics.ingest_raw,
    ) -> None:
        self.settings = settings
        self.send = send
        self.clock = clock
        self.raw_prefix = raw_prefix

    def missing_setting(self, source: str) -> str | None:
        """The setting that enables `source` when it is not set, else None."""
        s = self.settings
        needed = {
            "stripe": ("REVPULSE_STRIPE_WEBHOOK_SECRET", s.stripe_webhook_secret),
            "hubspot": ("REVPULSE_HUBSPOT_CLIENT_SECRET", s.hubspot_client_secret),
            # The settings refuse one of the two without the other, so the password stands for both.
            "pipedrive": ("REVPULSE_PIPEDRIVE_USER and REVPULSE_PIPEDRIVE_PASSWORD", s.pipedrive_password),
            "events": ("REVPULSE_INGEST_TOKEN", s.token),
        }
        name, value = needed[source]
        return name if value is None else None

    @property
    def enabled(self) -> list[str]:
        return [source for source in RAW_SOURCES if self.missing_setting(source) is None]

    def refuse_early(self, source: str, method: str, content_length: str | None) -> Answer | None:
        """The answer due before reading any of the body, if any: wrong method, not configured, too large."""
        if method.upper() != "POST":
            return Answer.error(405, "method_not_allowed", f"use POST for /ingest/{source}", Allow="POST")
        missing = self.missing_setting(source)
        if missing is not None:
            return Answer.error(404, "not_configured", f"/ingest/{source} is disabled: set {missing} to enable it")
        if content_length is not None:
            try:
                declared = int(content_length)
            except ValueError:
                return Answer.error(400, "bad_request", "Content-Length is not a number")
            if declared > self.settings.max_bytes:
                return self.too_large()
        return None

    def too_large(self) -> Answer:
        return Answer.error(413, "too_large", f"the body is over {self.settings.max_bytes} bytes")

    def verify(self, source: str, method: str, url: str, headers: Mapping[str, str], body: bytes) -> None:
        """Raises SignatureError unless the request is authentic. `headers` must be case-insensitive."""
        s = self.settings
        if source == "stripe":
            assert s.stripe_webhook_secret is not None
            verify_stripe(
                body,
                headers.get("Stripe-Signature"),
                s.stripe_webhook_secret,
                tolerance=s.stripe_tolerance,
                now=self.clock(),
            )
        elif source == "hubspot":
            assert s.hubspot_client_secret is not None
            verify_hubspot_v3(
                body,
                method=method,
                uri=url,
                signature=headers.get("X-HubSpot-Signature-v3"),
                timestamp=headers.get("X-HubSpot-Request-Timestamp"),
                secret=s.hubspot_client_secret,
                now=self.clock(),
            )
        elif source == "pipedrive":
            assert s.pipedrive_user is not None and s.pipedrive_password is not None
            verify_basic(headers.get("Authorization"), s.pipedrive_user, s.pipedrive_password)
        else:
            assert s.token is not None
            verify_bearer(headers.get("Authorization"), s.token)

    async def accept(self, source: str, *, method: str, url: str, headers: Mapping[str, str], body: bytes) -> Answer:
        """Verify a whole request and write its body; `url` is the full URL the provider called."""
        early = self.refuse_early(source, method, None)
        if early is not None:
            return early
        if len(body) > self.settings.max_bytes:
            return self.too_large()
        try:
            self.verify(source, method, url, headers, body)
        except SignatureError as exc:
            return Answer.error(401, "unauthorized", exc.reason)
        try:
            orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            return Answer.error(400, "invalid_json", f"the body is not JSON: {exc}")
        topic = raw_topic(source, self.raw_prefix)
        record_headers = [
            ("revpulse.source", source.encode()),
            ("revpulse.received_at", _rfc3339(self.clock()).encode()),
        ]
        content_type = headers.get("Content-Type")
        if content_type:
            record_headers.append(("revpulse.content_type", content_type.encode("utf-8", "surrogatepass")))
        try:
            partition, offset = await asyncio.wait_for(self.send(topic, body, record_headers), WRITE_TIMEOUT)
        except (MessageSizeTooLargeError, RecordListTooLargeError):
            # Retrying cannot help this body: a 5xx would have the provider retry it for days.
            return Answer.error(413, "too_large", "the body is larger than the broker accepts")
        except (KafkaError, TimeoutError, OSError) as exc:
            log.warning("ingest %s: writing to %s failed: %r", source, topic, exc)
            return Answer.error(503, "unavailable", "the body could not be stored; retry later", **{"Retry-After": "5"})
        return Answer(200, {"accepted": True, "topic": topic, "partition": partition, "offset": offset})

    async def receive(self, source: str, request: aiohttp_web.Request) -> Answer:
        """Answer one HTTP request, reading at most `max_bytes` + 1 bytes of its body."""
        early = self.refuse_early(source, request.method, request.headers.get("Content-Length"))
        if early is not None:
            return early
        body = await _read_bounded(request, self.settings.max_bytes)
        if body is None:
            return self.too_large()
        return await self.accept(
            source, method=request.method, url=self.url_of(request), headers=request.headers, body=body
        )

    def url_of(self, request: aiohttp_web.Request) -> str:
        """The URL the provider called: the public base URL, when set, followed by the path and query as received."""
        path = request.raw_path
        if self.settings.public_url is not None:
            return self.settings.public_url + path
        return f"{request.scheme}://{request.host}{path}"


async def _read_bounded(request: aiohttp_web.Request, limit: int) -> bytes | None:
    """The body, or None as soon as it is over `limit` bytes (Content-Length may be absent or lie)."""
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = await request.content.read(_READ_CHUNK)
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)


def _rfc3339(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def producer_send(service: ProducerService) -> Send:
    """Send one record with the worker's shared producer (acks=all) and wait for the broker's acknowledgement."""

    async def send(topic: str, value: bytes, headers: list[tuple[str, bytes]]) -> tuple[int, int]:
        try:
            producer = service.producer
        except AssertionError:
            # A request that arrives while the worker is still starting: the provider retries.
            raise KafkaConnectionError("the producer has not started yet") from None
        metadata = await producer.send_and_wait(topic, value=value, headers=headers)
        return metadata.partition, metadata.offset

    return send


class IngestView(View):
    """`/ingest/<source>`: POST ingests; every other method answers 405 with a JSON body."""

    ingest: ClassVar[Ingest]
    source: ClassVar[str]

    async def post(self, request: Request) -> Response:
        # Faust's web driver is aiohttp: its request gives the body as a stream, so the read can be bounded.
        return (await self.ingest.receive(self.source, request)).response()  # type: ignore[arg-type]

    async def get(self, request: Request) -> Response:
        return self._not_allowed(request)

    async def put(self, request: Request) -> Response:
        return self._not_allowed(request)

    async def patch(self, request: Request) -> Response:
        return self._not_allowed(request)

    async def delete(self, request: Request) -> Response:
        return self._not_allowed(request)

    def _not_allowed(self, request: Request) -> Response:
        answer = self.ingest.refuse_early(self.source, request.method, None)
        assert answer is not None and answer.status == 405
        return answer.response()


def register_ingest(app: faust.App, settings: Settings, producer: ProducerService) -> Ingest:
    """Add `/ingest/<source>` for every source in RAW_SOURCES to the app's web server."""
    ingest = Ingest(settings.ingest, producer_send(producer), raw_prefix=settings.topics.ingest_raw)
    for source in RAW_SOURCES:
        attrs = {"ingest": ingest, "source": source, "__module__": __name__}
        view = type(f"Ingest{source.capitalize()}View", (IngestView,), attrs)
        app.page(f"/ingest/{source}", name=f"ingest_{source}")(view)

    @app.task
    async def announce_ingest() -> None:
        # Logged once the worker runs (logging is configured by then): which sources answer, and which 404.
        log.info("HTTP ingest enabled for: %s", ", ".join(f"/ingest/{s}" for s in ingest.enabled) or "no source")

    return ingest
