"""The protected web port on real worker processes and the embedded broker, scraped by a real Prometheus.

Two deployments: one on plain HTTP with a bearer read token from a file (as docker-compose runs it), one on TLS
with a certificate made here (openssl CLI) and basic auth. Prometheus (Debian's binary) scrapes each with the
shipped `revpulse` job's `authorization` block (token file path rewritten to the test's), and once with a wrong
token, which must fail. The plain worker also takes webhooks, to show a replayed one refused, counted, and
written once.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import http.client
import shutil
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from revpulse.agents.base import read_topic
from revpulse.local.broker import free_port
from revpulse.local.processes import WorkerProcess, terminate
from revpulse.topics import raw_topic
from tests.support.deployment import deployment
from tests.support.paths import ROOT
from tests.support.web_tls import ServerCertificate, make_server_certificate
from tests.support.webhooks import TOKEN as INGEST_TOKEN
from tests.support.webhooks import bearer_headers, marker_body, request

pytestmark = pytest.mark.integration

READ_TOKEN = "it-read-token-5b0e2c7d9a41f386"
READ_USER = "reader"
READ_PASSWORD = "it-read-password-9c1e"
BEARER = {"Authorization": f"Bearer {READ_TOKEN}"}
BASIC = {"Authorization": "Basic " + base64.b64encode(f"{READ_USER}:{READ_PASSWORD}".encode()).decode()}
PROMETHEUS_CONFIG = ROOT / "ops" / "prometheus" / "prometheus.yml"
FAUST_PAGES = ("/router/", "/router/topics", "/table/", "/graph/", "/assignment/", "/faust/", "/faust/router/")


@pytest.fixture(scope="module")
def token_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("secrets") / "read_token"
    path.write_text(READ_TOKEN + "\n")  # a trailing newline, as `echo` or an editor leaves it
    return path


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> ServerCertificate:
    return make_server_certificate(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def plain(broker: str, token_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerProcess]:
    """A worker on plain HTTP: read token from a file, the `events` ingest source on."""
    workers = deployment(
        broker,
        tmp_path_factory.mktemp("plain"),
        REVPULSE_READ_TOKEN_FILE=str(token_file),
        REVPULSE_INGEST_TOKEN=INGEST_TOKEN,
    )
    try:
        yield workers.start("w1")
    finally:
        workers.stop_all()


@pytest.fixture(scope="module")
def tls(
    broker: str, certificate: ServerCertificate, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WorkerProcess]:
    """A worker on TLS with basic auth."""
    workers = deployment(
        broker,
        tmp_path_factory.mktemp("tls-worker"),
        REVPULSE_WEB_CERTFILE=str(certificate.cert),
        REVPULSE_WEB_KEYFILE=str(certificate.key),
        REVPULSE_READ_USER=READ_USER,
        REVPULSE_READ_PASSWORD=READ_PASSWORD,
    )
    try:
        yield workers.start("w1", client_ssl=certificate.client_context())
    finally:
        workers.stop_all()


def _headers_of(worker: WorkerProcess, path: str, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    request_ = urllib.request.Request(worker.base_url + path, headers=headers or {})
    try:
        with urllib.request.urlopen(request_, timeout=10, context=worker.client_ssl) as response:
            return response.status, response.headers
    except urllib.error.HTTPError as error:
        return error.code, error.headers


# Plain HTTP, bearer token.


def test_the_read_endpoints_need_the_token(plain: WorkerProcess) -> None:
    assert plain.base_url.startswith("http://127.0.0.1:")
    for path in ("/metrics", "/api/metrics"):
        status, body = plain.get(path)
        assert status == 401, path
        assert orjson.loads(body) == {"error": "unauthorized", "detail": f"{path} needs the read credentials"}
        status, headers = _headers_of(plain, path)
        assert headers.get_all("WWW-Authenticate") == ['Bearer realm="revpulse"']
        assert plain.get(path, {"Authorization": f"Bearer {READ_TOKEN[:-1]}0"})[0] == 401
        assert plain.get(path, BEARER)[0] == 200, path
    status, body = plain.get("/metrics", BEARER)
    assert body.startswith(b"# HELP")
    assert isinstance(orjson.loads(plain.get("/api/metrics", BEARER)[1]), list)


def test_the_probes_stay_open(plain: WorkerProcess) -> None:
    assert plain.get("/healthz")[0] == 200
    assert plain.get("/readyz")[0] == 200


def test_faust_pages_are_off(plain: WorkerProcess) -> None:
    for path in FAUST_PAGES:
        assert plain.get(path, BEARER)[0] == 404, path
        assert plain.get(path)[0] == 401, path


def test_the_web_port_listens_on_loopback_only(plain: WorkerProcess) -> None:
    """The default REVPULSE_WEB_HOST: another address of this machine gets no connection."""
    addresses = {address for address in _local_addresses() if not address.startswith("127.")}
    if not addresses:
        pytest.skip("this machine has no non-loopback IPv4 address")
    for address in addresses:
        with pytest.raises(OSError):
            socket.create_connection((address, plain.settings.web_port), timeout=2).close()


def _local_addresses() -> set[str]:
    """IPv4 addresses of this machine: its host name's, and the one a route out would use (no packet is sent)."""
    addresses: set[str] = set()
    with contextlib.suppress(OSError):
        addresses |= {str(info[4][0]) for info in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET)}
    with contextlib.suppress(OSError), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect(("192.0.2.1", 9))  # TEST-NET-1: connect() on UDP only picks the source address
        addresses.add(probe.getsockname()[0])
    return addresses


def test_a_replayed_webhook_is_refused_counted_and_written_once(plain: WorkerProcess) -> None:
    body = marker_body()
    first = request(plain, "/ingest/events", body, bearer_headers())
    assert first[0] == 200, first
    # Ingest keeps its own authentication: the read token is neither needed nor enough there.
    assert request(plain, "/ingest/events", marker_body(), BEARER | {"Content-Type": "application/json"})[0] == 401
    for _ in range(2):
        status, _, answer = request(plain, "/ingest/events", body, bearer_headers())
        assert (status, answer["error"]) == (409, "replayed")
    topic = raw_topic("events", plain.settings.topics.ingest_raw)
    records = asyncio.run(read_topic(plain.settings, topic))
    assert [record.value for record in records].count(body) == 1
    exposition = plain.get("/metrics", BEARER)[1].decode()
    assert 'revpulse_ingest_replays_refused_total{source="events"} 2.0' in exposition
    assert shutil.which("promtool"), "promtool is not installed: `make tools`"
    done = subprocess.run(["promtool", "check", "metrics"], input=exposition, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


# TLS, basic auth.


def test_tls_serves_the_port_with_the_configured_certificate(
    tls: WorkerProcess, certificate: ServerCertificate
) -> None:
    assert tls.base_url.startswith("https://127.0.0.1:")
    assert tls.get("/healthz")[0] == 200
    assert tls.get("/metrics")[0] == 401
    _, headers = _headers_of(tls, "/metrics")
    assert headers.get_all("WWW-Authenticate") == ['Basic realm="revpulse", charset="UTF-8"']
    assert tls.get("/metrics", BASIC)[0] == 200
    # The certificate is the configured one: its CA verifies it, for 127.0.0.1.
    with (
        socket.create_connection(("127.0.0.1", tls.settings.web_port), timeout=5) as raw,
        certificate.client_context().wrap_socket(raw, server_hostname="127.0.0.1") as wrapped,
    ):
        assert wrapped.version() in ("TLSv1.2", "TLSv1.3")
    # A client that does not trust that CA refuses it; plain HTTP gets no answer.
    with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):
        urllib.request.urlopen(tls.base_url + "/healthz", timeout=5, context=ssl.create_default_context())
    connection = http.client.HTTPConnection("127.0.0.1", tls.settings.web_port, timeout=5)
    try:
        with pytest.raises((http.client.HTTPException, ConnectionError)):
            connection.request("GET", "/healthz")
            response = connection.getresponse()
            raise http.client.HTTPException(f"answered {response.status} over plain HTTP")
    finally:
        connection.close()


# A real Prometheus with the shipped job's authorization.


def _shipped_job() -> dict[str, Any]:
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    job: dict[str, Any] = next(job for job in config["scrape_configs"] if job["job_name"] == "revpulse")
    return job


def test_prometheus_scrapes_with_the_shipped_authorization(
    plain: WorkerProcess,
    tls: WorkerProcess,
    token_file: Path,
    certificate: ServerCertificate,
    tmp_path: Path,
) -> None:
    binary = shutil.which("prometheus")
    assert binary is not None, "Debian's prometheus is not installed: `make tools` (apt-get install prometheus)"
    shipped = _shipped_job()
    assert shipped["authorization"]["credentials_file"] == "secrets/read_token"
    # The shipped layout: the token file beside the config, in secrets/.
    (tmp_path / "secrets").mkdir()
    shutil.copy(token_file, tmp_path / "secrets" / "read_token")
    (tmp_path / "wrong_token").write_text("not-the-read-token-at-all")
    jobs = [
        {**shipped, "static_configs": [{"targets": [f"127.0.0.1:{plain.settings.web_port}"]}]},
        {
            **shipped,
            "job_name": "wrong-token",
            "authorization": {"credentials_file": str(tmp_path / "wrong_token")},
            "static_configs": [{"targets": [f"127.0.0.1:{plain.settings.web_port}"]}],
        },
        {
            "job_name": "tls",
            "scheme": "https",
            "tls_config": {"ca_file": str(certificate.ca)},
            "basic_auth": {"username": READ_USER, "password": READ_PASSWORD},
            "static_configs": [{"targets": [f"127.0.0.1:{tls.settings.web_port}"]}],
        },
    ]
    config = {"global": {"scrape_interval": "1s", "scrape_timeout": "1s"}, "scrape_configs": jobs}
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config, sort_keys=False))
    check = subprocess.run(
        ["promtool", "check", "config", str(tmp_path / "prometheus.yml")], capture_output=True, text=True
    )
    assert check.returncode == 0, check.stdout + check.stderr
    port = free_port()
    log = tmp_path / "prometheus.log"
    with log.open("wb") as handle:
        process = subprocess.Popen(
            [
                binary,
                f"--config.file={tmp_path / 'prometheus.yml'}",
                f"--storage.tsdb.path={tmp_path / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=handle,
            stderr=subprocess.STDOUT,
        )
    try:
        up = _wait_for_every_job(f"http://127.0.0.1:{port}", {"revpulse", "wrong-token", "tls"}, process, log)
        assert up == {"revpulse": 1.0, "wrong-token": 0.0, "tls": 1.0}
    finally:
        terminate(process, 10)


def _wait_for_every_job(url: str, jobs: set[str], process: subprocess.Popen[bytes], log: Path) -> dict[str, float]:
    """`up` of every job once each has been scraped at least once."""
    deadline = time.monotonic() + 45
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"prometheus exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/api/v1/query?query=up", timeout=5) as response:
                result = orjson.loads(response.read())["data"]["result"]
        except (OSError, KeyError):
            result = []
        up = {sample["metric"]["job"]: float(sample["value"][1]) for sample in result}
        if set(up) == jobs:
            return up
        time.sleep(0.5)
    raise AssertionError(f"not every job was scraped:\n{log.read_text()[-3000:]}")
