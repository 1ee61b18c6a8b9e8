"""How every Kafka client RevPulse creates connects: the one place that turns the REVPULSE_KAFKA_* settings into
client options (aiokafka keyword arguments, Faust broker credentials), and the start-up check that turns a TLS
or SASL failure into one line naming the setting to fix.

Every `AIOKafka*(...)` and `faust.App(...)` in the product takes `**client_options(settings)` (or
`**faust_options(settings)`); tests/unit/test_kafka_security.py fails on one that does not.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import ssl
import struct
from typing import Any

from revpulse.settings import KafkaSecurity, Settings, kafka_ssl_context

__all__ = [
    "KafkaUnusable",
    "client_options",
    "faust_options",
    "kafka_security",
    "preflight",
    "ssl_context",
]

log = logging.getLogger(__name__)


class KafkaUnusable(RuntimeError):
    """Kafka answered, but not as configured (TLS, SASL): retrying cannot help. The message names the setting."""


@functools.lru_cache(maxsize=8)
def ssl_context(security: KafkaSecurity) -> ssl.SSLContext:
    """One TLS context per configuration, shared by the clients (loading a CA file for each would be waste)."""
    return kafka_ssl_context(security)


def kafka_security(settings: Settings) -> dict[str, Any]:
    """aiokafka's security keyword arguments (producer, consumer, admin and plain client alike)."""
    security = settings.kafka
    options: dict[str, Any] = {"security_protocol": security.protocol}
    if security.tls:
        options["ssl_context"] = ssl_context(security)
    if security.sasl:
        options["sasl_mechanism"] = security.sasl_mechanism
        options["sasl_plain_username"] = security.sasl_username
        options["sasl_plain_password"] = security.sasl_password
    return options


def client_options(settings: Settings) -> dict[str, Any]:
    """The bootstrap servers and the security of an aiokafka client: `AIOKafkaConsumer(**client_options(s), ...)`."""
    return {"bootstrap_servers": settings.bootstrap_servers, **kafka_security(settings)}


def producer_options(settings: Settings) -> dict[str, Any]:
    """`client_options` and the batch compression of the worker's producers."""
    compression = None if settings.compression == "none" else settings.compression
    return {**client_options(settings), "compression_type": compression}


def faust_options(settings: Settings) -> dict[str, Any]:
    """The broker and its credentials for `faust.App(...)`: Faust builds its own aiokafka clients from them."""
    import faust

    security = settings.kafka
    credentials: Any = None
    if security.protocol == "SSL":
        credentials = faust.SSLCredentials(ssl_context(security))
    elif security.sasl:
        credentials = faust.SASLCredentials(
            username=security.sasl_username,
            password=security.sasl_password,
            mechanism=security.sasl_mechanism,
            ssl_context=ssl_context(security) if security.tls else None,
        )
    return {"broker": settings.broker, "broker_credentials": credentials}


# The start-up check.

_PROTOCOL = "REVPULSE_KAFKA_SECURITY_PROTOCOL"


async def preflight(settings: Settings, timeout: float = 15.0) -> str | None:
    """Connect to the bootstrap servers as every client will, before anything else does.

    Raises KafkaUnusable when a server answers but TLS or SASL fails (a wrong CA, a host name the certificate does
    not name, a plaintext client at a TLS listener, refused credentials): the worker would only fail again and
    again. Returns a warning when no server could be reached, or none answered in `timeout` (it may be starting or
    busy: the clients keep retrying, as they always have); None when one answered as configured.
    """
    unreachable: list[str] = []
    for server in settings.bootstrap_servers.split(","):
        host, _, port = server.rpartition(":")
        try:
            await _check_server(settings, host, int(port), timeout)
        except _Unreachable as exc:
            unreachable.append(f"{server} ({exc})")
            continue
        return None
    return "no Kafka bootstrap server reachable yet: " + "; ".join(unreachable)


class _Unreachable(Exception):
    pass


async def _check_server(settings: Settings, host: str, port: int, timeout: float) -> None:
    security = settings.kafka
    where = f"Kafka at {host}:{port}"
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    except (OSError, TimeoutError) as exc:
        raise _Unreachable(getattr(exc, "strerror", None) or type(exc).__name__) from None
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    if security.tls:
        await _check_tls(security, host, port, where, timeout)
    await _check_kafka(settings, host, port, where, timeout)


async def _check_tls(security: KafkaSecurity, host: str, port: int, where: str, timeout: float) -> None:
    """A TLS handshake of our own, and one ApiVersions request over it (TLS 1.3 reports a missing client
    certificate only after the handshake): aiokafka reports either failure only as "Unable to bootstrap"."""
    writer: asyncio.StreamWriter | None = None
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port, ssl=ssl_context(security), server_hostname=host), timeout
        )
        writer.write(_API_VERSIONS)
        await asyncio.wait_for(reader.readexactly(4), timeout)
    except ssl.SSLCertVerificationError as exc:
        reason = exc.verify_message or exc.reason or str(exc)
        if "mismatch" in reason.lower():
            raise KafkaUnusable(
                f"cannot connect to {where} over TLS: the broker's certificate does not name {host} ({reason}) — "
                "use a host name the certificate names in REVPULSE_BROKER, or set REVPULSE_KAFKA_SSL_CHECK_HOSTNAME"
                "=false"
            ) from None
        fix = (
            "check REVPULSE_KAFKA_SSL_CAFILE"
            if security.ssl_cafile
            else "the system does not trust its CA: set REVPULSE_KAFKA_SSL_CAFILE"
        )
        raise KafkaUnusable(
            f"cannot connect to {where} over TLS: certificate verify failed ({reason}) — {fix}"
        ) from None
    except ssl.SSLError as exc:
        reason = exc.reason or str(exc)
        if "CERTIFICATE" in reason.upper() or "HANDSHAKE_FAILURE" in reason.upper():
            fix = "does the broker require a client certificate? check REVPULSE_KAFKA_SSL_CERTFILE and KEYFILE"
        else:
            fix = f"is it a TLS listener? check {_PROTOCOL} and the port in REVPULSE_BROKER"
        raise KafkaUnusable(f"cannot connect to {where} over TLS: the handshake failed ({reason}) — {fix}") from None
    except TimeoutError:
        # A broker too busy to answer, or a listener waiting for plaintext: a warning, not a stop.
        raise _Unreachable(
            f"no TLS answer within {timeout:g}s; if it is not a TLS listener, check {_PROTOCOL}"
        ) from None
    except (OSError, asyncio.IncompleteReadError) as exc:
        raise KafkaUnusable(
            f"cannot connect to {where} over TLS: the connection failed ({_reason(exc)}) — is it a TLS listener? "
            f"check {_PROTOCOL} and the port in REVPULSE_BROKER"
        ) from None
    finally:
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError, ssl.SSLError, TimeoutError):
                await asyncio.wait_for(writer.wait_closed(), 2)


# ApiVersions v0, correlation id 1, client id "revpulse-preflight": every Kafka broker answers it, before SASL too.
_CLIENT_ID = b"revpulse-preflight"
_API_VERSIONS_BODY = struct.pack(">hhih", 18, 0, 1, len(_CLIENT_ID)) + _CLIENT_ID
_API_VERSIONS = struct.pack(">i", len(_API_VERSIONS_BODY)) + _API_VERSIONS_BODY


async def _check_kafka(settings: Settings, host: str, port: int, where: str, timeout: float) -> None:
    """A Kafka connection as aiokafka makes it (TLS, then SASL), and one metadata request on it."""
    from aiokafka import errors
    from aiokafka.conn import create_conn
    from aiokafka.protocol.metadata import MetadataRequest

    security = settings.kafka
    options = kafka_security(settings)
    request_timeout_ms = int(timeout * 1000)
    try:
        connection = await asyncio.wait_for(
            create_conn(host, port, request_timeout_ms=request_timeout_ms, **options), timeout
        )
    except errors.UnsupportedSaslMechanismError:
        raise KafkaUnusable(
            f"cannot connect to {where}: the broker does not offer SASL mechanism {security.sasl_mechanism} — check "
            f"REVPULSE_KAFKA_SASL_MECHANISM (and {_PROTOCOL}: does this listener use SASL?)"
        ) from None
    except (errors.SaslAuthenticationFailed, errors.AuthenticationFailedError) as exc:
        raise KafkaUnusable(
            f"cannot connect to {where}: SASL authentication failed for user {security.sasl_username!r} "
            f"({_reason(exc)}) — check REVPULSE_KAFKA_SASL_USERNAME and REVPULSE_KAFKA_SASL_PASSWORD "
            "(and REVPULSE_KAFKA_SASL_MECHANISM)"
        ) from None
    except (TimeoutError, errors.RequestTimedOutError):
        raise _Unreachable(f"no Kafka answer within {timeout:g}s") from None
    except (errors.KafkaError, OSError) as exc:
        raise KafkaUnusable(_closed(settings, where, exc)) from None
    try:
        await asyncio.wait_for(connection.send(MetadataRequest([])), timeout)
    except (TimeoutError, errors.RequestTimedOutError):
        raise _Unreachable(f"no Kafka answer within {timeout:g}s") from None
    except (errors.KafkaError, OSError) as exc:
        raise KafkaUnusable(_closed(settings, where, exc)) from None
    finally:
        connection.close()


def _closed(settings: Settings, where: str, exc: BaseException) -> str:
    security = settings.kafka
    if security.sasl:
        fix = f"check {_PROTOCOL} and REVPULSE_KAFKA_SASL_MECHANISM"
    elif security.tls:
        fix = f"does the broker require SASL? check {_PROTOCOL}"
    else:
        fix = f"does the broker require TLS or SASL? check {_PROTOCOL}"
    return f"cannot connect to {where}: the broker did not answer as {security.protocol} ({_reason(exc)}) — {fix}"


def _reason(exc: BaseException) -> str:
    name = type(exc).__name__
    text = str(exc).strip()
    if not text:
        return name
    return text if name in text else f"{name}: {text}"
