"""Limits of HTTP ingest, in process: what is decided before the body is read, the read and header timeouts, the
in-flight cap and the connection cap.

The handler is served by `LimitedRunner` (the runner the worker's web driver uses) on 127.0.0.1; clients are raw
asyncio streams, so a test controls exactly which bytes have been sent when an answer arrives.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
import weakref
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import faust
import pytest
from aiohttp import ClientSession, web

from revpulse.agents import ingest as ingest_module
from revpulse.agents.ingest import (
    Ingest,
    LimitedRunner,
    LimitedServer,
    LimitedWeb,
    ServerLimits,
    configure_web_server,
)
from revpulse.connectors.signatures import (
    SignatureError,
    check_hubspot_headers,
    check_stripe_headers,
    verify_hubspot_v3,
    verify_stripe,
)
from revpulse.settings import Ingest as IngestSettings
from revpulse.settings import Settings
from tests.support.webhooks import (
    HUBSPOT_SECRET,
    PIPEDRIVE_PASSWORD,
    PIPEDRIVE_USER,
    STRIPE_SECRET,
    TOKEN,
    basic_headers,
    bearer_headers,
    close_quietly,
    hubspot_headers,
    marker_body,
    read_reply,
    request_head,
    stripe_headers,
    wait_closed,
)

SETTINGS = IngestSettings(
    stripe_webhook_secret=STRIPE_SECRET,
    hubspot_client_secret=HUBSPOT_SECRET,
    pipedrive_user=PIPEDRIVE_USER,
    pipedrive_password=PIPEDRIVE_PASSWORD,
    token=TOKEN,
    max_bytes=65536,
    read_timeout=0.5,
    max_in_flight=2,
)
LIMITS = ServerLimits(header_timeout=0.5, max_connections=8)
LINGER = 0.5  # seconds the handler drops what a refused client still sends
DECLARED = 60_000  # a Content-Length under max_bytes, of which only a few bytes are ever sent


@dataclass
class Served:
    port: int
    ingest: Ingest
    server: LimitedServer
    written: list[bytes]

    async def connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection("127.0.0.1", self.port)


@asynccontextmanager
async def serve(
    settings: IngestSettings = SETTINGS,
    limits: ServerLimits = LIMITS,
    gate: asyncio.Event | None = None,
    linger: float = LINGER,
) -> AsyncIterator[Served]:
    """The ingest handler behind a LimitedRunner; `gate`, when given, holds every write until it is set."""
    written: list[bytes] = []

    async def send(topic: str, value: bytes, headers: list[tuple[str, bytes]]) -> tuple[int, int]:
        if gate is not None:
            await gate.wait()
        written.append(value)
        return 0, len(written) - 1

    ingest = Ingest(settings, send, linger=linger)

    async def handle(request: web.Request) -> web.StreamResponse:
        return await ingest.respond(request.match_info["source"], request)

    app = web.Application()
    app.router.add_route("*", "/ingest/{source}", handle)
    runner = LimitedRunner(app, limits, shutdown_timeout=1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    assert isinstance(runner.server, LimitedServer)
    try:
        yield Served(site.port, ingest, runner.server, written)
    finally:
        await runner.cleanup()


# What the headers alone decide: the same reasons as the verifiers.

NOW = 1_700_000_000.0
HEX = "ab" * 32


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "garbage",
        f"v1={HEX}",
        "t=abc,v1=" + HEX,
        f"t={int(NOW)}",
        f"t={int(NOW)},v0={HEX}",
        f"t={int(NOW) - 301},v1={HEX}",
        f"t={int(NOW) + 301},v1={HEX}",
        f"t={int(NOW)},v1=short",
        f"t={int(NOW)},v1={HEX.upper()}",
        f"t={int(NOW)},v1={HEX}",
        f"t={int(NOW)},v1=x,v1={HEX}",
    ],
)
def test_stripe_header_check_gives_the_verifier_reason(header: str | None) -> None:
    """Whatever the header check refuses, the full verification refuses for the same reason, for any body."""
    try:
        check_stripe_headers(header, tolerance=300, now=NOW)
    except SignatureError as exc:
        with pytest.raises(SignatureError) as full:
            verify_stripe(b"{}", header, STRIPE_SECRET, tolerance=300, now=NOW)
        assert full.value.reason == exc.reason
    else:
        # Well formed and in time: only the body can tell.
        assert header is not None and HEX in header


def test_stripe_header_check_passes_a_real_signature() -> None:
    headers = stripe_headers(b"{}", t=int(NOW))
    check_stripe_headers(headers["Stripe-Signature"], tolerance=300, now=NOW)
    verify_stripe(b"{}", headers["Stripe-Signature"], STRIPE_SECRET, tolerance=300, now=NOW)


@pytest.mark.parametrize(
    ("signature", "timestamp"),
    [
        (None, str(int(NOW * 1000))),
        ("x" * 43 + "=", None),
        ("x" * 43 + "=", "soon"),
        ("x" * 43 + "=", str(int(NOW * 1000) - 301_000)),
        ("not base64", str(int(NOW * 1000))),
        ("x" * 44, str(int(NOW * 1000))),
        ("x" * 43 + "=", str(int(NOW * 1000))),
    ],
)
def test_hubspot_header_check_gives_the_verifier_reason(signature: str | None, timestamp: str | None) -> None:
    try:
        check_hubspot_headers(signature, timestamp, now=NOW)
    except SignatureError as exc:
        with pytest.raises(SignatureError) as full:
            verify_hubspot_v3(
                b"{}", method="POST", uri="https://x/", signature=signature, timestamp=timestamp,
                secret=HUBSPOT_SECRET, now=NOW,
            )  # fmt: skip
        assert full.value.reason == exc.reason
    else:
        assert signature == "x" * 43 + "="


def test_hubspot_header_check_passes_a_real_signature() -> None:
    headers = hubspot_headers(b"{}", ms=int(NOW * 1000))
    check_hubspot_headers(headers["X-HubSpot-Signature-v3"], headers["X-HubSpot-Request-Timestamp"], now=NOW)


# Refused before the body: the answer arrives while most of the body was never sent.


def _stale_stripe() -> dict[str, str]:
    return stripe_headers(b"{}", t=int(time.time()) - 301)


def _malformed_stripe() -> dict[str, str]:
    return {"Stripe-Signature": f"t={int(time.time())},v1=zz"}


def _stale_hubspot() -> dict[str, str]:
    return hubspot_headers(b"{}", ms=int(time.time() * 1000) - 301_000)


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("source", "headers", "detail"),
    [
        ("events", dict, "missing bearer token"),
        ("events", lambda: bearer_headers("wrong-token"), "wrong bearer token"),
        ("pipedrive", dict, "missing HTTP basic credentials"),
        ("pipedrive", lambda: basic_headers(password="wrong"), "wrong HTTP basic credentials"),
        ("stripe", dict, "missing Stripe-Signature header"),
        ("stripe", _stale_stripe, "Stripe-Signature timestamp outside the tolerance"),
        ("stripe", _malformed_stripe, "Stripe-Signature does not match the body"),
        ("hubspot", dict, "missing X-HubSpot-Signature-v3 header"),
        ("hubspot", _stale_hubspot, "X-HubSpot-Request-Timestamp outside the tolerance"),
    ],
)
async def test_unauthenticated_is_401_before_the_body(
    source: str, headers: Callable[[], dict[str, str]], detail: str
) -> None:
    async with serve() as served:
        reader, writer = await served.connect()
        try:
            # Headers and 16 bytes of a declared 60,000: a handler that read the body first would wait for the rest.
            head = request_head(f"/ingest/{source}", headers(), content_length=DECLARED)
            writer.write(head + b'{"pad": "xxxxxxx')
            await writer.drain()
            async with asyncio.timeout(2):
                reply = await read_reply(reader)
            assert reply is not None
            assert (reply.status, reply.json()) == (401, {"error": "unauthorized", "detail": detail})
            assert reply.headers["connection"] == "close"
            # Closed after at most the linger (what the client still sends meanwhile is discarded).
            assert await wait_closed(reader, LINGER + 2) <= LINGER + 1
        finally:
            await close_quietly(writer)
        assert served.written == []
        assert served.ingest.in_flight == 0


@pytest.mark.asyncio
async def test_a_declared_size_over_the_limit_is_413_before_the_body() -> None:
    async with serve() as served:
        reader, writer = await served.connect()
        try:
            writer.write(request_head("/ingest/events", bearer_headers(), content_length=10**9) + b"{")
            async with asyncio.timeout(2):
                reply = await read_reply(reader)
            assert reply is not None and reply.status == 413
            assert reply.headers["connection"] == "close"
        finally:
            await close_quietly(writer)


@pytest.mark.asyncio
async def test_a_well_formed_signature_waits_for_the_body_then_is_verified() -> None:
    """Stripe signs the body: with headers that may be right the body is read, then the signature checked."""
    body = marker_body()
    async with serve() as served:
        for headers, status in [(stripe_headers(body, secret="whsec_other"), 401), (stripe_headers(body), 200)]:
            reader, writer = await served.connect()
            try:
                writer.write(request_head("/ingest/stripe", headers, content_length=len(body)) + body[:5])
                await writer.drain()
                with pytest.raises(TimeoutError):  # nothing before the body
                    async with asyncio.timeout(0.2):
                        await read_reply(reader)
                writer.write(body[5:])
                async with asyncio.timeout(2):
                    reply = await read_reply(reader)
                assert reply is not None and reply.status == status, reply
                assert "connection" not in reply.headers  # the body was read: the connection may be reused
            finally:
                await close_quietly(writer)
        assert served.written == [body]


@pytest.mark.asyncio
async def test_the_linger_ends_when_the_client_closes() -> None:
    """After a refusal the handler drops what the client still sends; a client that closes frees the connection
    at once, not at the end of the linger."""
    async with serve(linger=30) as served:
        reader, writer = await served.connect()
        writer.write(request_head("/ingest/events", content_length=DECLARED) + b"[" * 100)
        reply = await read_reply(reader)
        assert reply is not None and reply.status == 401
        await asyncio.sleep(0.1)
        assert len(served.server.connections) == 1  # lingering
        await close_quietly(writer)
        async with asyncio.timeout(1):
            while served.server.connections:
                await asyncio.sleep(0.01)


@pytest.mark.asyncio
async def test_a_client_leaving_mid_body_frees_its_place_quietly(caplog: pytest.LogCaptureFixture) -> None:
    async with serve() as served:
        _, writer = await served.connect()
        writer.write(request_head("/ingest/events", bearer_headers(), content_length=DECLARED) + b"[" * 100)
        async with asyncio.timeout(1):
            while served.ingest.in_flight == 0:
                await asyncio.sleep(0.01)
        with caplog.at_level(logging.DEBUG, logger="aiohttp"):
            writer.transport.abort()
            async with asyncio.timeout(1):
                while served.ingest.in_flight or served.server.connections:
                    await asyncio.sleep(0.01)
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR]  # no "Error handling request" 500
        assert served.written == []


@pytest.mark.asyncio
async def test_an_undecodable_body_is_400() -> None:
    """A body aiohttp cannot decode (here a gzip that is not) fails the read: 400, not a 500 with a traceback."""
    async with serve() as served:
        reader, writer = await served.connect()
        try:
            headers = bearer_headers() | {"Content-Encoding": "gzip"}
            writer.write(request_head("/ingest/events", headers, content_length=20) + b"\x1f\x8b" + b"z" * 18)
            async with asyncio.timeout(2):
                reply = await read_reply(reader)
            assert reply is not None and reply.status == 400, reply
            assert reply.json()["error"] == "bad_request"
            assert reply.json()["detail"].startswith("the body could not be read: ")
        finally:
            await close_quietly(writer)
        assert served.written == []
        assert served.ingest.in_flight == 0


# Timeouts.


@pytest.mark.asyncio
@pytest.mark.parametrize("trickle", [False, True], ids=["stalled", "trickling"])
async def test_a_slow_body_is_408_within_the_read_timeout(trickle: bool) -> None:
    """The read timeout bounds the whole body, not the pause between two bytes."""
    async with serve() as served:
        reader, writer = await served.connect()
        try:
            writer.write(request_head("/ingest/events", bearer_headers(), content_length=DECLARED) + b"[")
            await writer.drain()
            started = time.monotonic()

            async def dribble() -> None:
                while trickle:
                    await asyncio.sleep(0.05)
                    writer.write(b" ")

            dribbler = asyncio.create_task(dribble())
            try:
                async with asyncio.timeout(3):
                    reply = await read_reply(reader)
            finally:
                dribbler.cancel()
            elapsed = time.monotonic() - started
            assert reply is not None
            assert (reply.status, reply.json()) == (
                408,
                {"error": "timeout", "detail": "the body did not arrive within 0.5 s"},
            )
            assert 0.4 <= elapsed <= 1.5
            assert reply.headers["connection"] == "close"
            assert await wait_closed(reader, LINGER + 2) <= LINGER + 1
        finally:
            await close_quietly(writer)
        assert served.ingest.in_flight == 0


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "sent",
    [b"", b"POST /ingest/events HTTP/1.1\r\n", b"POST /ingest/events HTTP/1.1\r\nHost: x\r\n"],
    ids=["nothing", "request-line", "some-headers"],
)
async def test_a_connection_without_whole_headers_is_dropped_within_the_header_timeout(sent: bytes) -> None:
    async with serve() as served:
        reader, writer = await served.connect()
        try:
            writer.write(sent)

            async def dribble() -> None:
                # One more header line now and then: progress does not extend the timeout.
                for n in range(100):
                    await asyncio.sleep(0.1)
                    writer.write(f"X-Slow-{n}: 1\r\n".encode())

            dribbler = asyncio.create_task(dribble()) if sent else None
            try:
                elapsed = await wait_closed(reader, 3)
            finally:
                if dribbler is not None:
                    dribbler.cancel()
            assert 0.4 <= elapsed <= 1.5
        finally:
            await close_quietly(writer)


@pytest.mark.asyncio
async def test_an_idle_keep_alive_connection_is_dropped_within_the_header_timeout() -> None:
    async with serve() as served:
        reader, writer = await served.connect()
        try:
            body = b"[]"
            writer.write(request_head("/ingest/events", bearer_headers(), content_length=len(body)) + body)
            reply = await read_reply(reader)
            assert reply is not None and reply.status == 200
            assert await wait_closed(reader, 3) <= 1.5
        finally:
            await close_quietly(writer)


# Caps.


@pytest.mark.asyncio
async def test_over_the_in_flight_cap_is_503_with_retry_after() -> None:
    gate = asyncio.Event()
    async with serve(gate=gate) as served, ClientSession() as session:
        url = f"http://127.0.0.1:{served.port}/ingest/events"
        # Distinct bodies: the same body twice would be a replay (409), whatever the cap.
        held = [asyncio.create_task(session.post(url, data=f"[{i}]", headers=bearer_headers())) for i in range(2)]
        async with asyncio.timeout(2):
            while served.ingest.in_flight < 2:
                await asyncio.sleep(0.01)
        # Credentials are still checked first: an unauthenticated request is 401, not 503.
        async with session.post(url, data=b"[]") as reply:
            assert reply.status == 401
        async with session.post(url, data=b"[]", headers=bearer_headers()) as reply:
            assert reply.status == 503
            assert reply.headers["Retry-After"] == "1"
            assert await reply.json() == {"error": "busy", "detail": "too many requests in progress; retry later"}
        gate.set()
        for task in held:
            async with await task as reply:
                assert reply.status == 200
        async with session.post(url, data=b"[]", headers=bearer_headers()) as reply:
            assert reply.status == 200
        assert served.ingest.in_flight == 0
        assert len(served.written) == 3


@pytest.mark.asyncio
async def test_over_the_connection_cap_is_503_and_closed() -> None:
    limits = ServerLimits(header_timeout=5, max_connections=3)
    async with serve(limits=limits) as served:
        held = [await served.connect() for _ in range(3)]
        try:
            async with asyncio.timeout(2):
                while len(served.server.connections) < 3:
                    await asyncio.sleep(0.01)
            reader, writer = await served.connect()
            try:
                # Answered without having sent anything, then closed.
                async with asyncio.timeout(2):
                    reply = await read_reply(reader)
                assert reply is not None
                assert (reply.status, reply.headers["retry-after"], reply.headers["connection"]) == (503, "1", "close")
                assert reply.json() == {"error": "busy", "detail": "too many connections; retry later"}
                assert await wait_closed(reader, 2) < 1
            finally:
                await close_quietly(writer)
            assert served.server.refused == 1
            # One closes: there is room again.
            await close_quietly(held.pop()[1])
            async with asyncio.timeout(2):
                while len(served.server.connections) > 2:
                    await asyncio.sleep(0.01)
            reader, writer = await served.connect()
            try:
                writer.write(request_head("/ingest/events", bearer_headers(), content_length=2) + b"[]")
                reply = await read_reply(reader)
                assert reply is not None and reply.status == 200
            finally:
                await close_quietly(writer)
        finally:
            for _, writer in held:
                await close_quietly(writer)


@pytest.mark.asyncio
async def test_a_closed_connection_is_freed_without_the_cyclic_collector() -> None:
    """The worker freezes what survives a second (gc.freeze): anything left to the cyclic collector stays for
    minutes. A closed connection's transport must go with its last reference."""
    async with serve() as served:
        transports: list[weakref.ref[asyncio.BaseTransport]] = []
        made = served.server.connection_made

        def track(handler: object, transport: asyncio.Transport) -> None:
            transports.append(weakref.ref(transport))
            made(handler, transport)  # type: ignore[arg-type]

        served.server.connection_made = track  # type: ignore[method-assign]
        gc.collect()
        gc.disable()
        try:
            for head in [
                request_head("/ingest/events", bearer_headers(), content_length=2) + b"[]",  # answered 200
                request_head("/ingest/events", content_length=DECLARED) + b"[",  # 401, then the linger
                b"",  # nothing: dropped at the header timeout
            ]:
                reader, writer = await served.connect()
                writer.write(head)
                if head:
                    assert await read_reply(reader) is not None
                await close_quietly(writer)
            async with asyncio.timeout(3):
                while served.server.connections:
                    await asyncio.sleep(0.01)
            await asyncio.sleep(0.1)
            assert len(transports) == 3
            assert [ref() for ref in transports] == [None, None, None]
        finally:
            gc.enable()


@pytest.mark.asyncio
async def test_free_memory_is_released_once_a_burst_is_over(monkeypatch: pytest.MonkeyPatch) -> None:
    released: list[float] = []
    monkeypatch.setattr(ingest_module, "_release_free_memory", lambda: released.append(time.monotonic()) or True)
    monkeypatch.setattr(ingest_module, "TRIM_BURST", 4)
    monkeypatch.setattr(ingest_module, "TRIM_QUIET", 1)
    monkeypatch.setattr(ingest_module, "TRIM_DELAY", 0.1)
    async with serve(limits=ServerLimits(header_timeout=5, max_connections=8)) as served:
        # Fewer than TRIM_BURST at once, however many: no trim.
        for _ in range(6):
            _, writer = await served.connect()
            await asyncio.sleep(0.02)
            await close_quietly(writer)
        await asyncio.sleep(0.5)
        assert released == []
        # A burst of 6 at once: trimmed once they are gone, and only then.
        held = [await served.connect() for _ in range(6)]
        await asyncio.sleep(0.5)
        await close_quietly(held.pop()[1])
        await asyncio.sleep(0.5)
        assert released == []  # 5 still open
        closed_at = time.monotonic()
        for _, writer in held:
            await close_quietly(writer)
        await asyncio.sleep(0.6)
        assert len(released) == 1 and released[0] >= closed_at + 0.1
        assert served.server.trims == 1


# The worker's web driver.


def test_configure_web_server_installs_the_limits() -> None:
    settings = Settings(http_header_timeout=2.5, http_max_connections=100)
    app = faust.App("limits-test", web_enabled=True)
    configure_web_server(app, settings)
    assert isinstance(app.web, LimitedWeb)
    runner = app.web._runner
    assert isinstance(runner, LimitedRunner)
    assert runner.limits == ServerLimits(2.5, 100)
    handler_args = ServerLimits(2.5, 100).handler_args()
    # The header timeout is aiohttp's keep-alive timer (armed from the opening); the ingest handler lingers itself.
    assert (handler_args["keepalive_timeout"], handler_args["lingering_time"]) == (2.5, 0)
    # Once the web server exists, it is too late.
    with pytest.raises(RuntimeError):
        configure_web_server(app, settings)
