"""Verification of the requests providers send to `POST /ingest/<source>`: pure functions, no I/O.

Each `verify_*` returns None when the request is authentic and raises `SignatureError` (with a short reason safe
to show the caller: it never contains a secret) when it is not. Every comparison of a secret-derived value is
constant-time (`hmac.compare_digest`), so response timing reveals nothing about how much of a guess was right.

- Stripe: `Stripe-Signature: t=<unix seconds>,v1=<hex>[,v1=<hex>…]`, each v1 an HMAC-SHA256 (key: the
  endpoint's signing secret `whsec_…`, whole) of `"<t>.<raw body>"`; several v1 values appear while a secret is
  being rolled, and any one matching is enough.
- HubSpot v3: `X-HubSpot-Signature-v3` is base64 HMAC-SHA256 (key: the app's client secret) of
  method + URI + raw body + `X-HubSpot-Request-Timestamp` (epoch milliseconds); the URI is the full URL HubSpot
  called, query string included.
- Pipedrive: HTTP basic auth with the user and password set on the webhook.
- Canonical events: `Authorization: Bearer <token>`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import time

STRIPE_TOLERANCE = 300.0
HUBSPOT_TOLERANCE = 300.0
# Characters HubSpot's v3 documentation says to percent-decode in the URI before signing.
_HUBSPOT_DECODED = {
    "%3A": ":",
    "%2F": "/",
    "%3F": "?",
    "%40": "@",
    "%21": "!",
    "%24": "$",
    "%27": "'",
    "%28": "(",
    "%29": ")",
    "%2A": "*",
    "%2C": ",",
    "%3B": ";",
}
_HUBSPOT_ESCAPE = re.compile("|".join(_HUBSPOT_DECODED), re.IGNORECASE)
# The form of a signature that can match at all: Stripe's v1 is a hex SHA-256, HubSpot's v3 a base64 one.
_STRIPE_V1 = re.compile(r"[0-9a-f]{64}")
_HUBSPOT_V3 = re.compile(r"[A-Za-z0-9+/]{43}=")


class SignatureError(ValueError):
    """The request is not authentic; `reason` says why, without any secret."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _equal(a: str | bytes, b: str | bytes) -> bool:
    """Constant-time equality of two strings or byte strings (`compare_digest` rejects non-ASCII `str`)."""
    # surrogatepass: lossless for any str a header can decode to, so distinct strings never compare equal.
    left = a.encode("utf-8", "surrogatepass") if isinstance(a, str) else a
    right = b.encode("utf-8", "surrogatepass") if isinstance(b, str) else b
    return hmac.compare_digest(left, right)


def _epoch(text: str) -> int | None:
    """A decimal integer of at most 20 ASCII digits (longer ones are no clock's and would be slow to parse)."""
    return int(text) if text.isascii() and text.isdigit() and len(text) <= 20 else None


def _hmac_sha256(secret: str, message: bytes) -> bytes:
    return hmac.new(secret.encode("utf-8"), message, hashlib.sha256).digest()


def stripe_signature(secret: str, timestamp: str, body: bytes) -> str:
    """The hex v1 signature Stripe sends for `body` at `timestamp` (the `t` value, as text)."""
    return _hmac_sha256(secret, timestamp.encode("ascii") + b"." + body).hex()


def _stripe_header(header: str | None, tolerance: float, now: float) -> tuple[str, list[str]]:
    """The timestamp and v1 candidates of a `Stripe-Signature` header, checked for all but the body."""
    if not header:
        raise SignatureError("missing Stripe-Signature header")
    timestamp: str | None = None
    candidates: list[str] = []
    for item in header.split(","):
        key, sep, value = item.strip().partition("=")
        if not sep:
            continue
        if key == "t":
            timestamp = value
        elif key == "v1":
            candidates.append(value)
        # Other schemes (v0: test-mode legacy) are ignored, as Stripe's libraries do.
    seconds = None if timestamp is None else _epoch(timestamp)
    if timestamp is None or seconds is None:
        raise SignatureError("Stripe-Signature has no valid timestamp")
    if not candidates:
        raise SignatureError("Stripe-Signature has no v1 signature")
    # Both ways: a replay window has two ends, and a clock that far off needs fixing either way.
    if abs(now - seconds) > tolerance:
        raise SignatureError("Stripe-Signature timestamp outside the tolerance")
    return timestamp, candidates


def check_stripe_headers(header: str | None, *, tolerance: float = STRIPE_TOLERANCE, now: float | None = None) -> None:
    """What `verify_stripe` checks before it needs the body, with its reasons; also that some v1 is a hex SHA-256
    (no other value can match)."""
    _, candidates = _stripe_header(header, tolerance, time.time() if now is None else now)
    if not any(_STRIPE_V1.fullmatch(candidate) for candidate in candidates):
        raise SignatureError("Stripe-Signature does not match the body")


def verify_stripe(
    body: bytes,
    header: str | None,
    secret: str,
    *,
    tolerance: float = STRIPE_TOLERANCE,
    now: float | None = None,
) -> None:
    """Check a `Stripe-Signature` header against the raw body; `tolerance` bounds |now - t| in seconds."""
    timestamp, candidates = _stripe_header(header, tolerance, time.time() if now is None else now)
    expected = stripe_signature(secret, timestamp, body)
    # Check every candidate (no early exit), so timing does not tell which position matched.
    matched = False
    for candidate in candidates:
        matched |= _equal(expected, candidate)
    if not matched:
        raise SignatureError("Stripe-Signature does not match the body")


def stripe_timestamp(header: str) -> str:
    """The `t` value of a `Stripe-Signature` header, as `verify_stripe` reads it (the timestamp it checked)."""
    timestamp, _ = _stripe_header(header, float("inf"), 0.0)
    return timestamp


def hubspot_uri_forms(uri: str) -> list[str]:
    """The URI as called, then with the characters HubSpot's docs list percent-decoded (when that differs)."""
    decoded = _HUBSPOT_ESCAPE.sub(lambda match: _HUBSPOT_DECODED[match.group(0).upper()], uri)
    return [uri] if decoded == uri else [uri, decoded]


def hubspot_signature(secret: str, method: str, uri: str, body: bytes, timestamp: str) -> str:
    """The base64 v3 signature HubSpot sends."""
    message = method.encode("utf-8") + uri.encode("utf-8") + body + timestamp.encode("utf-8")
    return base64.b64encode(_hmac_sha256(secret, message)).decode("ascii")


def verify_hubspot_v3(
    body: bytes,
    *,
    method: str,
    uri: str,
    signature: str | None,
    timestamp: str | None,
    secret: str,
    tolerance: float = HUBSPOT_TOLERANCE,
    now: float | None = None,
) -> None:
    """Check `X-HubSpot-Signature-v3` (`signature`) and `X-HubSpot-Request-Timestamp` (`timestamp`, epoch ms).

    `uri` is the full URL HubSpot called (scheme, host, path, query). Both it and its HubSpot-decoded form are
    tried: HubSpot's docs ask for the decoding, some clients sign the URL as sent.
    """
    signature = _hubspot_headers(signature, timestamp, tolerance, time.time() if now is None else now)
    matched = False
    for form in hubspot_uri_forms(uri):
        matched |= _equal(hubspot_signature(secret, method.upper(), form, body, timestamp), signature.strip())
    if not matched:
        raise SignatureError("X-HubSpot-Signature-v3 does not match the request")


def _hubspot_headers(signature: str | None, timestamp: str | None, tolerance: float, now: float) -> str:
    """The signature of HubSpot's v3 headers, checked for all but the request."""
    if not signature:
        raise SignatureError("missing X-HubSpot-Signature-v3 header")
    if not timestamp:
        raise SignatureError("missing X-HubSpot-Request-Timestamp header")
    millis = _epoch(timestamp)
    if millis is None:
        raise SignatureError("X-HubSpot-Request-Timestamp is not epoch milliseconds")
    if abs(now * 1000 - millis) > tolerance * 1000:
        raise SignatureError("X-HubSpot-Request-Timestamp outside the tolerance")
    return signature


def check_hubspot_headers(
    signature: str | None, timestamp: str | None, *, tolerance: float = HUBSPOT_TOLERANCE, now: float | None = None
) -> None:
    """What `verify_hubspot_v3` checks before it needs the body, with its reasons; also that the signature is a
    base64 SHA-256 (no other value can match)."""
    signature = _hubspot_headers(signature, timestamp, tolerance, time.time() if now is None else now)
    if not _HUBSPOT_V3.fullmatch(signature.strip()):
        raise SignatureError("X-HubSpot-Signature-v3 does not match the request")


def verify_basic(header: str | None, user: str, password: str) -> None:
    """Check an `Authorization: Basic …` header; user and password are both compared, whatever the first gives."""
    scheme, _, credentials = (header or "").strip().partition(" ")
    if scheme.lower() != "basic" or not credentials:
        raise SignatureError("missing HTTP basic credentials")
    try:
        decoded = base64.b64decode(credentials.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise SignatureError("malformed HTTP basic credentials") from None
    given_user, sep, given_password = decoded.partition(":")
    if not sep:
        raise SignatureError("malformed HTTP basic credentials")
    # `&`, not `and`: compare the password even when the user is wrong.
    if not (_equal(given_user, user) & _equal(given_password, password)):
        raise SignatureError("wrong HTTP basic credentials")


def verify_bearer(header: str | None, token: str) -> None:
    """Check an `Authorization: Bearer <token>` header."""
    scheme, _, given = (header or "").strip().partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        raise SignatureError("missing bearer token")
    if not _equal(given.strip(), token):
        raise SignatureError("wrong bearer token")
