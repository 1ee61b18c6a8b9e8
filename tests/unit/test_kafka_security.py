"""Kafka security (REVPULSE_KAFKA_*): the settings and their one-line errors, the client options built from them,
and that every Kafka client the product creates takes them (a new client cannot forget)."""

from __future__ import annotations

import ast
import asyncio
import ssl
import subprocess
from pathlib import Path
from typing import Any

import faust
import pytest
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

from revpulse.kafka_security import client_options, faust_options, kafka_security, producer_options
from revpulse.settings import KAFKA_ENV, Settings, SettingsError
from tests.support.paths import ROOT
from tests.support.tls import Pem, make_ca, make_cert

SASL_SSL = {
    "REVPULSE_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
    "REVPULSE_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
    "REVPULSE_KAFKA_SASL_USERNAME": "revpulse",
    "REVPULSE_KAFKA_SASL_PASSWORD": "a-long-secret",
}


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> tuple[Pem, Pem]:
    directory = tmp_path_factory.mktemp("pki")
    ca = make_ca(directory, "ca")
    return ca, make_cert(directory, ca, "client", names=("DNS:revpulse",))


def test_plaintext_by_default() -> None:
    settings = Settings.from_env({})
    assert settings.kafka.protocol == "PLAINTEXT"
    assert client_options(settings) == {"bootstrap_servers": "localhost:9092", "security_protocol": "PLAINTEXT"}
    assert faust_options(settings) == {"broker": "kafka://localhost:9092", "broker_credentials": None}


@pytest.mark.parametrize(("value", "expected"), [(None, "zstd"), ("lz4", "lz4"), ("gzip", "gzip"), ("none", None)])
def test_producers_compress_their_batches(value: str | None, expected: str | None) -> None:
    settings = Settings.from_env({} if value is None else {"REVPULSE_COMPRESSION": value})
    assert producer_options(settings) == client_options(settings) | {"compression_type": expected}


def test_sasl_ssl_with_scram(pki: tuple[Pem, Pem]) -> None:
    ca, _ = pki
    settings = Settings.from_env(SASL_SSL | {"REVPULSE_KAFKA_SSL_CAFILE": str(ca.cert)})
    options = kafka_security(settings)
    context = options.pop("ssl_context")
    assert options == {
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "revpulse",
        "sasl_plain_password": "a-long-secret",
    }
    assert context.check_hostname and context.verify_mode == ssl.CERT_REQUIRED
    assert [cert["subject"] for cert in context.get_ca_certs()] == [((("commonName", "ca"),),)]
    assert "a-long-secret" not in repr(settings)


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"REVPULSE_KAFKA_SECURITY_PROTOCOL": "SSL"}, {"security_protocol": "SSL"}),
        (
            SASL_SSL | {"REVPULSE_KAFKA_SASL_MECHANISM": "plain"},
            {"security_protocol": "SASL_SSL", "sasl_mechanism": "PLAIN"},
        ),
        (
            SASL_SSL
            | {"REVPULSE_KAFKA_SECURITY_PROTOCOL": "sasl_plaintext", "REVPULSE_KAFKA_SASL_MECHANISM": "scram_sha_256"},
            {"security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "SCRAM-SHA-256"},
        ),
    ],
)
def test_faust_gets_what_every_aiokafka_client_gets(env: dict[str, str], expected: dict[str, str]) -> None:
    """Faust builds its own consumer and producer from `broker_credentials`: the same protocol, mechanism,
    credentials and TLS context as the clients RevPulse builds itself."""
    settings = Settings.from_env(env)
    ours = kafka_security(settings)
    assert ours.items() >= expected.items()
    app = faust.App("kafka-security-test", **faust_options(settings))
    # What Faust's transport passes to the aiokafka clients it builds.
    theirs = dict(credentials_to_aiokafka_auth(app.conf.broker_credentials, app.conf.ssl_context))
    assert {k: v for k, v in theirs.items() if v is not None} == ours


def test_password_from_a_file_and_hostname_check_off(tmp_path: Path) -> None:
    secret = tmp_path / "password"
    secret.write_text("from-a-file\n")
    env = SASL_SSL | {"REVPULSE_KAFKA_SASL_PASSWORD_FILE": str(secret), "REVPULSE_KAFKA_SSL_CHECK_HOSTNAME": "false"}
    del env["REVPULSE_KAFKA_SASL_PASSWORD"]
    settings = Settings.from_env(env)
    assert settings.kafka.sasl_password == "from-a-file"
    context = kafka_security(settings)["ssl_context"]
    assert not context.check_hostname and context.verify_mode == ssl.CERT_REQUIRED


def test_client_certificate_and_encrypted_key(pki: tuple[Pem, Pem], tmp_path: Path) -> None:
    ca, client = pki
    tls = {"REVPULSE_KAFKA_SECURITY_PROTOCOL": "SSL", "REVPULSE_KAFKA_SSL_CAFILE": str(ca.cert)}
    plain = Settings.from_env(
        tls | {"REVPULSE_KAFKA_SSL_CERTFILE": str(client.cert), "REVPULSE_KAFKA_SSL_KEYFILE": str(client.key)}
    )
    assert plain.kafka.ssl_certfile == str(client.cert)
    encrypted = tmp_path / "client-encrypted.key"
    subprocess.run(
        ["openssl", "pkey", "-in", str(client.key), "-aes256", "-passout", "pass:key-pass", "-out", str(encrypted)],
        check=True,
        capture_output=True,
    )
    with_key = tls | {"REVPULSE_KAFKA_SSL_CERTFILE": str(client.cert), "REVPULSE_KAFKA_SSL_KEYFILE": str(encrypted)}
    with pytest.raises(SettingsError, match=r"^REVPULSE_KAFKA_SSL_CERTFILE/REVPULSE_KAFKA_SSL_KEYFILE: .*KEY_PASSWORD"):
        Settings.from_env(with_key)  # refused at once, never a pass phrase prompt on the terminal
    assert Settings.from_env(with_key | {"REVPULSE_KAFKA_SSL_KEY_PASSWORD": "key-pass"}).kafka.ssl_key_password


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"REVPULSE_KAFKA_SECURITY_PROTOCOL": "TLS"}, "REVPULSE_KAFKA_SECURITY_PROTOCOL"),
        ({"REVPULSE_KAFKA_SASL_USERNAME": "u"}, "REVPULSE_KAFKA_SASL_USERNAME"),
        ({"REVPULSE_KAFKA_SSL_CAFILE": "/etc/hostname"}, "REVPULSE_KAFKA_SSL_CAFILE"),
        (
            {"REVPULSE_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "REVPULSE_KAFKA_SSL_CAFILE": "/etc/hostname"},
            "REVPULSE_KAFKA_SSL_CAFILE",
        ),
        ({**SASL_SSL, "REVPULSE_KAFKA_SASL_MECHANISM": ""}, "REVPULSE_KAFKA_SASL_MECHANISM"),
        ({**SASL_SSL, "REVPULSE_KAFKA_SASL_MECHANISM": "GSSAPI"}, "REVPULSE_KAFKA_SASL_MECHANISM"),
        ({**SASL_SSL, "REVPULSE_KAFKA_SASL_USERNAME": ""}, "REVPULSE_KAFKA_SASL_USERNAME"),
        ({**SASL_SSL, "REVPULSE_KAFKA_SASL_PASSWORD": ""}, "REVPULSE_KAFKA_SASL_PASSWORD"),
        ({**SASL_SSL, "REVPULSE_KAFKA_SASL_PASSWORD_FILE": "/nonexistent"}, "REVPULSE_KAFKA_SASL_PASSWORD"),
        ({**SASL_SSL, "REVPULSE_KAFKA_SSL_CAFILE": "/nonexistent/ca.pem"}, "REVPULSE_KAFKA_SSL_CAFILE"),
        ({**SASL_SSL, "REVPULSE_KAFKA_SSL_CAFILE": "/etc/hostname"}, "REVPULSE_KAFKA_SSL_CAFILE"),
        ({**SASL_SSL, "REVPULSE_KAFKA_SSL_KEYFILE": "/etc/hostname"}, "REVPULSE_KAFKA_SSL_CERTFILE"),
        ({**SASL_SSL, "REVPULSE_KAFKA_SSL_CERTFILE": "/etc/hostname"}, "REVPULSE_KAFKA_SSL_CERTFILE"),
        ({**SASL_SSL, "REVPULSE_KAFKA_SSL_CHECK_HOSTNAME": "sometimes"}, "REVPULSE_KAFKA_SSL_CHECK_HOSTNAME"),
    ],
)
def test_a_bad_setting_is_one_line_naming_it(env: dict[str, str], named: str) -> None:
    with pytest.raises(SettingsError) as raised:
        Settings.from_env(env)
    message = str(raised.value)
    assert message.startswith(named) and "\n" not in message, message


def test_every_variable_is_listed_for_the_demo_to_clear() -> None:
    source = (ROOT / "src" / "revpulse" / "settings.py").read_text()
    assert set(KAFKA_ENV) == {name for name in KAFKA_ENV if name in source}
    assert {"REVPULSE_KAFKA_SASL_PASSWORD_FILE", "REVPULSE_KAFKA_SSL_CAFILE"} <= set(KAFKA_ENV)


# Every client takes the options: statically, in every product module, and at run time where it is built.

PRODUCT = [ROOT / "src" / "revpulse", ROOT / "agents", ROOT / "connectors", ROOT / "streams", ROOT / "schemas"]
# Producers also take the batch compression (`producer_options` spreads `client_options`).
BUILDERS = {"AIOKafkaProducer": "producer_options", "AIOKafka": "client_options", "App": "faust_options"}


def _constructions() -> list[tuple[str, int, str, ast.Call]]:
    found = []
    for folder in PRODUCT:
        for path in sorted(folder.rglob("*.py")):
            tree = ast.parse(path.read_text(), str(path))
            for node in ast.walk(tree):
                if isinstance(node, ast.ImportFrom | ast.Import):
                    for alias in node.names:
                        assert alias.asname is None or not alias.name.startswith("AIOKafka"), (
                            f"{path}: import {alias.name} under its own name, so the check below sees it"
                        )
                if not isinstance(node, ast.Call):
                    continue
                func = node.func
                name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
                is_faust_app = isinstance(func, ast.Attribute) and name == "App" and ast.unparse(func.value) == "faust"
                if name.startswith("AIOKafka") or is_faust_app:
                    found.append((str(path.relative_to(ROOT)), node.lineno, name, node))
    return found


def test_every_kafka_client_in_the_product_takes_the_security_options() -> None:
    constructions = _constructions()
    where = {(path, name) for path, _, name, _ in constructions}
    # The check sees the clients it must (so it cannot pass by finding nothing).
    assert {
        ("agents/base.py", "AIOKafkaConsumer"),
        ("agents/base.py", "AIOKafkaProducer"),
        ("agents/app.py", "AIOKafkaAdminClient"),
        ("agents/app.py", "App"),
        ("src/revpulse/replay.py", "AIOKafkaProducer"),
        ("src/revpulse/local/demo.py", "AIOKafkaProducer"),
    } <= where
    missing = []
    for path, line, name, call in constructions:
        builder = BUILDERS[name if name in BUILDERS else "AIOKafka"]
        spread = [
            kw.value
            for kw in call.keywords
            if kw.arg is None and isinstance(kw.value, ast.Call) and ast.unparse(kw.value.func) == builder
        ]
        direct = {kw.arg for kw in call.keywords} & {
            "bootstrap_servers",
            "broker",
            "security_protocol",
            "ssl_context",
            "compression_type",
        }
        if not spread or direct:
            missing.append(f"{path}:{line} {name}(...) must take **{builder}(settings) and nothing it sets")
    assert missing == []


class _Recorder:
    """Stands in for an aiokafka client class: records the keyword arguments of every construction."""

    made: list[dict[str, Any]]
    created: list[Any]

    def __init__(self, *topics: str, **kwargs: Any) -> None:
        type(self).made.append(kwargs)

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def list_topics(self) -> list[str]:
        return []

    async def create_topics(self, topics: list[Any]) -> None:
        type(self).created.extend(topics)

    async def send(self, *args: Any, **kwargs: Any) -> asyncio.Future[None]:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        future.set_result(None)
        return future


def _recorder() -> type[_Recorder]:
    return type("Recorder", (_Recorder,), {"made": [], "created": []})


def test_each_client_is_built_with_the_security_options_at_run_time(
    monkeypatch: pytest.MonkeyPatch, pki: tuple[Pem, Pem], tmp_path: Path
) -> None:
    from revpulse import replay
    from revpulse.agents import app, base

    ca, _ = pki
    settings = Settings.from_env(SASL_SSL | {"REVPULSE_KAFKA_SSL_CAFILE": str(ca.cert)})
    expected = client_options(settings)
    consumer, producer, admin = _recorder(), _recorder(), _recorder()
    monkeypatch.setattr(base, "AIOKafkaConsumer", consumer)
    monkeypatch.setattr(base, "AIOKafkaProducer", producer)
    monkeypatch.setattr(app, "AIOKafkaAdminClient", admin)
    monkeypatch.setattr(replay, "AIOKafkaProducer", producer)

    async def build() -> None:
        base.consumer(settings, "group")  # the agents' consumers, the standby consumer, topic scans, letters
        await base.ProducerService(settings).on_start()  # the worker's one producer
        await app.create_topics(settings)
        await replay.send([b'{"type": "lead.created"}'], settings, progress=None)

    asyncio.run(build())
    made = consumer.made + producer.made + admin.made
    assert len(made) == 4
    for kwargs in made:
        assert kwargs.items() >= expected.items()
    assert [kwargs["compression_type"] for kwargs in producer.made] == ["zstd", "zstd"]


def test_topics_are_created_with_the_replication_factor(monkeypatch: pytest.MonkeyPatch) -> None:
    from revpulse.agents import app

    admin = _recorder()
    monkeypatch.setattr(app, "AIOKafkaAdminClient", admin)
    settings = Settings.from_env({"REVPULSE_REPLICATION_FACTOR": "3"})
    asyncio.run(app.create_topics(settings))
    assert len(admin.created) == 14  # all but Faust's leader topic, which Faust creates
    assert {topic.replication_factor for topic in admin.created} == {3}
    assert Settings.from_env({}).replication_factor == 1
    with pytest.raises(SettingsError, match=r"^REVPULSE_REPLICATION_FACTOR: "):
        Settings.from_env({"REVPULSE_REPLICATION_FACTOR": "0"})
