"""Settings from the environment (SPEC §6): defaults, parsing, and one-line errors naming the variable."""

from __future__ import annotations

import pytest

from streams.settings import Settings, SettingsError, parse_duration


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
    ],
)
def test_bad_setting_names_the_variable(name: str, value: str) -> None:
    with pytest.raises(SettingsError) as error:
        Settings.from_env({name: value})
    assert str(error.value).startswith(f"{name}: ")
    assert "\n" not in str(error.value)
