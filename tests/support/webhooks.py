"""Webhook requests as the providers send them: signed bodies, credentials, a plain HTTP client, and raw HTTP
over asyncio streams for clients that misbehave on purpose (stall, trickle, never finish)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import http.client
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from revpulse.local.processes import WorkerProcess

STRIPE_SECRET = "whsec_it_stripe_secret"
HUBSPOT_SECRET = "it-hubspot-client-secret"
PIPEDRIVE_USER = "revpulse"
PIPEDRIVE_PASSWORD = "it-pipedrive-password"
TOKEN = "it-ingest-token"
MAX_BYTES = 65536
PUBLIC_URL = "https://revpulse.example.com/hooks"
SECRETS = {
    "REVPULSE_STRIPE_WEBHOOK_SECRET": STRIPE_SECRET,
    "REVPULSE_HUBSPOT_CLIENT_SECRET": HUBSPOT_SECRET,
    "REVPULSE_PIPEDRIVE_USER": PIPEDRIVE_USER,
    "REVPULSE_PIPEDRIVE_PASSWORD": PIPEDRIVE_PASSWORD,
    "REVPULSE_INGEST_TOKEN": TOKEN,
    "REVPULSE_INGEST_MAX_BYTES": str(MAX_BYTES),
    "REVPULSE_PUBLIC_URL": PUBLIC_URL,
}
JSON = "application/json; charset=utf-8"

Reply = tuple[int, dict[str, str], Any]


def request(
    worker: WorkerProcess,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    *,
    method: str = "POST",
    chunked: bool = False,
) -> Reply:
    """Status, headers and decoded JSON body of one request (a chunked one has no Content-Length)."""
    connection = http.client.HTTPConnection("127.0.0.1", worker.settings.web_port, timeout=15)
    try:
        if chunked:
            assert body is not None
            chunks = [body[i : i + 4096] for i in range(0, len(body), 4096)]
            connection.request(method, path, body=iter(chunks), headers=headers or {}, encode_chunked=True)
        else:
            connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        raw = response.read()
        return response.status, dict(response.getheaders()), orjson.loads(raw) if raw else None
    finally:
        connection.close()


def marker_body(**extra: Any) -> bytes:
    """A JSON body unique to this call, with odd spacing kept as sent (the value must be these bytes)."""
    return b'{ "id" :  "' + uuid.uuid4().hex.encode() + b'",\n "extra": ' + orjson.dumps(extra) + b"}"


def stripe_headers(body: bytes, *, secret: str = STRIPE_SECRET, t: int | None = None) -> dict[str, str]:
    t = int(time.time()) if t is None else t
    v1 = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return {"Content-Type": JSON, "Stripe-Signature": f"t={t},v1={v1}"}


def hubspot_headers(
    body: bytes, *, secret: str = HUBSPOT_SECRET, url: str = PUBLIC_URL + "/ingest/hubspot", ms: int | None = None
) -> dict[str, str]:
    ms = int(time.time() * 1000) if ms is None else ms
    message = b"POST" + url.encode() + body + str(ms).encode()
    signature = base64.b64encode(hmac.new(secret.encode(), message, hashlib.sha256).digest()).decode()
    return {
        "Content-Type": "application/json",
        "X-HubSpot-Signature-v3": signature,
        "X-HubSpot-Request-Timestamp": str(ms),
    }


def basic_headers(user: str = PIPEDRIVE_USER, password: str = PIPEDRIVE_PASSWORD) -> dict[str, str]:
    credentials = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Content-Type": "application/json", "Authorization": f"Basic {credentials}"}


def bearer_headers(token: str = TOKEN) -> dict[str, str]:
    return {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}


SIGNERS: dict[str, Callable[[bytes], dict[str, str]]] = {
    "stripe": stripe_headers,
    "hubspot": hubspot_headers,
    "pipedrive": lambda body: basic_headers(),
    "events": lambda body: bearer_headers(),
}


# Raw HTTP/1.1 over asyncio streams.


def request_head(
    path: str, headers: dict[str, str] | None = None, *, method: str = "POST", content_length: int | None = None
) -> bytes:
    """A request line and headers, ending with the blank line; the body (if any) is the caller's to send."""
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"]
    if content_length is not None:
        lines.append(f"Content-Length: {content_length}")
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


@dataclass(frozen=True)
class RawReply:
    status: int
    headers: dict[str, str]  # names lower-cased
    body: bytes

    def json(self) -> Any:
        return orjson.loads(self.body)


async def read_reply(reader: asyncio.StreamReader) -> RawReply | None:
    """The next answer on the connection, or None if it closed (or was reset) before a whole one arrived."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if sep:
                headers[name.strip().lower()] = value.strip()
        body = await reader.readexactly(int(headers.get("content-length", "0")))
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
        return None
    return RawReply(int(lines[0].split()[1]), headers, body)


async def wait_closed(reader: asyncio.StreamReader, timeout: float) -> float:
    """Seconds until the server closed (or reset) the connection, discarding what it sends; TimeoutError if it
    is still open after `timeout`."""
    started = time.monotonic()
    async with asyncio.timeout(timeout):
        with contextlib.suppress(ConnectionError):
            while await reader.read(65536):
                pass
    return time.monotonic() - started


async def close_quietly(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(ConnectionError, OSError):
        await writer.wait_closed()
