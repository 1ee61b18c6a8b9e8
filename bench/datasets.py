"""Benchmark data sets: generated once, cached as JSONL, loaded into a fresh embedded broker per data set.

The generators are slow (`revpulse.synth` makes ≈ 20-40k events/s), so each data set is written once to
`<cache dir>/<name>.jsonl` (one event per line: a log `revpulse replay` can read) with `<name>.meta.json` beside
it (event count, type mix, distinct accounts, event-time span). A cached file is reused by every later run.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from bench.fixed_book import USAGE_PER_ACCOUNT, book_start, generate_fixed
from bench.recovery import account_events
from revpulse.agents.base import send_all
from revpulse.settings import Topics
from revpulse.synth.config import SynthConfig, occurred_at_ms
from revpulse.synth.delivery import generate
from revpulse.topics import route_event

PARTITIONS = 4  # per input topic, as the worker creates them (revpulse.agents.app.INPUT_PARTITIONS)
RETENTION_MS = 365 * 86_400_000  # of the input topics: longer than any run
FX_RATES = {"EUR": 1.08}  # the synthetic business bills some accounts in EUR
DEFAULT_TOPICS = Topics()
Record = tuple[str, bytes | None, bytes]  # (topic, key, value)


@dataclass(frozen=True)
class DataSet:
    """`synth`: `revpulse.synth.delivery.generate(SynthConfig(accounts, days), events=events)`, the realistic mix.
    `accounts`: three events per account (segment, subscription, signup: `bench.recovery.account_events`), the
    cheap way to build the state of many accounts. `fixed`: `bench.fixed_book.generate_fixed(accounts, days)`, a
    fixed account base (none added after day 0) with ≥ 2 usage events per account a day (`events` is 0: the
    span decides), from `start` (`bench.fixed_book.book_start`: a span that would reach today starts earlier)."""

    kind: Literal["synth", "accounts", "fixed"]
    accounts: int
    events: int
    days: int = 90
    start: datetime | None = None

    @classmethod
    def synth(cls, accounts: int, events: int, days: int = 90) -> DataSet:
        return cls("synth", accounts, events, days)

    @classmethod
    def per_account(cls, accounts: int) -> DataSet:
        return cls("accounts", accounts, 3 * accounts, 30)

    @classmethod
    def fixed(cls, accounts: int, days: int) -> DataSet:
        return cls("fixed", accounts, 0, days, book_start(days, datetime.now(UTC)))

    @property
    def name(self) -> str:
        if self.kind == "accounts":
            return f"accounts-a{self.accounts}"
        if self.kind == "fixed":
            # Named by its start only where that is not synth's usual one, so the usual spans keep their caches.
            moved = f"-from{self.start:%Y%m%d}" if self.start and self.start != SynthConfig().start else ""
            return f"fixed-a{self.accounts}-d{self.days}-u{USAGE_PER_ACCOUNT:g}-s7{moved}"
        return f"synth-a{self.accounts}-d{self.days}-s7-e{self.events}"

    def generate(self) -> Iterator[tuple[str, dict[str, Any]]]:
        if self.kind == "accounts":
            return account_events(self.accounts)
        if self.kind == "fixed":
            return generate_fixed(self.accounts, self.days, start=self.start)
        return generate(SynthConfig(accounts=self.accounts, days=self.days), events=self.events)


@dataclass(frozen=True)
class Cached:
    dataset: DataSet
    path: Path
    meta: dict[str, Any]

    @property
    def events(self) -> int:
        return int(self.meta["events"])

    def lines(self) -> Iterator[bytes]:
        with self.path.open("rb") as handle:
            for line in handle:
                yield line.rstrip(b"\n")


def cached(dataset: DataSet, cache_dir: Path) -> Cached:
    """The data set's JSONL file and facts, generating them first if they are not in the cache yet."""
    path = cache_dir / f"{dataset.name}.jsonl"
    meta_path = path.with_suffix(".meta.json")
    if not (path.is_file() and meta_path.is_file()):
        cache_dir.mkdir(parents=True, exist_ok=True)
        print(f"generating {dataset.name} into {path} (once; later runs reuse it)", flush=True)
        meta = _write(dataset, path)
        meta_path.write_bytes(orjson.dumps(meta, option=orjson.OPT_INDENT_2))
    return Cached(dataset, path, orjson.loads(meta_path.read_bytes()))


def _write(dataset: DataSet, path: Path) -> dict[str, Any]:
    types: Counter[str] = Counter()
    accounts: set[str] = set()
    first = last = None
    temporary = path.with_suffix(".tmp")
    with temporary.open("wb") as handle:
        for _, event in dataset.generate():
            handle.write(orjson.dumps(event) + b"\n")
            types[event["type"]] += 1
            if "account_id" in event:
                accounts.add(event["account_id"])
            at = occurred_at_ms(event["occurred_at"])
            first = at if first is None else min(first, at)
            last = at if last is None else max(last, at)
    os.replace(temporary, path)
    events = sum(types.values())
    return {
        "name": dataset.name,
        "generator": dataset.kind,
        "base_accounts": dataset.accounts,
        "events": events,
        "distinct_accounts": len(accounts),
        "span_days": round(((last or 0) - (first or 0)) / 86_400_000, 2),
        "types": {kind: {"events": n, "share": round(n / events, 4)} for kind, n in types.most_common()},
    }


def input_topics(prefix: str) -> Topics:
    """The topics of one loaded data set (inputs `<prefix>.crm`…) and of the deployments reading it."""
    return Topics(
        crm=f"{prefix}.crm",
        billing=f"{prefix}.billing",
        product=f"{prefix}.product",
        marketing=f"{prefix}.marketing",
        metrics=f"{prefix}.metrics",
        deadletter=f"{prefix}.deadletter",
    )


def topics_env(topics: Topics) -> dict[str, str]:
    """The REVPULSE_TOPIC_* settings that point a worker at `topics`."""
    names = ("crm", "billing", "product", "marketing", "metrics", "deadletter")
    return {f"REVPULSE_TOPIC_{name.upper()}": getattr(topics, name) for name in names}


def route(value: bytes, topics: Topics) -> Record:
    """(topic, key, value) of one event line, routed by type and keyed per SPEC §1 (as `revpulse replay` does)."""
    return _routed(orjson.loads(value), value, topics)


def _routed(event: dict[str, Any], value: bytes, topics: Topics) -> Record:
    out = route_event(event, value, topics)
    assert out.reason is None, event
    return out.topic, out.key, out.value


def retimed(value: bytes, at_ms: int, topics: Topics, *, suffix: str = "") -> Record:
    """The event of `value` happening at `at_ms` (epoch milliseconds), its id suffixed by `suffix`, routed."""
    event = orjson.loads(value)
    event["occurred_at"] = at_ms
    if suffix:
        event["event_id"] += suffix
    return _routed(event, orjson.dumps(event), topics)


async def create_topics(bootstrap: str, topics: Topics) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        # An explicit retention: the embedded broker's DescribeConfigs omits it otherwise, and Quix Streams
        # (the peer, `bench.quix_peer`) stops at setup without it.
        configs = {"retention.ms": str(RETENTION_MS)}
        await admin.create_topics([NewTopic(name, PARTITIONS, 1, topic_configs=configs) for name in topics.inputs])
    finally:
        await admin.close()


def producer(bootstrap: str) -> AIOKafkaProducer:
    return AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, max_batch_size=1024 * 1024)


async def send(producer: AIOKafkaProducer, records: Iterable[Record]) -> int:
    """Send `records` in whole batches per partition (a key always lands in one partition, so each key keeps its
    order) and wait for every acknowledgement; the count sent. Record timestamps are the time of sending."""
    acked = await send_all(producer, ((topic, None, key, value, None) for topic, key, value in records))
    return sum(len(offsets) for ranges in acked.values() for offsets in ranges)


async def load(bootstrap: str, data: Cached, topics: Topics, *, create: bool = True, chunk: int = 50_000) -> int:
    """Write every event of `data` to the input topics (creating them first with `create`); the number of records
    written (count them here: the embedded broker's ListOffsets end offsets can be short)."""
    if create:
        await create_topics(bootstrap, topics)
    client = producer(bootstrap)
    await client.start()
    try:
        sent = 0
        pending: list[Record] = []
        for line in data.lines():
            pending.append(route(line, topics))
            if len(pending) >= chunk:
                sent += await send(client, pending)
                pending.clear()
        return sent + await send(client, pending)
    finally:
        await client.stop()


def reference_records(data: Cached) -> list[tuple[str, bytes]]:
    """(default input topic, value) of every event in log order, as `tests.reference.compute` takes them."""
    return [(route(line, DEFAULT_TOPICS)[0], line) for line in data.lines()]
