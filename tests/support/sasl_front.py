"""A SASL front for the embedded broker: Kafka's SASL exchange (SaslHandshake, then SaslAuthenticate v0/v1) served
with `scramp`'s SCRAM server (RFC 5802/7677, the implementation pg8000 uses), then the connection piped to Tansu.

Tansu 0.6 checks SCRAM credentials only with `--authentication`, and then refuses `tansu user create` (it is not
authenticated itself), while its memory and S3 stores do not keep a user across a restart: it cannot be the SCRAM
peer of a test. This front is: a client that does not authenticate, or authenticates wrongly, gets no further
than Kafka's own brokers would let it (any other request before authentication closes the connection).
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

from scramp import ScramMechanism

API_VERSIONS, SASL_HANDSHAKE, SASL_AUTHENTICATE = 18, 17, 36
UNSUPPORTED_SASL_MECHANISM, ILLEGAL_SASL_STATE, SASL_AUTHENTICATION_FAILED = 33, 34, 58


@dataclass
class SaslFront:
    """Listens on 127.0.0.1:`port` (0: a free one) and pipes authenticated connections to 127.0.0.1:`upstream`.
    `users`: name -> password, enabled for every mechanism of `mechanisms`."""

    upstream: int
    users: dict[str, str]
    mechanisms: tuple[str, ...] = ("SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN")
    port: int = 0
    # (mechanism, user, client id) of each success: aiokafka's own clients say "aiokafka-…", Faust's "faust-…"
    authenticated: list[tuple[str, str, str]] = field(default_factory=list)
    refused: list[tuple[str, str]] = field(default_factory=list)  # (mechanism, why) of each failure
    _loop: asyncio.AbstractEventLoop | None = None
    _server: asyncio.Server | None = None

    def _auth_info(self, mechanism: str) -> dict[str, tuple[bytes, bytes, bytes, int]]:
        scram = ScramMechanism(mechanism)
        return {user: scram.make_auth_info(password, iteration_count=4096) for user, password in self.users.items()}

    async def _serve(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", self.upstream)
        except OSError:
            client_writer.close()
            return
        try:
            if await self._authenticate(client_reader, client_writer, upstream_reader, upstream_writer):
                await asyncio.gather(
                    _pipe(client_reader, upstream_writer), _pipe(upstream_reader, client_writer), return_exceptions=True
                )
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            for writer in (client_writer, upstream_writer):
                writer.close()

    async def _authenticate(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        upstream_reader: asyncio.StreamReader,
        upstream_writer: asyncio.StreamWriter,
    ) -> bool:
        mechanism: str | None = None
        server = None
        user = ""
        while True:
            frame = await _read_frame(reader)
            api_key, api_version, correlation_id, client_id, body = _parse_request(frame)
            if api_key == API_VERSIONS:  # allowed before authentication: Tansu answers it
                upstream_writer.write(struct.pack(">i", len(frame)) + frame)
                writer.write(await _read_sized(upstream_reader))
                continue
            if api_key == SASL_HANDSHAKE and mechanism is None and api_version >= 1:
                requested = _string(body, 0)[0]
                known = requested in self.mechanisms
                error = 0 if known else UNSUPPORTED_SASL_MECHANISM
                _respond(writer, correlation_id, struct.pack(">h", error) + _strings(self.mechanisms))
                if not known:
                    self.refused.append((requested, "mechanism not enabled"))
                    return False
                mechanism = requested
                if mechanism != "PLAIN":
                    server = ScramMechanism(mechanism).make_server(self._auth_info(mechanism).__getitem__)
                continue
            if api_key == SASL_AUTHENTICATE and mechanism is not None and api_version <= 1:
                token = _bytes(body, 0)
                try:
                    reply, done, step_user = self._step(mechanism, server, token)
                    user = step_user or user
                except Exception as exc:  # scramp raises ScramException; an unknown user, KeyError
                    self.refused.append((mechanism, f"{type(exc).__name__}: {exc}"))
                    message = f"Authentication failed: invalid credentials with SASL mechanism {mechanism}"
                    _respond_authenticate(writer, correlation_id, api_version, SASL_AUTHENTICATION_FAILED, message, b"")
                    await writer.drain()
                    return False
                _respond_authenticate(writer, correlation_id, api_version, 0, None, reply)
                if done:
                    self.authenticated.append((mechanism, user, client_id))
                    await writer.drain()
                    return True
                continue
            # Anything else before authentication: Kafka closes the connection.
            self.refused.append((mechanism or "-", f"request {api_key} v{api_version} before authentication"))
            return False

    def _step(self, mechanism: str, server: object, token: bytes) -> tuple[bytes, bool, str]:
        """The answer to one SASL token, whether authentication is complete, and the user it authenticated."""
        if mechanism == "PLAIN":
            _, user, password = token.decode().split("\0")
            if self.users.get(user) != password:
                raise PermissionError(f"wrong password for {user!r}")
            return b"", True, user
        if server.stage is None:  # type: ignore[attr-defined]
            client_first = token.decode()
            server.set_client_first(client_first)  # type: ignore[attr-defined]
            # "n,,n=<user>,r=<nonce>": the user, as the answer to the last step reports it
            user = client_first.split(",n=", 1)[1].split(",", 1)[0]
            return server.get_server_first().encode(), False, user  # type: ignore[attr-defined]
        server.set_client_final(token.decode())  # type: ignore[attr-defined]
        return server.get_server_final().encode(), True, ""  # type: ignore[attr-defined]

    @contextlib.contextmanager
    def running(self) -> Iterator[SaslFront]:
        """Serve on a thread of its own until the block ends."""
        ready = threading.Event()
        stop: asyncio.Future[None] | None = None

        async def main() -> None:
            nonlocal stop
            self._loop = asyncio.get_running_loop()
            stop = self._loop.create_future()
            self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
            self.port = self._server.sockets[0].getsockname()[1]
            ready.set()
            async with self._server:
                await stop

        thread = threading.Thread(target=asyncio.run, args=(main(),), daemon=True)
        thread.start()
        if not ready.wait(10):
            raise TimeoutError("the SASL front did not start")
        try:
            yield self
        finally:
            assert self._loop is not None and stop is not None
            self._loop.call_soon_threadsafe(stop.set_result, None)
            thread.join(10)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    finally:
        writer.close()


async def _read_sized(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readexactly(4)
    return head + await reader.readexactly(struct.unpack(">i", head)[0])


async def _read_frame(reader: asyncio.StreamReader) -> bytes:
    return (await _read_sized(reader))[4:]


def _parse_request(frame: bytes) -> tuple[int, int, int, str, bytes]:
    api_key, api_version, correlation_id = struct.unpack_from(">hhi", frame)
    (client_id_length,) = struct.unpack_from(">h", frame, 8)
    client_id = frame[10 : 10 + max(client_id_length, 0)].decode(errors="replace")
    return api_key, api_version, correlation_id, client_id, frame[10 + max(client_id_length, 0) :]


def _string(data: bytes, offset: int) -> tuple[str, int]:
    (length,) = struct.unpack_from(">h", data, offset)
    return data[offset + 2 : offset + 2 + length].decode(), offset + 2 + length


def _bytes(data: bytes, offset: int) -> bytes:
    (length,) = struct.unpack_from(">i", data, offset)
    return data[offset + 4 : offset + 4 + length]


def _strings(values: tuple[str, ...]) -> bytes:
    out = struct.pack(">i", len(values))
    for value in values:
        out += struct.pack(">h", len(value)) + value.encode()
    return out


def _respond(writer: asyncio.StreamWriter, correlation_id: int, body: bytes) -> None:
    payload = struct.pack(">i", correlation_id) + body
    writer.write(struct.pack(">i", len(payload)) + payload)


def _respond_authenticate(
    writer: asyncio.StreamWriter, correlation_id: int, version: int, error: int, message: str | None, token: bytes
) -> None:
    body = struct.pack(">h", error)
    body += struct.pack(">h", -1) if message is None else struct.pack(">h", len(message)) + message.encode()
    body += struct.pack(">i", len(token)) + token
    if version >= 1:
        body += struct.pack(">q", 0)  # session lifetime: none
    _respond(writer, correlation_id, body)
