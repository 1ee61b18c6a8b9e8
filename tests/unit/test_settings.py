"""Settings from the environment (SPEC §6): defaults, parsing, and one-line errors naming the variable."""

from __future__ import annotations

import pytest

from revpulse.settings import Ingest, Settings, SettingsError, parse_duration


def test_defaults() -> None:
    s = Settings.from_env({})
    assert (s.broker, s.web_port, s.clock, s.currency) == ("kafka://localhost:9092", 6066, "wall", "USD")
    assert s.segments == ("smb", "mid_market", "enterprise")
    assert (s.allowed_lateness, s.publish_interval) == (7 * 86400, 1.0)
    assert s.topics.inputs == ("crm.events", "billing.events", "product.events", "marketing.events")
    assert s.bootstrap_servers == "localhost:9092"


def test_values_parsed() -> None:
    s = Settings.from_env(
        {
            "REVPULSE_CLOCK": "event",
            "REVPULSE_SEGMENTS": "a, b",
            "REVPULSE_FX_RATES": '{"EUR": 1.08}',
            "REVPULSE_ALLOWED_LATENESS": "2h",
            "REVPULSE_PUBLISH_INTERVAL": "1.5s",
            "REVPULSE_TOPIC_METRICS": "m",
            "REVPULSE_GROSS_MARGIN": "0.8",
        }
    )
    assert (s.clock, s.segments, dict(s.fx_rates)) == ("event", ("a", "b"), {"EUR": 1.08})
    assert (s.allowed_lateness, s.publish_interval, s.topics.metrics, s.gross_margin) == (7200, 1.5, "m", 0.8)


@pytest.mark.parametrize(("text", "seconds"), [("7d", 604800), ("1.5s", 1.5), ("90", 90), ("3m", 180)])
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("REVPULSE_CLOCK", "sundial"),
        ("REVPULSE_WEB_PORT", "http"),
        ("REVPULSE_BROKER", "localhost:9092"),
        ("REVPULSE_FX_RATES", "[1]"),
        ("REVPULSE_FX_RATES", '{"EUR": -1}'),
        ("REVPULSE_ALLOWED_LATENESS", "7 days"),
        ("REVPULSE_PUBLISH_INTERVAL", "0"),
        ("REVPULSE_SEGMENTS", "smb,all"),
        ("REVPULSE_CURRENCY", "usd"),
        ("REVPULSE_INFLATION_ANNUAL", "lots"),
        ("REVPULSE_GROSS_MARGIN", "2"),
        ("REVPULSE_TOPIC_CRM", "bad topic"),
        ("REVPULSE_TOPIC_SALESFORCE_CDC", "bad topic"),
        ("REVPULSE_STRIPE_TOLERANCE", "5 minutes"),
        ("REVPULSE_STRIPE_TOLERANCE", "0"),
        ("REVPULSE_HOT_ACCOUNTS", "-1"),
        ("REVPULSE_COMPRESSION", "brotli"),
        ("REVPULSE_COMPRESSION", "LZ4"),
        ("REVPULSE_HOT_ACCOUNTS", "many"),
        ("REVPULSE_INGEST_MAX_BYTES", "1MB"),
        ("REVPULSE_INGEST_MAX_BYTES", "0"),
        ("REVPULSE_INGEST_MAX_BYTES", "1048577"),
        ("REVPULSE_PUBLIC_URL", "revpulse.example.com"),
        ("REVPULSE_PUBLIC_URL", "https://revpulse.example.com/?a=1"),
        ("REVPULSE_HUBSPOT_DEAL_STAGES", "[1]"),
        ("REVPULSE_HUBSPOT_DEAL_STAGES", '{"closedwon": "win"}'),
        ("REVPULSE_HUBSPOT_LIFECYCLE_STAGES", "{"),
        ("REVPULSE_HUBSPOT_LIFECYCLE_STAGES", '{"marketingqualifiedlead": "MQL"}'),
        ("REVPULSE_HUBSPOT_LIFECYCLE_STAGES", '{"lead": 1}'),
        ("REVPULSE_HTTP_HEADER_TIMEOUT", "0"),
        ("REVPULSE_HTTP_HEADER_TIMEOUT", "5 seconds"),
        ("REVPULSE_HTTP_HEADER_TIMEOUT", "301"),
        ("REVPULSE_HTTP_READ_TIMEOUT", "0.05"),
        ("REVPULSE_HTTP_READ_TIMEOUT", "soon"),
        ("REVPULSE_HTTP_MAX_CONNECTIONS", "0"),
        ("REVPULSE_HTTP_MAX_CONNECTIONS", "lots"),
        ("REVPULSE_HTTP_MAX_CONNECTIONS", "100001"),
        ("REVPULSE_INGEST_MAX_IN_FLIGHT", "0"),
        ("REVPULSE_INGEST_MAX_IN_FLIGHT", "1.5"),
    ],
)
def test_bad_setting_names_the_variable(name: str, value: str) -> None:
    with pytest.raises(SettingsError) as error:
        Settings.from_env({name: value})
    assert str(error.value).startswith(f"{name}: ")
    assert "\n" not in str(error.value)


def test_ingest_defaults() -> None:
    s = Settings.from_env({})
    assert s.ingest == Ingest(None, 300.0, None, None, None, None, 1048576, None)
    assert (s.hubspot_deal_stages, s.hubspot_lifecycle_stages) == (None, None)
    assert s.topics.salesforce_cdc == "salesforce.cdc"
    assert "salesforce.cdc" not in s.topics.inputs


def test_http_limits() -> None:
    s = Settings.from_env({})
    assert (s.http_header_timeout, s.http_max_connections) == (5.0, 512)
    assert (s.ingest.read_timeout, s.ingest.max_in_flight) == (5.0, 64)
    s = Settings.from_env(
        {
            "REVPULSE_HTTP_HEADER_TIMEOUT": "2.5s",
            "REVPULSE_HTTP_MAX_CONNECTIONS": "100",
            "REVPULSE_HTTP_READ_TIMEOUT": "1m",
            "REVPULSE_INGEST_MAX_IN_FLIGHT": "8",
        }
    )
    assert (s.http_header_timeout, s.http_max_connections) == (2.5, 100)
    assert (s.ingest.read_timeout, s.ingest.max_in_flight) == (60.0, 8)


def test_ingest_values_parsed() -> None:
    s = Settings.from_env(
        {
            "REVPULSE_STRIPE_WEBHOOK_SECRET": "whsec_abc",
            "REVPULSE_STRIPE_TOLERANCE": "10m",
            "REVPULSE_HUBSPOT_CLIENT_SECRET": "hs-secret",
            "REVPULSE_PIPEDRIVE_USER": "revpulse",
            "REVPULSE_PIPEDRIVE_PASSWORD": "pd-pass",
            "REVPULSE_INGEST_TOKEN": "tok",
            "REVPULSE_INGEST_MAX_BYTES": "2048",
            "REVPULSE_PUBLIC_URL": "https://revpulse.example.com/hooks/",
            "REVPULSE_HUBSPOT_DEAL_STAGES": '{"closedwon": "won", "closedlost": "lost", "123": "won"}',
            "REVPULSE_HUBSPOT_LIFECYCLE_STAGES": '{"marketingqualifiedlead": "mql", "other": "disqualified"}',
            "REVPULSE_TOPIC_SALESFORCE_CDC": "sf.cdc",
            "REVPULSE_TOPIC_INGEST_RAW": "hooks.raw",
        }
    )
    assert s.ingest == Ingest(
        stripe_webhook_secret="whsec_abc",
        stripe_tolerance=600.0,
        hubspot_client_secret="hs-secret",
        pipedrive_user="revpulse",
        pipedrive_password="pd-pass",
        token="tok",
        max_bytes=2048,
        public_url="https://revpulse.example.com/hooks",
    )
    assert s.hubspot_deal_stages == {"closedwon": "won", "closedlost": "lost", "123": "won"}
    assert s.hubspot_lifecycle_stages == {"marketingqualifiedlead": "mql", "other": "disqualified"}
    assert s.topics.salesforce_cdc == "sf.cdc"
    assert s.topics.ingest_raw == "hooks.raw"


def test_secrets_stay_out_of_reprs() -> None:
    s = Settings.from_env(
        {
            "REVPULSE_STRIPE_WEBHOOK_SECRET": "whsec_SECRET1",
            "REVPULSE_HUBSPOT_CLIENT_SECRET": "SECRET2",
            "REVPULSE_PIPEDRIVE_USER": "pd-user",
            "REVPULSE_PIPEDRIVE_PASSWORD": "SECRET3",
            "REVPULSE_INGEST_TOKEN": "SECRET4",
        }
    )
    text = repr(s)
    assert "SECRET" not in text
    assert (
        "Ingest(stripe_tolerance=300.0, pipedrive_user='pd-user', max_bytes=1048576, public_url=None, "
        "read_timeout=5.0, max_in_flight=64, replay_window=300.0, replay_cache=50000)"
    ) in text


def test_pipedrive_user_cannot_hold_a_colon() -> None:
    with pytest.raises(SettingsError) as error:
        Settings.from_env({"REVPULSE_PIPEDRIVE_USER": "a:b", "REVPULSE_PIPEDRIVE_PASSWORD": "p"})
    assert str(error.value) == "REVPULSE_PIPEDRIVE_USER: HTTP basic auth user names cannot contain ':'"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"REVPULSE_PIPEDRIVE_USER": "u"}, "REVPULSE_PIPEDRIVE_PASSWORD: must be set with REVPULSE_PIPEDRIVE_USER"),
        ({"REVPULSE_PIPEDRIVE_PASSWORD": "p"}, "REVPULSE_PIPEDRIVE_USER: must be set with REVPULSE_PIPEDRIVE_PASSWORD"),
    ],
)
def test_pipedrive_credentials_come_together(env: dict[str, str], message: str) -> None:
    # Half a configuration would leave the source disabled without saying so: the missing half is named.
    with pytest.raises(SettingsError) as error:
        Settings.from_env(env)
    assert str(error.value) == message
