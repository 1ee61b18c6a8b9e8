"""The worker's web port, in process: the read credentials, the open paths, Faust's pages, the bind address, TLS.

The web server is the real one of `create_worker` (every page the worker registers, whoever added it), started
alone on 127.0.0.1 (no broker: nothing else of the worker runs).
"""

from __future__ import annotations

import asyncio
import base64
import logging
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from aiohttp import ClientSession, ClientTimeout, web

from revpulse.agents.app import create_worker
from revpulse.agents.ingest import LimitedWeb
from revpulse.agents.web_access import OPEN_PATHS, OPEN_PREFIXES, ReadAccess, describe, is_open, warn_if_exposed
from revpulse.local.broker import free_port
from revpulse.settings import Settings
from revpulse.settings import Web as WebSettings
from tests.support.web_tls import ServerCertificate, make_server_certificate

TOKEN = "read-token-0123456789abcdef"
USER = "grafana"
PASSWORD = "read-password-0123"
BEARER = {"Authorization": f"Bearer {TOKEN}"}
BASIC = {"Authorization": "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()}
READ_PATHS = ("/metrics", "/api/metrics")


@asynccontextmanager
async def serve(tmp_path: Path, **env: str) -> AsyncIterator[tuple[str, web.Application]]:
    """The worker's web server on a free port: (base URL, aiohttp application)."""
    port = free_port()
    settings = Settings.from_env(
        {
            "REVPULSE_BROKER": "kafka://127.0.0.1:9",
            "REVPULSE_DATA_DIR": str(tmp_path / "data"),
            "REVPULSE_WEB_PORT": str(port),
            **env,
        }
    )
    server = create_worker(settings).app.web
    assert isinstance(server, LimitedWeb)
    server.init_server()
    await server.start_server()
    scheme = "https" if settings.web.tls else "http"
    try:
        yield f"{scheme}://127.0.0.1:{port}", server.web_app
    finally:
        await server.stop_server()


async def get(base: str, path: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, list[str]], bytes]:
    async with (
        ClientSession(timeout=ClientTimeout(total=10)) as session,
        session.get(base + path, headers=headers or {}) as reply,
    ):
        names = {name.lower() for name in reply.headers}
        return reply.status, {name: reply.headers.getall(name) for name in names}, await reply.read()


async def raw_status(port: int, target: str, headers: dict[str, str] | None = None) -> int:
    """The status of a GET whose request target is sent exactly as given (no client-side normalisation)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    lines = [f"GET {target} HTTP/1.1", "Host: 127.0.0.1", "Connection: close"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
    status_line = await reader.readline()
    writer.close()
    return int(status_line.split()[1])


# The rule.


def test_the_open_paths_are_exactly_the_probes_and_ingest() -> None:
    assert {"/healthz", "/readyz"} == OPEN_PATHS
    assert OPEN_PREFIXES == ("/ingest/",)
    for path in ("/healthz", "/readyz", "/ingest/stripe", "/ingest/events", "/ingest/{source}"):
        assert is_open(path), path
    for path in ("/", "/metrics", "/api/metrics", "/api/history", "/faust/router/", "/healthz/", "/ingest", "/x"):
        assert not is_open(path), path


@pytest.mark.parametrize(
    ("authorization", "allowed"),
    [
        (None, False),
        ("", False),
        (f"Bearer {TOKEN}", True),
        (f"bearer {TOKEN}", True),
        (f"Bearer  {TOKEN} ", True),
        (f"Bearer {TOKEN}x", False),
        (f"Bearer {TOKEN[:-1]}", False),
        ("Bearer ", False),
        (f"Token {TOKEN}", False),
        (BASIC["Authorization"], True),
        ("Basic " + base64.b64encode(f"{USER}:{PASSWORD}x".encode()).decode(), False),
        ("Basic " + base64.b64encode(f"x{USER}:{PASSWORD}".encode()).decode(), False),
        ("Basic " + base64.b64encode(f"{USER}{PASSWORD}".encode()).decode(), False),
        ("Basic not*base64", False),
        ("Basic " + base64.b64encode(b"\xff:\xfe").decode(), False),
        (f"Basic {TOKEN}", False),
    ],
)
def test_read_access_accepts_exactly_the_credentials(authorization: str | None, allowed: bool) -> None:
    access = ReadAccess.of(WebSettings(read_token=TOKEN, read_user=USER, read_password=PASSWORD))
    assert access.allows(authorization) is allowed


def test_read_access_holds_digests_not_secrets() -> None:
    access = ReadAccess.of(WebSettings(read_token=TOKEN, read_user=USER, read_password=PASSWORD))
    assert TOKEN not in repr(access) and PASSWORD not in repr(access)
    assert TOKEN.encode() not in (access.token or b"") and access.token is not None and len(access.token) == 32
    assert ReadAccess.of(WebSettings(read_token=TOKEN)).challenges() == ['Bearer realm="revpulse"']
    assert ReadAccess.of(WebSettings(read_user=USER, read_password=PASSWORD)).challenges() == [
        'Basic realm="revpulse", charset="UTF-8"'
    ]
    # A token only: basic credentials are no way in, even the right bytes.
    assert not ReadAccess.of(WebSettings(read_token=TOKEN)).allows(BASIC["Authorization"])
    assert ReadAccess.of(WebSettings()).allows(None)


# The served port.


@pytest.mark.asyncio
async def test_without_read_credentials_the_read_endpoints_are_open(tmp_path: Path) -> None:
    async with serve(tmp_path) as (base, _):
        for path in READ_PATHS:
            assert (await get(base, path))[0] == 200, path


@pytest.mark.asyncio
async def test_a_token_protects_every_path_but_the_probes_and_ingest(tmp_path: Path) -> None:
    async with serve(tmp_path, REVPULSE_READ_TOKEN=TOKEN) as (base, app):
        registered = {route.resource.canonical for route in app.router.routes() if route.resource is not None}
        protected = sorted(path for path in registered if not is_open(path))
        assert {"/metrics", "/api/metrics"} <= set(protected)
        for path in [*protected, "/", "/no-such-page"]:
            status, headers, body = await get(base, path)
            assert status == 401, path
            assert headers["www-authenticate"] == ['Bearer realm="revpulse"'], path
            assert body == b'{"error":"unauthorized","detail":"%s needs the read credentials"}' % path.encode()
            wrong = await get(base, path, {"Authorization": f"Bearer {TOKEN[:-1]}x"})
            assert wrong[0] == 401, path
        for path in READ_PATHS:
            status, _, body = await get(base, path, BEARER)
            assert status == 200, path
        assert (await get(base, "/metrics", BEARER))[2].startswith(b"# HELP")
        # Open: the probes (readyz is 503 here: nothing runs), and ingest with its own answers.
        assert (await get(base, "/healthz"))[0] == 200
        assert (await get(base, "/readyz"))[0] == 503
        status, headers, body = await get(base, "/ingest/events")
        assert (status, "www-authenticate" in headers) == (405, False)
        port = int(base.rsplit(":", 1)[1])
        # No spelling of a protected path gets through an open one: it is judged by the route it matched (401),
        # or matched none (404).
        for target in (
            "/ingest/../metrics",
            "/ingest/%2e%2e/metrics",
            "/healthz/../metrics",
            "/ingest/%2E%2E/api/metrics",
        ):
            assert await raw_status(port, target) in (401, 404), target
        assert await raw_status(port, "/%6detrics") == 401
        assert await raw_status(port, "/%6detrics", BEARER) == 200


@pytest.mark.asyncio
async def test_basic_auth_and_a_token_either_is_enough(tmp_path: Path) -> None:
    env = {"REVPULSE_READ_TOKEN": TOKEN, "REVPULSE_READ_USER": USER, "REVPULSE_READ_PASSWORD": PASSWORD}
    async with serve(tmp_path, **env) as (base, _):
        status, headers, _ = await get(base, "/metrics")
        assert status == 401
        assert headers["www-authenticate"] == ['Bearer realm="revpulse"', 'Basic realm="revpulse", charset="UTF-8"']
        assert (await get(base, "/metrics", BASIC))[0] == 200
        assert (await get(base, "/metrics", BEARER))[0] == 200
        wrong = "Basic " + base64.b64encode(f"{USER}:{PASSWORD[:-1]}".encode()).decode()
        assert (await get(base, "/metrics", {"Authorization": wrong}))[0] == 401


@pytest.mark.asyncio
async def test_faust_pages_are_off_by_default(tmp_path: Path) -> None:
    async with serve(tmp_path, REVPULSE_READ_TOKEN=TOKEN) as (base, app):
        registered = {route.resource.canonical for route in app.router.routes() if route.resource is not None}
        assert not {path for path in registered if path.startswith(("/router", "/table", "/graph", "/faust"))}
        for path in ("/router/", "/router/topics", "/table/", "/graph/", "/assignment/", "/faust/", "/stats/"):
            assert (await get(base, path, BEARER))[0] == 404, path
        # `/` is not Faust's index (a page of RevPulse's may live there).
        assert (await get(base, "/", BEARER))[2] != b'{"status":"OK"}'


@pytest.mark.asyncio
async def test_faust_pages_when_enabled_are_under_faust_and_protected(tmp_path: Path) -> None:
    async with serve(tmp_path, REVPULSE_READ_TOKEN=TOKEN, REVPULSE_WEB_DEBUG="true") as (base, _):
        assert (await get(base, "/faust/router/"))[0] == 401
        assert (await get(base, "/faust/router/", BEARER))[0] == 200
        assert (await get(base, "/faust/", BEARER))[0] == 200
        assert (await get(base, "/router/", BEARER))[0] == 404


@pytest.mark.asyncio
async def test_the_server_binds_the_configured_address(tmp_path: Path) -> None:
    for env, host in [({}, "127.0.0.1"), ({"REVPULSE_WEB_HOST": "0.0.0.0"}, "0.0.0.0")]:
        settings = Settings.from_env({"REVPULSE_DATA_DIR": str(tmp_path), **env})
        server = create_worker(settings).app.web
        assert isinstance(server, LimitedWeb)
        await server._runner.setup()
        try:
            site = server._new_transport_tcp()
            assert (site._host, site._port, site._ssl_context) == (host, settings.web_port, None)  # type: ignore[attr-defined]
        finally:
            await server._runner.cleanup()


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> ServerCertificate:
    return make_server_certificate(tmp_path_factory.mktemp("tls"))


@pytest.mark.asyncio
async def test_tls_on_the_web_port(tmp_path: Path, certificate: ServerCertificate) -> None:
    env = {
        "REVPULSE_WEB_CERTFILE": str(certificate.cert),
        "REVPULSE_WEB_KEYFILE": str(certificate.key),
        "REVPULSE_READ_TOKEN": TOKEN,
    }
    async with serve(tmp_path, **env) as (base, _):
        assert base.startswith("https://")
        context = certificate.client_context()
        async with ClientSession(timeout=ClientTimeout(total=10)) as session:
            async with session.get(base + "/metrics", headers=BEARER, ssl=context) as reply:
                assert reply.status == 200
            async with session.get(base + "/metrics", ssl=context) as reply:
                assert reply.status == 401
            async with session.get(base + "/healthz", ssl=context) as reply:
                assert reply.status == 200
            # A client that does not trust the CA refuses the server.
            with pytest.raises(Exception, match=r"CERTIFICATE_VERIFY_FAILED|certificate verify failed"):
                async with session.get(base + "/healthz", ssl=ssl.create_default_context()):
                    pass
        # Plain HTTP on the TLS port gets no page.
        port = int(base.rsplit(":", 1)[1])
        with pytest.raises((ConnectionError, ValueError, IndexError, asyncio.IncompleteReadError)):
            status = await raw_status(port, "/healthz")
            assert status != 200
            raise ValueError(status)


def test_the_start_log_says_where_the_port_listens_and_what_protects_it(caplog: pytest.LogCaptureFixture) -> None:
    assert describe(WebSettings(), 6066) == (
        "web port http://127.0.0.1:6066: read endpoints need no credentials (REVPULSE_READ_TOKEN is not set)"
    )
    both = WebSettings(host="0.0.0.0", read_token=TOKEN, read_user=USER, read_password=PASSWORD, debug=True)
    assert describe(both, 1) == (
        "web port http://0.0.0.0:1: read endpoints need bearer token or basic auth, Faust's pages under /faust/"
    )
    with caplog.at_level(logging.WARNING, logger="revpulse.agents.web_access"):
        for quiet in (WebSettings(), WebSettings(host="::1"), WebSettings(host="localhost"), both):
            warn_if_exposed(quiet)
        assert caplog.records == []
        warn_if_exposed(WebSettings(host="0.0.0.0"))
    (record,) = caplog.records
    assert record.levelno == logging.WARNING
    assert record.getMessage().startswith("the web port listens on 0.0.0.0 without read credentials")
