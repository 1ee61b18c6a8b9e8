"""HTTP ingest on the worker's web port: `POST /ingest/<source>` writes the raw body to `ingest.raw.<source>`.

A request is answered 2xx only once its body is on the raw topic, acknowledged by every in-sync replica (the
shared producer uses acks=all and the handler awaits the acknowledgement), so a crash after the answer loses
nothing; a provider retries anything else. The record value is the body exactly as received (a signature covers
those bytes, and the mappers re-read the topic from its start); what the request said about it goes in headers.

Everything the headers alone can decide is decided before any of the body is read: the method, the source being
configured, a declared size over the limit, credentials that live in headers (the bearer token of `events`,
pipedrive's basic auth: checked whole), and for the schemes that sign the body (Stripe, HubSpot v3) the presence
and form of their headers and the timestamp tolerance. Only then, and only while fewer than
`REVPULSE_INGEST_MAX_IN_FLIGHT` requests hold a body, is the body read: at most `max_bytes` + 1 bytes, within
`REVPULSE_HTTP_READ_TIMEOUT`, then verified. An answer given with the body unread is sent at once; what the
client still sends is then dropped (never kept) for at most LINGER seconds, and the connection closes.

The web server itself (`configure_web_server`) bounds what a connection may hold before any handler runs: the
request line and headers must arrive within `REVPULSE_HTTP_HEADER_TIMEOUT` (else the connection is dropped),
header lines and counts are capped, and at most `REVPULSE_HTTP_MAX_CONNECTIONS` connections are open at once (a
new one beyond it is answered 503 and closed). A closed connection is freed at once rather than left to the
cyclic collector, and after a burst of connections the memory it used goes back to the system (TRIM_BURST).

| answer | when |
|---|---|
| 200 `{"accepted": true, "topic", "partition", "offset"}` | written |
| 404 `not_configured` | the source's secret is not set (the detail names the setting): never unauthenticated |
| 405 `method_not_allowed` | not a POST |
| 413 `too_large` | Content-Length or the body read over `REVPULSE_INGEST_MAX_BYTES`, or over what the broker takes |
| 401 `unauthorized` | signature, credentials or token missing or wrong; signed timestamp too old |
| 409 `replayed` | the same request (source, signed timestamp, body) was accepted while its signature still holds \
(replay_guard.py): not written again, counted in `revpulse_ingest_replays_refused_total` |
| 408 `timeout` | the body did not arrive whole within `REVPULSE_HTTP_READ_TIMEOUT` |
| 400 `invalid_json` | the body is not JSON |
| 400 `bad_request` | Content-Length is not a number, or the body could not be read (malformed chunks, client gone) |
| 503 `busy` | `REVPULSE_INGEST_MAX_IN_FLIGHT` requests already hold a body, or the connection is over \
`REVPULSE_HTTP_MAX_CONNECTIONS`: `Retry-After: 1` |
| 503 `unavailable` | the broker did not acknowledge in time: try again (`Retry-After: 5`) |

Every error body is `{"error": <code>, "detail": <text>}`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, ClassVar

import faust
import orjson
from aiohttp import web as aiohttp_web
from aiohttp.web import Response, StreamResponse
from aiohttp.web_protocol import RequestHandler, RequestPayloadError
from aiohttp.web_server import Server
from aiokafka.errors import KafkaConnectionError, KafkaError, MessageSizeTooLargeError, RecordListTooLargeError
from faust.web import Request, View
from faust.web.drivers.aiohttp import Web as AiohttpWeb
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from revpulse.agents import heap
from revpulse.agents.base import ProducerService
from revpulse.agents.replay_guard import ReplayCache
from revpulse.agents.web_access import (
    ReadAccess,
    access_middleware,
    describe,
    server_ssl_context,
    warn_if_exposed,
)
from revpulse.connectors.signatures import (
    HUBSPOT_TOLERANCE,
    SignatureError,
    check_hubspot_headers,
    check_stripe_headers,
    stripe_timestamp,
    verify_basic,
    verify_bearer,
    verify_hubspot_v3,
    verify_stripe,
)
from revpulse.settings import Ingest as IngestSettings
from revpulse.settings import Settings, Topics
from revpulse.topics import RAW_SOURCES, raw_topic

log = logging.getLogger(__name__)

# Webhook providers give up after a few seconds (HubSpot after 5): an answer later than that is never read, and
# the provider retries anyway.
WRITE_TIMEOUT = 5.0
_READ_CHUNK = 64 * 1024
# What a client that is refused is told to wait before trying again, in seconds.
RETRY_AFTER = "1"
# After an answer given with the body unread, what the client still sends is read and dropped for at most this
# long before closing: closing at once, with data unread, resets the connection, and the client's kernel may then
# drop the answer before the client reads it.
LINGER = 2.0
# Header limits (aiohttp counts no total): a request line, one header line, and the number of header lines.
MAX_LINE_SIZE = 8190
MAX_FIELD_SIZE = 8190
MAX_HEADERS = 64
_LOG_INTERVAL = 10.0  # seconds between two warnings about refused requests or connections
# After a burst of connections the allocator keeps the pages they used (Python frees the objects, glibc and
# pymalloc hold on to the memory). Once a burst (TRIM_BURST connections open at once, or max_connections if that
# is lower) has drained to TRIM_QUIET connections for TRIM_DELAY seconds, free memory is handed back to the
# system, at most once per TRIM_INTERVAL seconds (malloc_trim walks the heap: tens of milliseconds on a worker of
# a gigabyte; a sustained flood never drains, so it never trims meanwhile).
TRIM_BURST = 64
TRIM_QUIET = 8
TRIM_DELAY = 1.0
TRIM_INTERVAL = 10.0

# (topic, value, headers) → (partition, offset), once the broker acknowledged the record.
Send = Callable[[str, bytes, list[tuple[str, bytes]]], Awaitable[tuple[int, int]]]


@dataclass(frozen=True)
class Answer:
    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)
    # Close the connection after the answer (`Connection: close`): given while the body was not read whole.
    close: bool = False

    @classmethod
    def error(cls, status: int, code: str, detail: str, **headers: str) -> Answer:
        return cls(status, {"error": code, "detail": detail}, headers)

    def response(self) -> Response:
        # A copy of exact size: orjson's result keeps its 4 KiB buffer, held while the answer waits on a linger.
        body = bytes(memoryview(orjson.dumps(self.body)))
        response = Response(body=body, status=self.status, headers=self.headers, content_type="application/json")
        if self.close:
            response.force_close()
        return response


class Ingest:
    """The ingest logic, independent of the web framework: configuration check, verification, JSON check, write."""

    def __init__(
        self,
        settings: IngestSettings,
        send: Send,
        clock: Callable[[], float] = time.time,
        raw_prefix: str = Topics.ingest_raw,
        linger: float = LINGER,
    ) -> None:
        self.settings = settings
        self.send = send
        self.clock = clock
        self.raw_prefix = raw_prefix
        self.linger = linger
        # Requests past the header checks and not answered yet: each holds (or is reading) a body.
        self.in_flight = 0
        self._busy_logged = float("-inf")
        self.replays = ReplayCache(settings.replay_cache)

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

    def busy(self) -> Answer:
        return Answer.error(503, "busy", "too many requests in progress; retry later", **{"Retry-After": RETRY_AFTER})

    def check_headers(self, source: str, headers: Mapping[str, str]) -> None:
        """Raises SignatureError when the headers alone show the request is not authentic: credentials that live
        in headers are checked whole, a body signature for its presence, its form and its timestamp. Reasons are
        those `verify` gives. `headers` must be case-insensitive."""
        s = self.settings
        if source == "stripe":
            check_stripe_headers(headers.get("Stripe-Signature"), tolerance=s.stripe_tolerance, now=self.clock())
        elif source == "hubspot":
            check_hubspot_headers(
                headers.get("X-HubSpot-Signature-v3"), headers.get("X-HubSpot-Request-Timestamp"), now=self.clock()
            )
        else:
            self._verify_credentials(source, headers)

    def _verify_credentials(self, source: str, headers: Mapping[str, str]) -> None:
        s = self.settings
        if source == "pipedrive":
            assert s.pipedrive_user is not None and s.pipedrive_password is not None
            verify_basic(headers.get("Authorization"), s.pipedrive_user, s.pipedrive_password)
        else:
            assert s.token is not None
            verify_bearer(headers.get("Authorization"), s.token)

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
        else:
            self._verify_credentials(source, headers)

    def replay_identity(self, source: str, headers: Mapping[str, str], body: bytes) -> tuple[bytes, float]:
        """The replay-cache key of a verified request, and until when its signature would pass again."""
        now = self.clock()
        if source == "stripe":
            signed_at = stripe_timestamp(headers["Stripe-Signature"])
            expires = int(signed_at) + self.settings.stripe_tolerance
        elif source == "hubspot":
            signed_at = headers["X-HubSpot-Request-Timestamp"]
            expires = int(signed_at) / 1000 + HUBSPOT_TOLERANCE
        else:
            signed_at = ""
            expires = now + self.settings.replay_window
        # A second past the last instant the signature passes (comparisons there are inclusive).
        return ReplayCache.key(source, signed_at, body), max(expires, now) + 1.0

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
        key, expires = self.replay_identity(source, headers, body)
        if not self.replays.claim(source, key, expires, self.clock()):
            return Answer.error(409, "replayed", "this request was already accepted; it is not written again")
        stored = False
        try:
            answer = await self._write(source, headers, body)
            stored = answer.status == 200
            return answer
        finally:
            if not stored:
                # Not written (broker down, too large, cancelled): the provider's retry must pass.
                self.replays.release(key)

    async def _write(self, source: str, headers: Mapping[str, str], body: bytes) -> Answer:
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
        """Answer one HTTP request: what the headers decide first, with none of the body read; then, holding one
        of `max_in_flight` places, the body (at most `max_bytes` + 1 bytes, within `read_timeout`) and the rest."""
        headers = request.headers
        early = self.refuse_early(source, request.method, headers.get("Content-Length"))
        if early is None:
            try:
                self.check_headers(source, headers)
            except SignatureError as exc:
                early = Answer.error(401, "unauthorized", exc.reason)
        if early is None and self.in_flight >= self.settings.max_in_flight:
            early = self.busy()
            now = time.monotonic()
            if now - self._busy_logged >= _LOG_INTERVAL:
                self._busy_logged = now
                log.warning(
                    "ingest: %d requests in progress, answering 503 (REVPULSE_INGEST_MAX_IN_FLIGHT)", self.in_flight
                )
        if early is not None:
            # The body stays unread: the connection cannot serve another request after it.
            return replace(early, close=request.can_read_body)
        self.in_flight += 1
        try:
            try:
                async with asyncio.timeout(self.settings.read_timeout):
                    body = await _read_bounded(request, self.settings.max_bytes)
            except TimeoutError:
                detail = f"the body did not arrive within {self.settings.read_timeout:g} s"
                return replace(Answer.error(408, "timeout", detail), close=True)
            except (ConnectionError, RequestPayloadError) as exc:
                # The client left, or sent a malformed (e.g. chunked) body: not a server error worth a traceback.
                # The payload holds the exception, whose traceback holds this frame and so the payload: dropping
                # the traceback spares the collector that cycle.
                exc.__traceback__ = None
                return replace(Answer.error(400, "bad_request", f"the body could not be read: {exc}"), close=True)
            if body is None:
                return replace(self.too_large(), close=True)
            return await self.accept(
                source, method=request.method, url=self.url_of(request), headers=headers, body=body
            )
        finally:
            self.in_flight -= 1

    async def respond(self, source: str, request: aiohttp_web.Request) -> StreamResponse:
        """The HTTP response to one request. An answer given with the body unread is sent at once; then what the
        client still sends is dropped for at most `linger` seconds (or until it closes), and the connection closes."""
        answer = await self.receive(source, request)
        response = answer.response()
        if answer.close and not request.content.is_eof():
            try:
                await response.prepare(request)
                await response.write_eof()
                await _discard(request, self.linger)
            except (ConnectionError, RequestPayloadError) as exc:
                exc.__traceback__ = None
        return response

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


async def _discard(request: aiohttp_web.Request, seconds: float) -> None:
    """Read and drop the rest of the body, for at most `seconds`. A client that closes ends it at once (aiohttp
    fails the read of a running handler's body then, which it does not for its own lingering)."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            while await request.content.readany():
                pass


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
        return await self.ingest.respond(self.source, request)  # type: ignore[arg-type,return-value]

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


# The web server: limits that hold before any handler runs.


@dataclass(frozen=True)
class ServerLimits:
    header_timeout: float = 5.0
    max_connections: int = 512

    @classmethod
    def of(cls, settings: Settings) -> ServerLimits:
        return cls(settings.http_header_timeout, settings.http_max_connections)

    def handler_args(self) -> dict[str, Any]:
        """Keyword arguments of aiohttp's RequestHandler (one per connection)."""
        return {
            # aiohttp arms this timer when a connection opens and again after each answer, and drops the
            # connection if no whole request line and headers arrived by then: the header-read timeout (and the
            # keep-alive idle limit). A handler running is not affected.
            "keepalive_timeout": self.header_timeout,
            # The ingest handler lingers itself (`Ingest.respond`): aiohttp's lingering is not ended by the client
            # closing, and would keep the connection (counted against max_connections) for its whole length.
            "lingering_time": 0,
            "max_line_size": MAX_LINE_SIZE,
            "max_field_size": MAX_FIELD_SIZE,
            "max_headers": MAX_HEADERS,
        }


def _over_capacity_reply() -> bytes:
    body = orjson.dumps({"error": "busy", "detail": "too many connections; retry later"})
    head = (
        "HTTP/1.1 503 Service Unavailable\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n"
        f"Retry-After: {RETRY_AFTER}\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


_OVER_CAPACITY = _over_capacity_reply()


class LimitedServer(Server):
    """aiohttp's server, refusing a connection while `max_connections` are open: 503 with Retry-After, closed
    before anything of it is read. A connection counts from its opening until its last handler finished. Once a
    burst of connections is over, free memory goes back to the system (see TRIM_BURST)."""

    max_connections: int
    refused: int
    trims: int
    _refused_logged: float
    _burst: int  # the most connections open at once since the last trim
    _trim_handle: asyncio.TimerHandle | None
    _trimmed_at: float
    _quiet: bool  # the last check after a burst found at most TRIM_QUIET connections

    def limit(self, max_connections: int) -> None:
        self.max_connections = max_connections
        self.refused = self.trims = self._burst = 0
        self._refused_logged = self._trimmed_at = float("-inf")
        self._trim_handle = None
        self._quiet = False

    def connection_made(self, handler: RequestHandler, transport: asyncio.Transport) -> None:
        if len(self._connections) >= self.max_connections:
            self.refused += 1
            transport.write(_OVER_CAPACITY)
            # Closes the transport (once the answer is written) and ends the handler before it reads anything.
            handler.force_close()
            _drop_read_callback(transport)
            now = time.monotonic()
            if now - self._refused_logged >= _LOG_INTERVAL:
                self._refused_logged = now
                log.warning(
                    "web: %d connections open, refusing new ones (REVPULSE_HTTP_MAX_CONNECTIONS); %d refused so far",
                    self.max_connections,
                    self.refused,
                )
            return
        super().connection_made(handler, transport)
        self._burst = max(self._burst, len(self._connections))

    def connection_lost(self, handler: RequestHandler, exc: BaseException | None = None) -> None:
        transport = self._connections.get(handler)
        super().connection_lost(handler, exc)
        if transport is not None:
            _drop_read_callback(transport)
        if self._burst >= min(TRIM_BURST, self.max_connections) and self._trim_handle is None:
            self._trim_handle = self._loop.call_later(TRIM_DELAY, self._trim_after_burst)

    def _trim_after_burst(self) -> None:
        """Checked every TRIM_DELAY seconds after a burst: trims once two checks in a row found it quiet."""
        self._trim_handle = None
        now = time.monotonic()
        quiet = len(self._connections) <= TRIM_QUIET
        if quiet and self._quiet and now - self._trimmed_at >= TRIM_INTERVAL:
            self._burst = len(self._connections)
            self._trimmed_at = now
            self._quiet = False
            if _release_free_memory():
                self.trims += 1
            return
        self._quiet = quiet
        self._trim_handle = self._loop.call_later(TRIM_DELAY, self._trim_after_burst)

    def pre_shutdown(self) -> None:
        if self._trim_handle is not None:
            self._trim_handle.cancel()
            self._trim_handle = None
        super().pre_shutdown()


def _release_free_memory() -> bool:
    """Hand the allocator's free pages back to the system; False where that is not possible."""
    started = time.perf_counter()
    if not heap.release_free_memory():
        return False
    log.info("web: burst of connections over, free memory released in %.0f ms", (time.perf_counter() - started) * 1000)
    return True


def _drop_read_callback(transport: asyncio.BaseTransport) -> None:
    """Let a closed transport go with its last reference. Before Python 3.12 (CPython gh-100348) a selector socket
    transport keeps a bound method of itself in `_read_ready_cb`, so every connection ends as a reference cycle
    left to the cyclic collector, which this worker holds off (it freezes what survives a second, for minutes):
    a flood of short connections then stays in memory. 3.12's `close()` clears the attribute; this does the same
    once the transport is closing (its reader is removed by then, so the callback is never called again)."""
    if transport.is_closing() and getattr(transport, "_read_ready_cb", None) is not None:
        transport._read_ready_cb = None  # type: ignore[attr-defined]


class LimitedRunner(aiohttp_web.AppRunner):
    """An AppRunner whose server applies `ServerLimits`."""

    def __init__(self, app: aiohttp_web.Application, limits: ServerLimits, **kwargs: Any) -> None:
        super().__init__(app, **(kwargs | limits.handler_args()))
        self.limits = limits

    async def _make_server(self) -> Server:
        server = await super()._make_server()
        # The server is built by the Application (with its handler arguments, request factory and loop): this
        # subclass only adds methods and a few attributes, so it takes the instance over rather than rebuild it.
        assert type(server) is Server, type(server)
        server.__class__ = LimitedServer
        assert isinstance(server, LimitedServer)
        server.limit(self.limits.max_connections)
        return server


# Where Faust's own pages (router, tables, stats or its index) are served when REVPULSE_WEB_DEBUG is set: under a
# prefix of their own, so that they never take `/` or a path of RevPulse's.
DEBUG_PREFIX = "/faust"


class LimitedWeb(AiohttpWeb):
    """Faust's aiohttp web driver, serving through a `LimitedRunner`, bound to `host` (None: Faust's web_bind),
    over TLS when `ssl_context` is given, with `middlewares` before every handler. Faust's own pages are served
    under DEBUG_PREFIX when `debug`, else not at all."""

    def __init__(
        self,
        app: faust.App,
        *,
        limits: ServerLimits,
        host: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
        debug: bool = False,
        middlewares: Sequence[Any] = (),
        **kwargs: Any,
    ) -> None:
        self.debug_pages = debug  # read by _enabled_blueprints, which the base class's __init__ calls
        super().__init__(app, **kwargs)
        self.host = host
        self.ssl_context = ssl_context
        self.web_app.middlewares.extend(middlewares)
        self._runner = LimitedRunner(self.web_app, limits, access_log=None)

    def _enabled_blueprints(self) -> list[tuple[str, Any]]:
        if not self.debug_pages:
            return []
        return [(DEBUG_PREFIX + prefix, blueprint) for prefix, blueprint in super()._enabled_blueprints()]

    def _new_transport_tcp(self) -> aiohttp_web.BaseSite:
        conf = self.app.conf
        host = conf.web_bind if self.host is None else self.host
        ssl_context = conf.web_ssl_context if self.ssl_context is None else self.ssl_context
        return aiohttp_web.TCPSite(self._runner, host, conf.web_port, ssl_context=ssl_context)


def configure_web_server(app: faust.App, settings: Settings) -> None:
    """Have the app serve its web port as `settings` say (before any page is added): the connection limits, the
    bind address, TLS, the read credentials (web_access.py) and Faust's own pages."""
    if type(app).web.is_set(app):
        raise RuntimeError("configure_web_server must run before the app's web server is created")
    web = settings.web
    app.web = LimitedWeb(
        app,
        limits=ServerLimits.of(settings),
        host=web.host,
        ssl_context=server_ssl_context(web),
        debug=web.debug,
        middlewares=[access_middleware(ReadAccess.of(web))],
    )

    @app.task
    async def announce_web() -> None:
        # Logged once the worker runs (logging is configured by then).
        log.info("%s", describe(web, settings.web_port))
        warn_if_exposed(web)


class _ReplayCollector(Collector):
    """`revpulse_ingest_replays_refused_total{source}` and the replay cache's size and evictions."""

    def __init__(self, replays: ReplayCache) -> None:
        self.replays = replays

    def collect(self) -> Iterator[Metric]:
        refused = CounterMetricFamily(
            "revpulse_ingest_replays_refused",
            "Webhook requests refused (409) because the same request was already accepted",
            labels=["source"],
        )
        for source in RAW_SOURCES:
            refused.add_metric([source], self.replays.refused[source])
        yield refused
        yield CounterMetricFamily(
            "revpulse_ingest_replay_cache_evictions",
            "Accepted requests dropped from the full replay cache before their signature expired",
            value=self.replays.evicted,
        )
        yield GaugeMetricFamily(
            "revpulse_ingest_replay_cache_entries", "Accepted requests held by the replay cache", len(self.replays)
        )


def register_ingest(
    app: faust.App, settings: Settings, producer: ProducerService, registry: CollectorRegistry | None = None
) -> Ingest:
    """Add `/ingest/<source>` for every source in RAW_SOURCES to the app's web server; the replay counters go to
    `registry` when given."""
    ingest = Ingest(settings.ingest, producer_send(producer), raw_prefix=settings.topics.ingest_raw)
    if registry is not None:
        registry.register(_ReplayCollector(ingest.replays))
    for source in RAW_SOURCES:
        attrs = {"ingest": ingest, "source": source, "__module__": __name__}
        view = type(f"Ingest{source.capitalize()}View", (IngestView,), attrs)
        app.page(f"/ingest/{source}", name=f"ingest_{source}")(view)

    @app.task
    async def announce_ingest() -> None:
        # Logged once the worker runs (logging is configured by then): which sources answer, and which 404.
        log.info("HTTP ingest enabled for: %s", ", ".join(f"/ingest/{s}" for s in ingest.enabled) or "no source")

    return ingest
