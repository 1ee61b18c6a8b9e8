"""Request verification of the ingest endpoints, with known secrets; expected signatures are computed here with
`hmac` directly (and one published HubSpot vector), never with the functions under test."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest

from revpulse.connectors.signatures import (
    SignatureError,
    hubspot_signature,
    hubspot_uri_forms,
    stripe_signature,
    verify_basic,
    verify_bearer,
    verify_hubspot_v3,
    verify_stripe,
)

STRIPE_SECRET = "whsec_test_secret"
STRIPE_BODY = b'{\n  "id": "evt_test_webhook",\n  "object": "event"\n}'
T = 1_700_000_000


def _stripe_hex(secret: str, t: int, body: bytes) -> str:
    return hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()


def _reason(call: object) -> str:
    assert callable(call)
    with pytest.raises(SignatureError) as error:
        call()
    return error.value.reason


# Stripe


def test_stripe_signature_is_hmac_sha256_of_timestamp_dot_body() -> None:
    assert stripe_signature(STRIPE_SECRET, str(T), STRIPE_BODY) == _stripe_hex(STRIPE_SECRET, T, STRIPE_BODY)


def test_stripe_accepts_a_correct_signature() -> None:
    header = f"t={T},v1={_stripe_hex(STRIPE_SECRET, T, STRIPE_BODY)}"
    assert verify_stripe(STRIPE_BODY, header, STRIPE_SECRET, now=T + 10) is None


def test_stripe_accepts_any_matching_v1_and_ignores_other_schemes() -> None:
    # While a secret is rolled Stripe signs with both: one v1 per secret.
    header = (
        f"t={T},v1={_stripe_hex('whsec_old', T, STRIPE_BODY)},"
        f"v1={_stripe_hex(STRIPE_SECRET, T, STRIPE_BODY)},v0={'0' * 64}"
    )
    assert verify_stripe(STRIPE_BODY, header, STRIPE_SECRET, now=T) is None


@pytest.mark.parametrize(
    ("header", "body", "reason"),
    [
        (None, STRIPE_BODY, "missing Stripe-Signature header"),
        ("", STRIPE_BODY, "missing Stripe-Signature header"),
        (f"v1={_stripe_hex(STRIPE_SECRET, T, STRIPE_BODY)}", STRIPE_BODY, "Stripe-Signature has no valid timestamp"),
        (
            f"t=abc,v1={_stripe_hex(STRIPE_SECRET, T, STRIPE_BODY)}",
            STRIPE_BODY,
            "Stripe-Signature has no valid timestamp",
        ),
        (f"t={'9' * 5000},v1=00", STRIPE_BODY, "Stripe-Signature has no valid timestamp"),
        (f"t={T}", STRIPE_BODY, "Stripe-Signature has no v1 signature"),
        (f"t={T},v0={_stripe_hex(STRIPE_SECRET, T, STRIPE_BODY)}", STRIPE_BODY, "Stripe-Signature has no v1 signature"),
        (
            f"t={T},v1={_stripe_hex('whsec_other', T, STRIPE_BODY)}",
            STRIPE_BODY,
            "Stripe-Signature does not match the body",
        ),
        (
            f"t={T},v1={_stripe_hex(STRIPE_SECRET, T, STRIPE_BODY)}",
            STRIPE_BODY + b" ",
            "Stripe-Signature does not match the body",
        ),
        # The signature covers t: another timestamp with the same v1 fails.
        (
            f"t={T + 1},v1={_stripe_hex(STRIPE_SECRET, T, STRIPE_BODY)}",
            STRIPE_BODY,
            "Stripe-Signature does not match the body",
        ),
        (f"t={T},v1=é{'0' * 63}", STRIPE_BODY, "Stripe-Signature does not match the body"),
    ],
)
def test_stripe_rejects(header: str | None, body: bytes, reason: str) -> None:
    assert _reason(lambda: verify_stripe(body, header, STRIPE_SECRET, now=T)) == reason


@pytest.mark.parametrize(("age", "accepted"), [(300, True), (301, False), (-300, True), (-301, False)])
def test_stripe_timestamp_tolerance(age: int, accepted: bool) -> None:
    header = f"t={T},v1={_stripe_hex(STRIPE_SECRET, T, STRIPE_BODY)}"
    if accepted:
        assert verify_stripe(STRIPE_BODY, header, STRIPE_SECRET, now=T + age) is None
    else:
        reason = _reason(lambda: verify_stripe(STRIPE_BODY, header, STRIPE_SECRET, now=T + age))
        assert reason == "Stripe-Signature timestamp outside the tolerance"


def test_stripe_tolerance_is_configurable() -> None:
    header = f"t={T},v1={_stripe_hex(STRIPE_SECRET, T, STRIPE_BODY)}"
    assert verify_stripe(STRIPE_BODY, header, STRIPE_SECRET, tolerance=3600, now=T + 3000) is None
    reason = _reason(lambda: verify_stripe(STRIPE_BODY, header, STRIPE_SECRET, tolerance=10, now=T + 11))
    assert reason == "Stripe-Signature timestamp outside the tolerance"


# HubSpot v3

# The v3 vector of HubSpot's Python SDK tests (hubspot-api-python, tests/spec/utils/test_signature.py).
HS_SECRET = "yyyyyyyy-yyyy-yyyy-yyyy-yyyyyyyyyyyy"
HS_BODY = b"{'example_field':'example_value'}"
HS_URL = "https://www.example.com/webhook_uri"
HS_TIMESTAMP = "15000000"
HS_SIGNATURE = "HPW73RUtKmcYoEDADG0s6MmGFWUzWJKAW07r8RDgcQw="
HS_NOW = 15000000 / 1000


def _hubspot_b64(secret: str, method: str, uri: str, body: bytes, timestamp: str) -> str:
    digest = hmac.new(secret.encode(), method.encode() + uri.encode() + body + timestamp.encode(), hashlib.sha256)
    return base64.b64encode(digest.digest()).decode()


def test_hubspot_published_vector() -> None:
    assert _hubspot_b64(HS_SECRET, "POST", HS_URL, HS_BODY, HS_TIMESTAMP) == HS_SIGNATURE
    assert hubspot_signature(HS_SECRET, "POST", HS_URL, HS_BODY, HS_TIMESTAMP) == HS_SIGNATURE


def _verify_hubspot(
    *,
    body: bytes = HS_BODY,
    method: str = "POST",
    uri: str = HS_URL,
    signature: str | None = HS_SIGNATURE,
    timestamp: str | None = HS_TIMESTAMP,
    now: float = HS_NOW,
) -> None:
    verify_hubspot_v3(body, method=method, uri=uri, signature=signature, timestamp=timestamp, secret=HS_SECRET, now=now)


def test_hubspot_accepts_the_published_request() -> None:
    assert _verify_hubspot() is None
    assert _verify_hubspot(now=HS_NOW + 299.999) is None


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"signature": None}, "missing X-HubSpot-Signature-v3 header"),
        ({"timestamp": None}, "missing X-HubSpot-Request-Timestamp header"),
        ({"timestamp": "15000000.5"}, "X-HubSpot-Request-Timestamp is not epoch milliseconds"),
        ({"timestamp": "9" * 5000}, "X-HubSpot-Request-Timestamp is not epoch milliseconds"),
        ({"now": HS_NOW + 300.001}, "X-HubSpot-Request-Timestamp outside the tolerance"),
        ({"now": HS_NOW - 300.001}, "X-HubSpot-Request-Timestamp outside the tolerance"),
        ({"body": HS_BODY + b" "}, "X-HubSpot-Signature-v3 does not match the request"),
        ({"method": "PUT"}, "X-HubSpot-Signature-v3 does not match the request"),
        ({"uri": "http://www.example.com/webhook_uri"}, "X-HubSpot-Signature-v3 does not match the request"),
        ({"signature": "ÿ" + HS_SIGNATURE[1:]}, "X-HubSpot-Signature-v3 does not match the request"),
    ],
)
def test_hubspot_rejects(changes: dict[str, object], reason: str) -> None:
    assert _reason(lambda: _verify_hubspot(**changes)) == reason  # type: ignore[arg-type]


def test_hubspot_timestamp_is_part_of_the_signature() -> None:
    later = str(int(HS_TIMESTAMP) + 1)
    assert _reason(lambda: _verify_hubspot(timestamp=later)) == "X-HubSpot-Signature-v3 does not match the request"


def test_hubspot_uri_decoding() -> None:
    uri = "https://h.example/ingest/hubspot?portal=1%3A2%2c3&x=%20"
    decoded = "https://h.example/ingest/hubspot?portal=1:2,3&x=%20"
    assert hubspot_uri_forms(uri) == [uri, decoded]
    assert hubspot_uri_forms(HS_URL) == [HS_URL]
    for signed in (uri, decoded):
        signature = _hubspot_b64(HS_SECRET, "POST", signed, HS_BODY, HS_TIMESTAMP)
        assert _verify_hubspot(uri=uri, signature=signature) is None


# Basic auth (Pipedrive) and bearer tokens


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.mark.parametrize("password", ["s3cret", "with:colon", "pässwörd", ""])
def test_basic_accepts(password: str) -> None:
    assert verify_basic(_basic("revpulse", password), "revpulse", password) is None


def test_basic_scheme_is_case_insensitive() -> None:
    assert verify_basic(_basic("u", "p").replace("Basic", "basic"), "u", "p") is None


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        (None, "missing HTTP basic credentials"),
        ("", "missing HTTP basic credentials"),
        ("Bearer abc", "missing HTTP basic credentials"),
        ("Basic", "missing HTTP basic credentials"),
        ("Basic not*base64", "malformed HTTP basic credentials"),
        ("Basic " + base64.b64encode(b"no-colon").decode(), "malformed HTTP basic credentials"),
        ("Basic " + base64.b64encode(b"\xff\xfe:x").decode(), "malformed HTTP basic credentials"),
        (_basic("revpulse", "wrong"), "wrong HTTP basic credentials"),
        (_basic("someone", "s3cret"), "wrong HTTP basic credentials"),
        (_basic("revpulse", "s3cret "), "wrong HTTP basic credentials"),
    ],
)
def test_basic_rejects(header: str | None, reason: str) -> None:
    assert _reason(lambda: verify_basic(header, "revpulse", "s3cret")) == reason


def test_bearer() -> None:
    assert verify_bearer("Bearer tok-123", "tok-123") is None
    assert verify_bearer("bearer tok-123", "tok-123") is None
    assert _reason(lambda: verify_bearer(None, "tok-123")) == "missing bearer token"
    assert _reason(lambda: verify_bearer("Bearer ", "tok-123")) == "missing bearer token"
    assert _reason(lambda: verify_bearer("tok-123", "tok-123")) == "missing bearer token"
    assert _reason(lambda: verify_bearer("Basic tok-123", "tok-123")) == "missing bearer token"
    assert _reason(lambda: verify_bearer("Bearer tok-124", "tok-123")) == "wrong bearer token"
    assert _reason(lambda: verify_bearer("Bearer tok-12", "tok-123")) == "wrong bearer token"
    assert _reason(lambda: verify_bearer("Bearer \udcff", "tok-123")) == "wrong bearer token"
