"""Kafka over TLS and SASL on the real embedded broker.

TLS: Debian's stunnel terminates TLS in front of Tansu, which advertises the TLS port (so every connection a
client makes after the bootstrap goes through TLS too), with a CA and certificates made here by openssl. A real
worker and `revpulse replay` run through it; a wrong CA, a host name the certificate does not name, a plaintext
client and a missing client certificate each stop with one line naming the setting.

SASL: Tansu 0.6 cannot be a SCRAM peer here (tests/support/sasl_front.py says why), so a front serving Kafka's
SASL exchange with scramp's SCRAM server sits between stunnel and Tansu: SASL_SSL end to end, with a worker whose
every client (Faust's among them) must authenticate, and wrong credentials refused with one line.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaProducer, TopicPartition
from prometheus_client.parser import text_string_to_metric_families

from revpulse.agents.base import consumer, read_topic
from revpulse.kafka_security import KafkaUnusable, client_options, preflight
from revpulse.local.broker import EmbeddedBroker, free_port
from revpulse.local.processes import LocalWorkers
from revpulse.settings import Settings
from revpulse.synth.config import SynthConfig
from revpulse.synth.delivery import generate
from tests.support.deployment import deployment, worker_env
from tests.support.sasl_front import SaslFront
from tests.support.tls import Pem, make_ca, make_cert, stunnel

pytestmark = pytest.mark.integration

EVENTS = 2000
USERS = {"revpulse": "scram-secret-for-revpulse", "reader": "another-secret"}


@dataclass
class Pki:
    ca: Pem
    wrong_ca: Pem
    server: Pem  # for 127.0.0.1 only: "localhost" is a host name it does not name
    client: Pem


@dataclass
class Listener:
    port: int  # where clients connect (TLS, or the SASL front)
    broker: EmbeddedBroker
    log: Path | None = None

    @property
    def url(self) -> str:
        return f"kafka://127.0.0.1:{self.port}"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    directory = tmp_path_factory.mktemp("pki")
    ca = make_ca(directory, "revpulse-test-ca")
    wrong = make_ca(directory, "some-other-ca")
    return Pki(ca, wrong, make_cert(directory, ca, "broker"), make_cert(directory, ca, "client", ("DNS:revpulse",)))


@pytest.fixture(scope="module")
def tls(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Listener]:
    port = free_port()
    directory = tmp_path_factory.mktemp("stunnel")
    with (
        EmbeddedBroker("127.0.0.1", advertised=f"127.0.0.1:{port}") as broker,
        stunnel(directory, port, broker.port, pki.server) as log,
    ):
        yield Listener(port, broker, log)


def _tls_env(listener: Listener, ca: Pem, **extra: str) -> dict[str, str]:
    return {
        "REVPULSE_BROKER": listener.url,
        "REVPULSE_KAFKA_SECURITY_PROTOCOL": "SSL",
        "REVPULSE_KAFKA_SSL_CAFILE": str(ca.cert),
        **extra,
    }


def _settings(env: dict[str, str]) -> Settings:
    return Settings.from_env(env)


async def _round_trip(settings: Settings, topic: str) -> list[bytes]:
    """Produce with the product's client options, and read back with the product's consumer factory."""
    producer = AIOKafkaProducer(**client_options(settings), acks="all")
    await producer.start()
    try:
        for i in range(3):
            await producer.send_and_wait(topic, f"record {i}".encode(), partition=0)
    finally:
        await producer.stop()
    reader = consumer(settings, None)
    await reader.start()
    try:
        tp = TopicPartition(topic, 0)
        reader.assign([tp])
        await reader.seek_to_beginning(tp)
        records = await reader.getmany(tp, timeout_ms=10_000)
    finally:
        await reader.stop()
    return [record.value for record in records.get(tp, [])]


def test_the_product_clients_produce_and_consume_over_tls(tls: Listener, pki: Pki) -> None:
    settings = _settings(_tls_env(tls, pki.ca))
    assert asyncio.run(preflight(settings)) is None
    assert asyncio.run(_round_trip(settings, "tls.round-trip")) == [b"record 0", b"record 1", b"record 2"]
    assert "accepted connection" in tls.log.read_text()  # type: ignore[union-attr]


def _run(command: str, env: dict[str, str], *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "revpulse.cli", command, *args],
        env=os.environ | env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _assert_one_clear_line(run: subprocess.CompletedProcess[str], *named: str) -> str:
    """Exit code 1, and one line on stderr (no traceback, no retry log) naming every one of `named`."""
    lines = [line for line in (run.stdout + run.stderr).splitlines() if line.strip()]
    assert run.returncode == 1, run.stdout + run.stderr
    assert len(lines) == 1, lines
    for name in named:
        assert name in lines[0], lines[0]
    return lines[0]


def test_a_wrong_ca_stops_worker_and_replay_with_one_line_naming_the_setting(
    tls: Listener, pki: Pki, tmp_path: Path
) -> None:
    env = worker_env(f"127.0.0.1:{tls.port}") | _tls_env(tls, pki.wrong_ca, REVPULSE_DATA_DIR=str(tmp_path))
    started = time.monotonic()
    line = _assert_one_clear_line(_run("worker", env), "certificate verify failed", "REVPULSE_KAFKA_SSL_CAFILE")
    assert line.startswith(f"revpulse: cannot connect to Kafka at 127.0.0.1:{tls.port} over TLS")
    assert time.monotonic() - started < 30  # at once, not after a round of retries
    log = tmp_path / "events.jsonl"
    log.write_text('{"type": "lead.created"}\n')
    _assert_one_clear_line(_run("replay", env, str(log)), "certificate verify failed", "REVPULSE_KAFKA_SSL_CAFILE")
    # No CA file at all: the system's CAs do not know the test CA either.
    no_ca = {k: v for k, v in env.items() if k != "REVPULSE_KAFKA_SSL_CAFILE"}
    _assert_one_clear_line(_run("worker", no_ca), "certificate verify failed", "set REVPULSE_KAFKA_SSL_CAFILE")


def test_hostname_verification_is_on_unless_switched_off(tls: Listener, pki: Pki) -> None:
    by_name = _tls_env(tls, pki.ca, REVPULSE_BROKER=f"kafka://localhost:{tls.port}")
    with pytest.raises(KafkaUnusable, match=r"does not name localhost.*REVPULSE_KAFKA_SSL_CHECK_HOSTNAME"):
        asyncio.run(preflight(_settings(by_name)))
    unchecked = _settings(by_name | {"REVPULSE_KAFKA_SSL_CHECK_HOSTNAME": "false"})
    assert asyncio.run(preflight(unchecked)) is None  # the chain is still verified: only the name is not


def test_a_plaintext_client_at_the_tls_listener_is_told_to_set_the_protocol(tls: Listener) -> None:
    plaintext = _settings({"REVPULSE_BROKER": tls.url})
    with pytest.raises(KafkaUnusable, match="REVPULSE_KAFKA_SECURITY_PROTOCOL"):
        asyncio.run(preflight(plaintext, timeout=5))


def test_mutual_tls_needs_the_client_certificate(pki: Pki, tmp_path: Path) -> None:
    port = free_port()
    with (
        EmbeddedBroker("127.0.0.1", advertised=f"127.0.0.1:{port}") as broker,
        stunnel(tmp_path, port, broker.port, pki.server, client_ca=pki.ca),
    ):
        listener = Listener(port, broker)
        without = _settings(_tls_env(listener, pki.ca))
        with pytest.raises(KafkaUnusable, match=r"client certificate.*REVPULSE_KAFKA_SSL_CERTFILE"):
            asyncio.run(preflight(without))
        client = {
            "REVPULSE_KAFKA_SSL_CERTFILE": str(pki.client.cert),
            "REVPULSE_KAFKA_SSL_KEYFILE": str(pki.client.key),
        }
        with_cert = _settings(_tls_env(listener, pki.ca, **client))
        assert asyncio.run(preflight(with_cert)) is None
        assert asyncio.run(_round_trip(with_cert, "mtls.round-trip"))[-1] == b"record 2"


def _events_counted(exposition: str) -> int:
    return sum(
        int(sample.value)
        for family in text_string_to_metric_families(exposition)
        if family.name == "revpulse_events"
        for sample in family.samples
        if sample.name == "revpulse_events_total"
    )


def _worker_and_replay(workers: LocalWorkers, root: Path) -> None:
    """A real worker, then `revpulse replay` of a generated log: the worker counts every event."""
    worker = workers.start("w1")
    log = root / "events.jsonl"
    lines = [orjson.dumps(event) for _, event in generate(SynthConfig(accounts=40, days=45), events=EVENTS)]
    log.write_bytes(b"\n".join(lines) + b"\n")
    done = _run("replay", workers.env, str(log), timeout=120)
    assert done.returncode == 0, done.stderr
    assert f"sent {EVENTS} records" in done.stderr
    deadline = time.monotonic() + 90
    while (counted := _events_counted(worker.get("/metrics")[1].decode())) < EVENTS:
        assert time.monotonic() < deadline, f"the worker counted {counted} of {EVENTS} events:\n{worker.tail()}"
        time.sleep(0.3)
    assert counted == EVENTS
    assert orjson.loads(worker.get("/api/metrics")[1])  # series computed from what came through
    metrics = asyncio.run(read_topic(worker.settings, worker.settings.topics.metrics, timeout=30))
    assert metrics  # the worker's producer wrote the metric topic, read back through the same listener


def test_a_worker_and_replay_run_end_to_end_over_tls(tls: Listener, pki: Pki, tmp_path: Path) -> None:
    workers = deployment(f"127.0.0.1:{tls.port}", tmp_path, **_tls_env(tls, pki.ca))
    try:
        _worker_and_replay(workers, tmp_path)
    finally:
        workers.stop_all()


# SASL


@pytest.fixture(scope="module")
def sasl_ssl(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Listener, SaslFront]]:
    """TLS on the advertised port → the SASL front → Tansu."""
    port = free_port()
    directory = tmp_path_factory.mktemp("sasl")
    with (
        EmbeddedBroker("127.0.0.1", advertised=f"127.0.0.1:{port}") as broker,
        SaslFront(broker.port, USERS).running() as front,
        stunnel(directory, port, front.port, pki.server) as log,
    ):
        yield Listener(port, broker, log), front


def _sasl_env(listener: Listener, pki: Pki, mechanism: str, user: str, password: str) -> dict[str, str]:
    return _tls_env(listener, pki.ca) | {
        "REVPULSE_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "REVPULSE_KAFKA_SASL_MECHANISM": mechanism,
        "REVPULSE_KAFKA_SASL_USERNAME": user,
        "REVPULSE_KAFKA_SASL_PASSWORD": password,
    }


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"])
def test_sasl_ssl_authenticates_each_mechanism_and_refuses_a_wrong_password(
    sasl_ssl: tuple[Listener, SaslFront], pki: Pki, mechanism: str
) -> None:
    listener, front = sasl_ssl
    good = _settings(_sasl_env(listener, pki, mechanism, "reader", USERS["reader"]))
    assert asyncio.run(preflight(good)) is None
    assert asyncio.run(_round_trip(good, f"sasl.{mechanism.lower()}"))[-1] == b"record 2"
    assert (mechanism, "reader") in {(m, user) for m, user, _ in front.authenticated}
    wrong = _settings(_sasl_env(listener, pki, mechanism, "reader", "not-the-password"))
    with pytest.raises(
        KafkaUnusable, match=r"SASL authentication failed for user 'reader'.*REVPULSE_KAFKA_SASL_PASSWORD"
    ):
        asyncio.run(preflight(wrong))


def test_a_worker_and_replay_run_end_to_end_over_sasl_ssl_with_scram(
    sasl_ssl: tuple[Listener, SaslFront], pki: Pki, tmp_path: Path
) -> None:
    listener, front = sasl_ssl
    env = _sasl_env(listener, pki, "SCRAM-SHA-512", "revpulse", USERS["revpulse"])
    workers = deployment(f"127.0.0.1:{listener.port}", tmp_path, **env)
    try:
        _worker_and_replay(workers, tmp_path)
    finally:
        workers.stop_all()
    clients = {client_id.split("-")[0] for mechanism, user, client_id in front.authenticated if user == "revpulse"}
    assert {"aiokafka", "faust"} <= clients  # RevPulse's own clients and Faust's authenticated alike


def test_wrong_sasl_credentials_stop_the_worker_with_one_line(
    sasl_ssl: tuple[Listener, SaslFront], pki: Pki, tmp_path: Path
) -> None:
    listener, _ = sasl_ssl
    env = worker_env(f"127.0.0.1:{listener.port}") | _sasl_env(
        listener, pki, "SCRAM-SHA-512", "revpulse", "a-wrong-password"
    )
    env["REVPULSE_DATA_DIR"] = str(tmp_path)
    _assert_one_clear_line(
        _run("worker", env),
        "SASL authentication failed",
        "REVPULSE_KAFKA_SASL_USERNAME",
        "REVPULSE_KAFKA_SASL_PASSWORD",
    )
