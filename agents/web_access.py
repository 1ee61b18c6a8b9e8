"""Who may read the worker's web port, and how it listens (bind address, TLS).

The access rule lives here and only here (`is_open`):

| path | who |
|---|---|
| `/healthz`, `/readyz` | anyone: orchestrators probe them without credentials |
| `/ingest/<source>` | anyone reaching the port; each source checks its own signature or credentials (ingest.py) |
| everything else: `/metrics`, `/api/*`, the board at `/`, Faust's pages under `/faust/` (when enabled), any \
path added later | the read credentials, when any are set |

Read credentials are a bearer token (`REVPULSE_READ_TOKEN`), HTTP basic (`REVPULSE_READ_USER` /
`REVPULSE_READ_PASSWORD`), or both (either is enough). The board at `/` is a page a browser navigates to, and a
browser sends no bearer header when it navigates: there, and only there, the token may also come as `?token=`
(the page then sends it as `Authorization: Bearer` on its own requests; board.py). A request without them is
answered 401 with a `WWW-Authenticate` challenge for each scheme that is set. Secrets are compared as SHA-256
digests with `hmac.compare_digest`: the time taken depends neither on how much of a guess was right nor on the
secret's length.

The rule is applied to the route that matched (its registered path), not to the path as sent, so no spelling of a
URL (`/ingest/../metrics`, percent-encoding) reaches a protected page through an open prefix; a path that matched
nothing is judged by the path as sent (it answers 404 either way).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import ssl
from base64 import b64decode
from binascii import Error as Base64Error
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import orjson
from aiohttp import web

from revpulse.settings import Web as WebSettings

log = logging.getLogger(__name__)

OPEN_PATHS = frozenset({"/healthz", "/readyz"})
OPEN_PREFIXES = ("/ingest/",)
QUERY_TOKEN_PATHS = frozenset({"/"})  # pages that also take the read token as `?token=`: the board
REALM = "revpulse"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def is_open(path: str) -> bool:
    """Whether `path` (a registered route path) is served without the read credentials."""
    return path in OPEN_PATHS or path.startswith(OPEN_PREFIXES)


def route_path(request: web.Request) -> str:
    """The registered path of the route that matched `request`, or the path as sent when none did."""
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else request.path


def _digest(value: str) -> bytes:
    return hashlib.sha256(value.encode("utf-8", "surrogatepass")).digest()


@dataclass(frozen=True, repr=False)
class ReadAccess:
    """The read credentials, kept as digests (the secrets themselves are not held here)."""

    token: bytes | None = None
    user: bytes | None = None
    password: bytes | None = None

    @classmethod
    def of(cls, settings: WebSettings) -> ReadAccess:
        return cls(
            token=None if settings.read_token is None else _digest(settings.read_token),
            user=None if settings.read_user is None else _digest(settings.read_user),
            password=None if settings.read_password is None else _digest(settings.read_password),
        )

    @property
    def required(self) -> bool:
        return self.token is not None or self.user is not None

    def allows(self, authorization: str | None) -> bool:
        """Whether an `Authorization` header value carries the read credentials."""
        if not self.required:
            return True
        scheme, _, credentials = (authorization or "").strip().partition(" ")
        credentials = credentials.strip()
        if not credentials:
            return False
        if scheme.lower() == "bearer" and self.token is not None:
            return hmac.compare_digest(_digest(credentials), self.token)
        if scheme.lower() == "basic" and self.user is not None and self.password is not None:
            try:
                decoded = b64decode(credentials, validate=True).decode("utf-8")
            except (Base64Error, UnicodeDecodeError):
                return False
            user, sep, password = decoded.partition(":")
            # `&`, not `and`: the password is compared even when the user is wrong.
            return (
                bool(sep)
                & hmac.compare_digest(_digest(user), self.user)
                & hmac.compare_digest(_digest(password), self.password)
            )
        return False

    def allows_token(self, token: str | None) -> bool:
        """Whether `token` (a `?token=` parameter) is the read token."""
        return self.token is not None and bool(token) and hmac.compare_digest(_digest(token or ""), self.token)

    def challenges(self) -> list[str]:
        """`WWW-Authenticate` values, one per scheme that is set."""
        values = []
        if self.token is not None:
            values.append(f'Bearer realm="{REALM}"')
        if self.user is not None:
            values.append(f'Basic realm="{REALM}", charset="UTF-8"')
        return values

    def unauthorized(self, request: web.Request) -> web.Response:
        body = orjson.dumps({"error": "unauthorized", "detail": f"{request.path} needs the read credentials"})
        response = web.Response(status=401, body=body, content_type="application/json")
        for challenge in self.challenges():
            response.headers.add("WWW-Authenticate", challenge)
        return response


def access_middleware(access: ReadAccess) -> Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]:
    """An aiohttp middleware answering 401 to a request for a protected path without the read credentials."""

    @web.middleware
    async def read_access(request: web.Request, handler: Handler) -> web.StreamResponse:
        path = route_path(request)
        if (
            access.required
            and not is_open(path)
            and not access.allows(request.headers.get("Authorization"))
            and not (path in QUERY_TOKEN_PATHS and access.allows_token(request.query.get("token")))
        ):
            response = access.unauthorized(request)
            if request.can_read_body:
                # The body stays unread: the connection cannot serve another request after it.
                response.force_close()
            return response
        return await handler(request)

    return read_access


def server_ssl_context(settings: WebSettings) -> ssl.SSLContext | None:
    """The TLS context of the web port (TLS 1.2 or later), or None to serve plain HTTP."""
    if settings.certfile is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(settings.certfile, settings.keyfile)
    return context


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def describe(settings: WebSettings, port: int) -> str:
    """One line for the log: where the port listens, and what protects it."""
    scheme = "https" if settings.tls else "http"
    schemes = [name for name, on in (("bearer token", settings.read_token), ("basic auth", settings.read_user)) if on]
    access = " or ".join(schemes) if schemes else "no credentials (REVPULSE_READ_TOKEN is not set)"
    pages = ", Faust's pages under /faust/" if settings.debug else ""
    return f"web port {scheme}://{settings.host}:{port}: read endpoints need {access}{pages}"


def warn_if_exposed(settings: WebSettings) -> None:
    """A warning when the port listens beyond this machine with read endpoints open to anyone reaching it."""
    if not settings.read_protected and not is_loopback(settings.host):
        log.warning(
            "the web port listens on %s without read credentials: /metrics and /api/* answer anyone who reaches "
            "it (set REVPULSE_READ_TOKEN, or REVPULSE_WEB_HOST=127.0.0.1)",
            settings.host,
        )
