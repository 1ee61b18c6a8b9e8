"""Typed settings read from the environment (SPEC §6); a bad value fails fast naming its variable."""

from __future__ import annotations

import ipaddress
import os
import re
import ssl
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args

import orjson

Clock = Literal["wall", "event"]
Retention = Literal["compact", "rotate"]
Compression = Literal["none", "gzip", "lz4", "zstd"]
COMPRESSIONS: tuple[Compression, ...] = get_args(Compression)
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
    # Replay cache: an accepted request seen again is refused (409) for as long as its signature stays valid
    # (Stripe: its tolerance; HubSpot: 300 s) or, for the sources without a signed timestamp (pipedrive, events),
    # for `replay_window` seconds. At most `replay_cache` requests are remembered (the oldest go first).
    replay_window: float = 300.0
    replay_cache: int = 50_000


@dataclass(frozen=True)
class Web:
    """The web port beyond its number: the address it binds, TLS, Faust's own pages, and the read credentials.

    With a read token and/or a read user set, every path but `/healthz`, `/readyz` and `/ingest/*` needs them
    (agents/web_access.py). Secrets stay out of reprs."""

    # Loopback unless set: a worker started by hand serves its figures to this machine only. Containers set
    # 0.0.0.0 (the image does), and publish the port as they choose.
    host: str = "127.0.0.1"
    # Faust's own pages (router, tables, stats) under /faust/; off unless set.
    debug: bool = False
    certfile: Path | None = None
    keyfile: Path | None = None
    read_token: str | None = field(default=None, repr=False)
    read_user: str | None = None
    read_password: str | None = field(default=None, repr=False)

    @property
    def read_protected(self) -> bool:
        return self.read_token is not None or self.read_user is not None

    @property
    def tls(self) -> bool:
        return self.certfile is not None


KafkaProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]
KAFKA_PROTOCOLS: tuple[KafkaProtocol, ...] = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS: tuple[SaslMechanism, ...] = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


@dataclass(frozen=True)
class KafkaSecurity:
    """How every Kafka client RevPulse creates connects (REVPULSE_KAFKA_*): TLS and SASL. Built into client options
    by revpulse.kafka_security, the one place that does. Secrets stay out of reprs."""

    protocol: KafkaProtocol = "PLAINTEXT"
    sasl_mechanism: SaslMechanism | None = None
    sasl_username: str | None = None
    sasl_password: str | None = field(default=None, repr=False)
    # None: the system's trusted CAs (public CAs, as Confluent Cloud, MSK and Redpanda Cloud use).
    ssl_cafile: str | None = None
    # A client certificate (mutual TLS, as Aiven's default); the key may sit in the certificate file.
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    ssl_key_password: str | None = field(default=None, repr=False)
    ssl_check_hostname: bool = True

    @property
    def tls(self) -> bool:
        return self.protocol in ("SSL", "SASL_SSL")

    @property
    def sasl(self) -> bool:
        return self.protocol in ("SASL_PLAINTEXT", "SASL_SSL")


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
    # Not in SPEC §6: how the snapshot topic stays bounded. `compact`: one compacted topic, each new snapshot
    # tombstones the one before (Apache Kafka, managed Kafka). `rotate`: for a broker that compacts nothing (the
    # embedded one), each snapshot goes to a topic of its own, `<app id>-snapshots.<shard>.<offset>`, and the
    # shard's older ones are deleted once it is written.
    internal_retention: Retention = "compact"
    # Not in SPEC §6: how the worker's producers compress what they write (shard topic, partials, snapshots, the
    # metric and dead-letter topics): Kafka's own batch compression, which every Kafka client reads. The shard
    # topic carries every event routed to another worker's shard a second time (its own shards get spans).
    # zstd (Kafka 2.1 and later): aiokafka's lz4 is its slow high-compression level, and a worker spent a tenth
    # of its time in it.
    compression: Compression = "zstd"
    # Not in SPEC §6: the deployment key snapshots are signed with (HMAC-SHA256), the same on every worker. With
    # one set, a snapshot not signed with it is never read; without, snapshots are checksummed only.
    state_key: str | None = field(default=None, repr=False)
    # 0: a worker holds only its own shards. 1 (or more): it also keeps a warm replica of every other shard,
    # applied from the shard topic, so that a takeover needs no restore.
    standby_replicas: int = 0
    # Accounts per shard kept as objects between batches; the rest are held encoded (memory vs. decode time).
    hot_accounts: int = 10_000
    # SPEC §5: UTC midnights kept in the history of every series (0: none).
    history_days: int = 400
    # A router pauses an input partition that runs more than this ahead, in event time, of another with records
    # left to read (a backfill of a dense topic then stays in step with the others); 0 reads each at full speed.
    input_alignment: float = 3600.0
    # The web port: seconds a connection may take to send a whole request line and headers, counted from its
    # opening or from the previous answer (so also how long an idle keep-alive connection stays open), and the
    # most connections open at once (beyond it a new one is answered 503 and closed).
    http_header_timeout: float = 5.0
    http_max_connections: int = 512
    ingest: Ingest = field(default_factory=Ingest)
    # Not in SPEC §6: REVPULSE_WEB_HOST, REVPULSE_WEB_DEBUG, REVPULSE_WEB_CERTFILE/KEYFILE, REVPULSE_READ_*.
    web: Web = field(default_factory=Web)
    # Not in SPEC §6: TLS and SASL of every Kafka client (REVPULSE_KAFKA_*).
    kafka: KafkaSecurity = field(default_factory=KafkaSecurity)
    # Replicas of every topic RevPulse creates (and Faust's own): 1 for a one-broker cluster; 3 where the cluster
    # requires it (Confluent Cloud) or should have it (any production cluster).
    replication_factor: int = 1
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
        _basic_auth_pair(pipedrive_user, pipedrive_password, "REVPULSE_PIPEDRIVE")
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
            replay_window=parse("REVPULSE_INGEST_REPLAY_WINDOW", ingest_defaults.replay_window, _replay_window),
            replay_cache=parse("REVPULSE_INGEST_REPLAY_CACHE", ingest_defaults.replay_cache, _replay_cache),
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
            internal_retention=parse("REVPULSE_INTERNAL_RETENTION", defaults.internal_retention, _retention),
            compression=parse("REVPULSE_COMPRESSION", defaults.compression, _compression),
            state_key=parse("REVPULSE_STATE_KEY", defaults.state_key, _state_key),
            standby_replicas=parse("REVPULSE_STANDBY_REPLICAS", defaults.standby_replicas, _non_negative_int),
            hot_accounts=parse("REVPULSE_HOT_ACCOUNTS", defaults.hot_accounts, _non_negative_int),
            history_days=parse("REVPULSE_HISTORY_DAYS", defaults.history_days, _non_negative_int),
            input_alignment=parse("REVPULSE_INPUT_ALIGNMENT", defaults.input_alignment, _non_negative_duration),
            http_header_timeout=parse("REVPULSE_HTTP_HEADER_TIMEOUT", defaults.http_header_timeout, _http_timeout),
            http_max_connections=parse(
                "REVPULSE_HTTP_MAX_CONNECTIONS", defaults.http_max_connections, _max_connections
            ),
            ingest=ingest,
            web=_web(get, parse),
            kafka=_kafka_security(get),
            replication_factor=parse("REVPULSE_REPLICATION_FACTOR", defaults.replication_factor, _replication_factor),
            hubspot_deal_stages=parse("REVPULSE_HUBSPOT_DEAL_STAGES", defaults.hubspot_deal_stages, _deal_stages),
            hubspot_lifecycle_stages=parse(
                "REVPULSE_HUBSPOT_LIFECYCLE_STAGES", defaults.hubspot_lifecycle_stages, _lifecycle_stages
            ),
        )


def _with_dotenv(env: Mapping[str, str]) -> Mapping[str, str]:
    """The environment over a `.env` file in the working directory, if there is one, unless the working directory
    is (or is inside) the data dir: a file there is data, which anyone who can write the data volume controls."""
    path = Path(".env")
    if not path.is_file():
        return env
    data_dir = env.get("REVPULSE_DATA_DIR") or str(Settings.data_dir)
    cwd = Path.cwd().resolve()
    if cwd.is_relative_to(Path(data_dir).resolve()):
        print(f"revpulse: ignoring {cwd / '.env'}: it is in the data dir (REVPULSE_DATA_DIR)", file=sys.stderr)
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


def _retention(raw: str) -> Retention:
    if raw not in ("compact", "rotate"):
        raise ValueError(f"expected 'compact' or 'rotate', got {raw!r}")
    return raw  # type: ignore[return-value]


def _compression(raw: str) -> Compression:
    if raw not in COMPRESSIONS:
        raise ValueError(f"expected one of {', '.join(COMPRESSIONS)}, got {raw!r}")
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


def _state_key(raw: str) -> str:
    # An HMAC key is only as strong as it is unguessable: 32 characters at least (`openssl rand -hex 32` gives 64).
    if len(raw) < 32:
        raise ValueError(f"must be at least 32 characters (e.g. `openssl rand -hex 32`), got {len(raw)}")
    return raw


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


# Kafka security: TLS and SASL of every Kafka client (REVPULSE_KAFKA_*).

_KAFKA_PROTOCOL = "REVPULSE_KAFKA_SECURITY_PROTOCOL"
_KAFKA_SASL = ("REVPULSE_KAFKA_SASL_MECHANISM", "REVPULSE_KAFKA_SASL_USERNAME", "REVPULSE_KAFKA_SASL_PASSWORD")
_KAFKA_SSL = (
    "REVPULSE_KAFKA_SSL_CAFILE",
    "REVPULSE_KAFKA_SSL_CERTFILE",
    "REVPULSE_KAFKA_SSL_KEYFILE",
    "REVPULSE_KAFKA_SSL_KEY_PASSWORD",
    "REVPULSE_KAFKA_SSL_CHECK_HOSTNAME",
)
# Every Kafka security variable, with the _FILE variants of the secrets.
KAFKA_ENV = (
    _KAFKA_PROTOCOL,
    *_KAFKA_SASL,
    *_KAFKA_SSL,
    "REVPULSE_KAFKA_SASL_PASSWORD_FILE",
    "REVPULSE_KAFKA_SSL_KEY_PASSWORD_FILE",
)


def _kafka_security(get: Callable[[str], str | None]) -> KafkaSecurity:
    raw_protocol = get(_KAFKA_PROTOCOL)
    protocol = "PLAINTEXT" if raw_protocol is None else raw_protocol.strip().upper()
    if protocol not in KAFKA_PROTOCOLS:
        raise SettingsError(f"{_KAFKA_PROTOCOL}: expected one of {', '.join(KAFKA_PROTOCOLS)}; got {raw_protocol!r}")
    security = KafkaSecurity(protocol=protocol)  # type: ignore[arg-type]
    # A setting the protocol would ignore is refused: a deployment that thinks it authenticates, or checks a CA,
    # must not silently connect without.
    for names, needed, what in ((_KAFKA_SASL, security.sasl, "SASL"), (_KAFKA_SSL, security.tls, "TLS")):
        if not needed:
            for name in names:
                if get(name) is not None or get(f"{name}_FILE") is not None:
                    needs = "SASL_SSL or SASL_PLAINTEXT" if what == "SASL" else "SSL or SASL_SSL"
                    raise SettingsError(f"{name}: set, but {_KAFKA_PROTOCOL} is {protocol} ({what} needs {needs})")
    mechanism = username = password = None
    if security.sasl:
        raw_mechanism = get("REVPULSE_KAFKA_SASL_MECHANISM")
        choices = ", ".join(SASL_MECHANISMS)
        if raw_mechanism is None:
            raise SettingsError(
                f"REVPULSE_KAFKA_SASL_MECHANISM: required with {_KAFKA_PROTOCOL}={protocol} ({choices})"
            )
        mechanism = raw_mechanism.strip().upper().replace("_", "-")
        if mechanism not in SASL_MECHANISMS:
            raise SettingsError(f"REVPULSE_KAFKA_SASL_MECHANISM: expected one of {choices}; got {raw_mechanism!r}")
        username = get("REVPULSE_KAFKA_SASL_USERNAME")
        if username is None:
            raise SettingsError(f"REVPULSE_KAFKA_SASL_USERNAME: required with {_KAFKA_PROTOCOL}={protocol}")
        password = _secret(get, "REVPULSE_KAFKA_SASL_PASSWORD")
        if password is None:
            raise SettingsError(
                f"REVPULSE_KAFKA_SASL_PASSWORD: required with {_KAFKA_PROTOCOL}={protocol} "
                "(or REVPULSE_KAFKA_SASL_PASSWORD_FILE)"
            )
    cafile = certfile = keyfile = key_password = None
    check_hostname = True
    if security.tls:
        cafile, certfile, keyfile = (_kafka_file(get, f"REVPULSE_KAFKA_SSL_{name}") for name in _SSL_FILES)
        if keyfile is not None and certfile is None:
            raise SettingsError("REVPULSE_KAFKA_SSL_CERTFILE: must be set with REVPULSE_KAFKA_SSL_KEYFILE")
        key_password = _secret(get, "REVPULSE_KAFKA_SSL_KEY_PASSWORD")
        if key_password is not None and certfile is None:
            raise SettingsError("REVPULSE_KAFKA_SSL_CERTFILE: must be set with REVPULSE_KAFKA_SSL_KEY_PASSWORD")
        raw_check = get("REVPULSE_KAFKA_SSL_CHECK_HOSTNAME")
        try:
            check_hostname = True if raw_check is None else _boolean(raw_check)
        except ValueError as exc:
            raise SettingsError(f"REVPULSE_KAFKA_SSL_CHECK_HOSTNAME: {exc}") from None
    security = KafkaSecurity(
        protocol=security.protocol,
        sasl_mechanism=mechanism,  # type: ignore[arg-type]
        sasl_username=username,
        sasl_password=password,
        ssl_cafile=cafile,
        ssl_certfile=certfile,
        ssl_keyfile=keyfile,
        ssl_key_password=key_password,
        ssl_check_hostname=check_hostname,
    )
    if security.tls:
        kafka_ssl_context(security)  # a CA, certificate or key that cannot be loaded stops the start here, named
    return security


_SSL_FILES = ("CAFILE", "CERTFILE", "KEYFILE")
_replication_factor = _int_between(1, 16)


def _kafka_file(get: Callable[[str], str | None], name: str) -> str | None:
    raw = get(name)
    if raw is not None and not Path(raw).is_file():
        raise SettingsError(f"{name}: no such file: {raw}")
    return raw


def kafka_ssl_context(security: KafkaSecurity) -> ssl.SSLContext:
    """The TLS context of the Kafka clients: the CA file (else the system's CAs), the client certificate if any,
    hostname verification unless switched off. SettingsError naming the variable when a file cannot be loaded."""
    try:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=security.ssl_cafile)
    except (ssl.SSLError, OSError) as exc:
        raise SettingsError(
            f"REVPULSE_KAFKA_SSL_CAFILE: cannot load {security.ssl_cafile} as PEM CA certificates: {exc}"
        ) from None
    context.check_hostname = security.ssl_check_hostname
    if security.ssl_certfile is not None:
        key_password = security.ssl_key_password

        # Always a callback: without one, OpenSSL would ask for an encrypted key's pass phrase on the terminal.
        def password() -> str:
            return key_password or ""

        try:
            context.load_cert_chain(security.ssl_certfile, security.ssl_keyfile, password=password)
        except (ssl.SSLError, OSError) as exc:
            names = "REVPULSE_KAFKA_SSL_CERTFILE" + ("/REVPULSE_KAFKA_SSL_KEYFILE" if security.ssl_keyfile else "")
            hint = ""
            if _encrypted_key(security.ssl_keyfile or security.ssl_certfile):
                verb = "set" if key_password is None else "check"
                hint = f" (the key is encrypted: {verb} REVPULSE_KAFKA_SSL_KEY_PASSWORD)"
            raise SettingsError(f"{names}: cannot load the client certificate and key: {exc}{hint}") from None
    return context


def _encrypted_key(path: str) -> bool:
    try:
        return b"ENCRYPTED" in Path(path).read_bytes()
    except OSError:
        return False


# The web port: bind address, TLS, Faust's pages, read credentials.

# A value shipped as an example (`.env.example`: `change-me-…`) is refused: a deployment started with it would be
# protected by a secret printed in the repository.
_EXAMPLE_SECRET = re.compile(r"change[-_ ]?me", re.IGNORECASE)
_HOSTNAME = re.compile(
    r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"
)
# RFC 6750's b64token: what a bearer token may hold, so that it travels in a header unchanged.
_TOKEN = re.compile(r"^[A-Za-z0-9._~+/-]+=*$")
MIN_READ_TOKEN = 16
MIN_READ_PASSWORD = 12
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _web(get: Callable[[str], str | None], parse: Callable[[str, Any, Callable[[str], Any]], Any]) -> Web:
    defaults = Web()
    certfile = parse("REVPULSE_WEB_CERTFILE", defaults.certfile, _readable_file)
    keyfile = parse("REVPULSE_WEB_KEYFILE", defaults.keyfile, _readable_file)
    if keyfile is not None and certfile is None:
        raise SettingsError("REVPULSE_WEB_CERTFILE: must be set with REVPULSE_WEB_KEYFILE")
    if certfile is not None:
        _check_certificate(certfile, keyfile)
    token = _secret(get, "REVPULSE_READ_TOKEN")
    if token is not None:
        if not _TOKEN.match(token):
            raise SettingsError("REVPULSE_READ_TOKEN: letters, digits and -._~+/ only (e.g. `openssl rand -hex 32`)")
        if len(token) < MIN_READ_TOKEN:
            raise SettingsError(f"REVPULSE_READ_TOKEN: at least {MIN_READ_TOKEN} characters (openssl rand -hex 32)")
    user = get("REVPULSE_READ_USER")
    password = _secret(get, "REVPULSE_READ_PASSWORD")
    _basic_auth_pair(user, password, "REVPULSE_READ")
    if password is not None and len(password) < MIN_READ_PASSWORD:
        raise SettingsError(f"REVPULSE_READ_PASSWORD: at least {MIN_READ_PASSWORD} characters")
    return Web(
        host=parse("REVPULSE_WEB_HOST", defaults.host, _web_host),
        debug=parse("REVPULSE_WEB_DEBUG", defaults.debug, _boolean),
        certfile=certfile,
        keyfile=keyfile,
        read_token=token,
        read_user=user,
        read_password=password,
    )


def _secret(get: Callable[[str], str | None], name: str) -> str | None:
    """`name`, or the contents of the file `name`_FILE names (trailing whitespace dropped), not both; never an
    example value."""
    value = get(name)
    path = get(f"{name}_FILE")
    if value is not None and path is not None:
        raise SettingsError(f"{name}: set either {name} or {name}_FILE, not both")
    if path is not None:
        try:
            value = Path(path).read_text(encoding="utf-8").rstrip("\r\n\t ")
        except (OSError, UnicodeDecodeError) as exc:
            raise SettingsError(f"{name}_FILE: cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from None
        if not value:
            raise SettingsError(f"{name}_FILE: {path} is empty")
        name = f"{name}_FILE"
    if value is not None and _EXAMPLE_SECRET.search(value):
        raise SettingsError(f"{name}: still the example value; set a secret of your own")
    return value


def _basic_auth_pair(user: str | None, password: str | None, prefix: str) -> None:
    """`<prefix>_USER` and `<prefix>_PASSWORD` come together (one alone would leave basic auth half configured:
    refuse to start instead), and the user holds no ':'."""
    if user is None and password is not None:
        raise SettingsError(f"{prefix}_USER: must be set with {prefix}_PASSWORD")
    if password is None and user is not None:
        raise SettingsError(f"{prefix}_PASSWORD: must be set with {prefix}_USER")
    if user is not None and ":" in user:
        raise SettingsError(f"{prefix}_USER: HTTP basic auth user names cannot contain ':'")


def _web_host(raw: str) -> str:
    try:
        ipaddress.ip_address(raw)
    except ValueError:
        if not _HOSTNAME.match(raw):
            raise ValueError(f"expected an IP address or a host name, e.g. 127.0.0.1 or 0.0.0.0; got {raw!r}") from None
    return raw


def _boolean(raw: str) -> bool:
    if raw.lower() in _TRUE:
        return True
    if raw.lower() in _FALSE:
        return False
    raise ValueError(f"expected true or false, got {raw!r}")


def _readable_file(raw: str) -> Path:
    path = Path(raw)
    if not path.is_file():
        raise ValueError(f"no such file: {raw}")
    return path


def _check_certificate(certfile: Path, keyfile: Path | None) -> None:
    """Load the pair as the web server will, so a bad one stops the start here, named."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(certfile, keyfile)
    except (ssl.SSLError, OSError) as exc:
        names = "REVPULSE_WEB_CERTFILE" + ("/REVPULSE_WEB_KEYFILE" if keyfile is not None else "")
        raise SettingsError(f"{names}: cannot load the certificate and key: {exc}") from None


def _replay_window(raw: str) -> float:
    seconds = parse_duration(raw)
    if not 1 <= seconds <= 86400:
        raise ValueError(f"must be between 1s and 1d, got {raw!r}")
    return seconds


_replay_cache = _int_between(100, 10_000_000)
