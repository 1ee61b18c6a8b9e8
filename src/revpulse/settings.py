"""Typed settings read from the environment (SPEC §6); a bad value fails fast naming its variable."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

import orjson

Clock = Literal["wall", "event"]
T = TypeVar("T")

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")
_UNIT_SECONDS = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_CURRENCY = re.compile(r"^[A-Z]{3}$")
_SEGMENT = re.compile(r"^[A-Za-z0-9_.-]+$")
_FUNNEL_STAGES = ("lead", "mql", "sql", "opportunity", "customer", "disqualified")  # SPEC §1 lead.stage_changed
_DEAL_OUTCOMES = ("won", "lost")
# Derived label values; a configured segment may not take their names.
_RESERVED_SEGMENTS = {"all", "other", "unknown"}


class SettingsError(ValueError):
    """A setting's value is unusable; the message names the variable."""


def parse_duration(text: str) -> float:
    """Seconds in `text`: a number of seconds, or a number with unit s, m, h or d (`7d`, `1.5s`)."""
    match = _DURATION.match(text)
    if not match:
        raise ValueError(f"not a duration: {text!r} (use seconds, or a number with s, m, h or d, e.g. 7d)")
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]


@dataclass(frozen=True)
class Topics:
    crm: str = "crm.events"
    billing: str = "billing.events"
    product: str = "product.events"
    marketing: str = "marketing.events"
    metrics: str = "revpulse.metrics"
    deadletter: str = "revpulse.deadletter"
    # Not in SPEC §6: Salesforce change-data-capture records, mapped to canonical events by a connector.
    salesforce_cdc: str = "salesforce.cdc"
    # Not in SPEC §6: HTTP ingest writes `<ingest_raw>.<source>` (stripe, hubspot, pipedrive, events).
    ingest_raw: str = "ingest.raw"

    @property
    def inputs(self) -> tuple[str, ...]:
        return (self.crm, self.billing, self.product, self.marketing)


@dataclass(frozen=True)
class Ingest:
    """HTTP ingest (`POST /ingest/<source>`): a source answers only once its secret is set. Secrets stay out of
    reprs, so a logged `Settings` never shows them."""

    stripe_webhook_secret: str | None = field(default=None, repr=False)
    # Seconds a Stripe-Signature timestamp may be away from now (Stripe's libraries default to 300).
    stripe_tolerance: float = 300.0
    hubspot_client_secret: str | None = field(default=None, repr=False)
    pipedrive_user: str | None = None
    pipedrive_password: str | None = field(default=None, repr=False)
    token: str | None = field(default=None, repr=False)
    max_bytes: int = 1024 * 1024
    # The public base URL providers call (e.g. https://revpulse.example.com behind a proxy); HubSpot signs the
    # URL it called, which the worker cannot see behind a proxy. None: the URL of the request as received.
    public_url: str | None = None
    # Seconds a request body may take to arrive whole once its headers are in (then 408, connection closed).
    read_timeout: float = 5.0
    # Requests reading or writing a body at once; beyond it 503 with Retry-After (memory: this × max_bytes).
    max_in_flight: int = 64


@dataclass(frozen=True)
class Settings:
    broker: str = "kafka://localhost:9092"
    web_port: int = 6066
    clock: Clock = "wall"
    data_dir: Path = Path("data")
    segments: tuple[str, ...] = ("smb", "mid_market", "enterprise")
    currency: str = "USD"
    fx_rates: Mapping[str, float] = field(default_factory=dict)
    allowed_lateness: float = 7 * 86400.0
    publish_interval: float = 1.0
    inflation_annual: float = 0.03
    gross_margin: float = 1.0
    topics: Topics = field(default_factory=Topics)
    # Not in SPEC §6: the Faust app id (consumer groups are named after it), so two deployments can share a
    # cluster, and the consumer-group session timeout, which bounds how long a dead worker's partitions wait.
    app_id: str = "revpulse"
    session_timeout: float = 10.0
    # Partitions of the internal shard topic: the most workers that can share the state work.
    shards: int = 8
    # How often a worker snapshots the state of the shards it owns (data dir and snapshot topic).
    snapshot_interval: float = 30.0
    # 0: a worker holds only its own shards. 1 (or more): it also keeps a warm replica of every other shard,
    # applied from the shard topic, so that a takeover needs no restore.
    standby_replicas: int = 0
    # Accounts per shard kept as objects between batches; the rest are held encoded (memory vs. decode time).
    hot_accounts: int = 10_000
    # The web port: seconds a connection may take to send a whole request line and headers, counted from its
    # opening or from the previous answer (so also how long an idle keep-alive connection stays open), and the
    # most connections open at once (beyond it a new one is answered 503 and closed).
    http_header_timeout: float = 5.0
    http_max_connections: int = 512
    ingest: Ingest = field(default_factory=Ingest)
    # HubSpot mapper overrides (None: the mapper's defaults): deal stage id → won/lost, lifecycle stage → a
    # SPEC §1 funnel stage.
    hubspot_deal_stages: Mapping[str, str] | None = None
    hubspot_lifecycle_stages: Mapping[str, str] | None = None

    @property
    def bootstrap_servers(self) -> str:
        """`host:port[,host:port]` for aiokafka, from a `kafka://` URL list."""
        return ",".join(part.removeprefix("kafka://") for part in self.broker.split(";"))

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = _with_dotenv(os.environ if env is None else env)
        defaults = cls()
        topic_defaults = defaults.topics

        def get(name: str) -> str | None:
            value = env.get(name)
            return value if value not in (None, "") else None

        def parse(name: str, default: T, convert: Callable[[str], T]) -> T:
            raw = get(name)
            if raw is None:
                return default
            try:
                return convert(raw)
            except (ValueError, TypeError) as exc:
                raise SettingsError(f"{name}: {exc}") from None

        topics = Topics(
            **{
                attr: _topic(f"REVPULSE_TOPIC_{attr.upper()}", get(f"REVPULSE_TOPIC_{attr.upper()}"), default)
                for attr, default in vars(topic_defaults).items()
            }
        )
        ingest_defaults = defaults.ingest
        pipedrive_user = get("REVPULSE_PIPEDRIVE_USER")
        pipedrive_password = get("REVPULSE_PIPEDRIVE_PASSWORD")
        # One without the other would leave the source half configured: refuse to start instead.
        if pipedrive_user is None and pipedrive_password is not None:
            raise SettingsError("REVPULSE_PIPEDRIVE_USER: must be set with REVPULSE_PIPEDRIVE_PASSWORD")
        if pipedrive_password is None and pipedrive_user is not None:
            raise SettingsError("REVPULSE_PIPEDRIVE_PASSWORD: must be set with REVPULSE_PIPEDRIVE_USER")
        if pipedrive_user is not None and ":" in pipedrive_user:
            raise SettingsError("REVPULSE_PIPEDRIVE_USER: HTTP basic auth user names cannot contain ':'")
        ingest = Ingest(
            stripe_webhook_secret=get("REVPULSE_STRIPE_WEBHOOK_SECRET"),
            stripe_tolerance=parse("REVPULSE_STRIPE_TOLERANCE", ingest_defaults.stripe_tolerance, _positive_duration),
            hubspot_client_secret=get("REVPULSE_HUBSPOT_CLIENT_SECRET"),
            pipedrive_user=pipedrive_user,
            pipedrive_password=pipedrive_password,
            token=get("REVPULSE_INGEST_TOKEN"),
            max_bytes=parse("REVPULSE_INGEST_MAX_BYTES", ingest_defaults.max_bytes, _max_bytes),
            public_url=parse("REVPULSE_PUBLIC_URL", ingest_defaults.public_url, _public_url),
            read_timeout=parse("REVPULSE_HTTP_READ_TIMEOUT", ingest_defaults.read_timeout, _http_timeout),
            max_in_flight=parse("REVPULSE_INGEST_MAX_IN_FLIGHT", ingest_defaults.max_in_flight, _max_in_flight),
        )
        return cls(
            broker=parse("REVPULSE_BROKER", defaults.broker, _broker),
            web_port=parse("REVPULSE_WEB_PORT", defaults.web_port, _port),
            clock=parse("REVPULSE_CLOCK", defaults.clock, _clock),
            data_dir=parse("REVPULSE_DATA_DIR", defaults.data_dir, Path),
            segments=parse("REVPULSE_SEGMENTS", defaults.segments, _segments),
            currency=parse("REVPULSE_CURRENCY", defaults.currency, _currency),
            fx_rates=parse("REVPULSE_FX_RATES", defaults.fx_rates, _fx_rates),
            allowed_lateness=parse("REVPULSE_ALLOWED_LATENESS", defaults.allowed_lateness, _non_negative_duration),
            publish_interval=parse("REVPULSE_PUBLISH_INTERVAL", defaults.publish_interval, _positive_duration),
            inflation_annual=parse("REVPULSE_INFLATION_ANNUAL", defaults.inflation_annual, _inflation),
            gross_margin=parse("REVPULSE_GROSS_MARGIN", defaults.gross_margin, _margin),
            topics=topics,
            app_id=parse("REVPULSE_APP_ID", defaults.app_id, _app_id),
            session_timeout=parse("REVPULSE_SESSION_TIMEOUT", defaults.session_timeout, _session_timeout),
            shards=parse("REVPULSE_SHARDS", defaults.shards, _shards),
            snapshot_interval=parse("REVPULSE_SNAPSHOT_INTERVAL", defaults.snapshot_interval, _positive_duration),
            standby_replicas=parse("REVPULSE_STANDBY_REPLICAS", defaults.standby_replicas, _non_negative_int),
            hot_accounts=parse("REVPULSE_HOT_ACCOUNTS", defaults.hot_accounts, _non_negative_int),
            http_header_timeout=parse("REVPULSE_HTTP_HEADER_TIMEOUT", defaults.http_header_timeout, _http_timeout),
            http_max_connections=parse(
                "REVPULSE_HTTP_MAX_CONNECTIONS", defaults.http_max_connections, _max_connections
            ),
            ingest=ingest,
            hubspot_deal_stages=parse("REVPULSE_HUBSPOT_DEAL_STAGES", defaults.hubspot_deal_stages, _deal_stages),
            hubspot_lifecycle_stages=parse(
                "REVPULSE_HUBSPOT_LIFECYCLE_STAGES", defaults.hubspot_lifecycle_stages, _lifecycle_stages
            ),
        )


def _with_dotenv(env: Mapping[str, str]) -> Mapping[str, str]:
    """The environment over a `.env` file in the working directory, if there is one."""
    path = Path(".env")
    if not path.is_file():
        return env
    merged: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, _, value = line.partition("=")
            merged[key.strip()] = value.strip().strip("'\"")
    merged.update(env)
    return merged


def _topic(name: str, raw: str | None, default: str) -> str:
    if raw is None:
        return default
    if not re.match(r"^[A-Za-z0-9._-]{1,249}$", raw):
        raise SettingsError(f"{name}: not a valid Kafka topic name: {raw!r}")
    return raw


def _broker(raw: str) -> str:
    for part in raw.split(";"):
        if not re.match(r"^kafka://[^:/\s]+:\d+$", part):
            raise ValueError(f"expected kafka://host:port (several separated by ';'), got {raw!r}")
    return raw


def _port(raw: str) -> int:
    port = int(raw)
    if not 0 < port < 65536:
        raise ValueError(f"port out of range: {raw}")
    return port


def _clock(raw: str) -> Clock:
    if raw not in ("wall", "event"):
        raise ValueError(f"expected 'wall' or 'event', got {raw!r}")
    return raw  # type: ignore[return-value]


def _segments(raw: str) -> tuple[str, ...]:
    names = tuple(part.strip() for part in raw.split(",") if part.strip())
    if not names:
        raise ValueError("no segment named")
    for name in names:
        if name in _RESERVED_SEGMENTS or not _SEGMENT.match(name):
            raise ValueError(f"invalid segment name {name!r} (all, other and unknown are reserved)")
    if len(set(names)) != len(names):
        raise ValueError(f"segment listed twice in {raw!r}")
    return names


def _currency(raw: str) -> str:
    if not _CURRENCY.match(raw):
        raise ValueError(f"expected an upper-case ISO 4217 code, got {raw!r}")
    return raw


def _json_object(raw: str) -> dict[str, Any]:
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise ValueError(f"not a JSON object: {raw!r}") from None
    if not isinstance(value, dict):
        raise ValueError(f"not a JSON object: {raw!r}")
    return value


def _fx_rates(raw: str) -> dict[str, float]:
    rates = _json_object(raw)
    for code, rate in rates.items():
        if not _CURRENCY.match(code):
            raise ValueError(f"bad currency code {code!r}")
        if isinstance(rate, bool) or not isinstance(rate, int | float) or not rate > 0 or rate == float("inf"):
            raise ValueError(f"rate for {code} must be a positive number, got {rate!r}")
    return {code: float(rate) for code, rate in rates.items()}


def _non_negative_duration(raw: str) -> float:
    return parse_duration(raw)


def _positive_duration(raw: str) -> float:
    seconds = parse_duration(raw)
    if seconds <= 0:
        raise ValueError(f"must be positive, got {raw!r}")
    return seconds


def _inflation(raw: str) -> float:
    value = float(raw)
    if not -1 < value < 10:
        raise ValueError(f"expected an annual rate such as 0.03, got {raw!r}")
    return value


def _app_id(raw: str) -> str:
    if not re.match(r"^[A-Za-z0-9._-]{1,100}$", raw):
        raise ValueError(f"letters, digits, '.', '_' and '-' only; got {raw!r}")
    return raw


def _int_between(low: int, high: int | None = None, unit: str = "") -> Callable[[str], int]:
    def parse(raw: str) -> int:
        count = int(raw)
        if high is None and count < low:
            raise ValueError(f"must be {low} or more, got {raw!r}")
        if high is not None and not low <= count <= high:
            raise ValueError(f"must be between {low} and {high}{unit}, got {raw!r}")
        return count

    return parse


def _duration_between(low: float, high: float) -> Callable[[str], float]:
    def parse(raw: str) -> float:
        seconds = parse_duration(raw)
        if not low <= seconds <= high:
            raise ValueError(f"must be between {low:g}s and {high:g}s, got {raw!r}")
        return seconds

    return parse


_session_timeout = _duration_between(1, 300)
_http_timeout = _duration_between(0.1, 300)
_shards = _int_between(1, 1024)
_non_negative_int = _int_between(0)
# The worker's producer sends records of at most 1 MiB (its max_request_size): a larger limit would accept bodies
# that can never be stored.
_max_bytes = _int_between(1, 1024 * 1024, " bytes")
_max_connections = _int_between(1, 100_000)
_max_in_flight = _int_between(1, 10_000)


def _margin(raw: str) -> float:
    value = float(raw)
    if not 0 < value <= 1:
        raise ValueError(f"expected a fraction in (0, 1], got {raw!r}")
    return value


def _public_url(raw: str) -> str:
    if not re.match(r"^https?://[^/?#\s]+(/[^?#\s]*)?$", raw):
        raise ValueError(
            f"expected an http(s) base URL without query or fragment, e.g. https://revpulse.example.com; got {raw!r}"
        )
    return raw.rstrip("/")


def _string_map(raw: str, allowed: tuple[str, ...]) -> dict[str, str]:
    """A JSON object of non-empty string keys to one of `allowed`."""
    mapping = _json_object(raw)
    for key, value in mapping.items():
        if not key:
            raise ValueError("empty key")
        if value not in allowed:
            raise ValueError(f"value for {key!r} must be one of {', '.join(allowed)}; got {value!r}")
    return mapping


def _deal_stages(raw: str) -> dict[str, str]:
    return _string_map(raw, _DEAL_OUTCOMES)


def _lifecycle_stages(raw: str) -> dict[str, str]:
    return _string_map(raw, _FUNNEL_STAGES)
