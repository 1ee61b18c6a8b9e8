"""One noisy entity against a shard: how long its events take, in process, by batch size.

`python -m bench.noisy_keys [--events N] [--batch B]` prints JSON with seconds per case:
- updates: N `subscription.updated` of one account (each a new price), one per minute;
- wins: N `opportunity.won` of one opportunity;
- stages: N `lead.stage_changed` of one lead;
- segments: an account with N `product.usage` events, then N/10 `account.updated` changing its segment back
  and forth, each one later than all its usage.
The events are routed and applied as the worker does (`Router.route`, `Shard.apply`), B records a batch.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import orjson

from revpulse.schemas.models import EventDecoder
from revpulse.streams.engine import EngineConfig
from revpulse.streams.partition import InputRecord, Router, Shard

START_MS = int(datetime(2025, 1, 1, tzinfo=UTC).timestamp() * 1000)
NOW = datetime(2026, 1, 1, tzinfo=UTC)
MINUTE_MS = 60_000


def updates(n: int) -> Iterator[dict[str, Any]]:
    yield {
        "event_id": "s",
        "type": "subscription.started",
        "occurred_at": START_MS,
        "account_id": "a",
        "subscription_id": "s1",
        "mrr": 100,
    }
    for i in range(n):
        yield {
            "event_id": f"u{i}",
            "type": "subscription.updated",
            "occurred_at": START_MS + (i + 1) * MINUTE_MS,
            "account_id": "a",
            "subscription_id": "s1",
            "mrr": 100 + (i % 50),
        }


def wins(n: int) -> Iterator[dict[str, Any]]:
    yield {
        "event_id": "c",
        "type": "opportunity.created",
        "occurred_at": START_MS,
        "account_id": "a",
        "opportunity_id": "o1",
        "amount": 1000,
    }
    for i in range(n):
        yield {
            "event_id": f"w{i}",
            "type": "opportunity.won",
            "occurred_at": START_MS + (i + 1) * MINUTE_MS,
            "account_id": "a",
            "opportunity_id": "o1",
        }


def stages(n: int) -> Iterator[dict[str, Any]]:
    yield {"event_id": "c", "type": "lead.created", "occurred_at": START_MS, "account_id": "a", "lead_id": "l1"}
    for i in range(n):
        yield {
            "event_id": f"s{i}",
            "type": "lead.stage_changed",
            "occurred_at": START_MS + (i + 1) * MINUTE_MS,
            "account_id": "a",
            "lead_id": "l1",
            "stage": ("mql", "sql", "lead")[i % 3],
        }


def segments(n: int) -> Iterator[dict[str, Any]]:
    for i in range(n):
        yield {"event_id": f"p{i}", "type": "product.usage", "occurred_at": START_MS + i * MINUTE_MS, "account_id": "a"}
    for i in range(n // 10):
        yield {
            "event_id": f"g{i}",
            "type": "account.updated",
            "occurred_at": START_MS + (n + i) * MINUTE_MS,
            "account_id": "a",
            "segment": ("smb", "enterprise")[i % 2],
        }


def seconds(events: Iterator[dict[str, Any]], batch: int) -> float:
    router = Router(EventDecoder("USD", {}, ("smb", "mid_market", "enterprise")), shards=1)
    shard = Shard(0, EngineConfig())
    records = [InputRecord("t", 0, i, orjson.dumps(e), 0.0) for i, e in enumerate(events)]
    started = time.perf_counter()
    for i in range(0, len(records), batch):
        for items in router.route(records[i : i + batch], NOW).values():
            shard.apply(items, i + 1)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=8000)
    parser.add_argument("--batch", type=int, default=100)
    args = parser.parse_args()
    cases = {"updates": updates, "wins": wins, "stages": stages, "segments": segments}
    result = {name: round(seconds(make(args.events), args.batch), 3) for name, make in cases.items()}
    print(orjson.dumps({"events": args.events, "batch": args.batch, "seconds": result}).decode())


if __name__ == "__main__":
    main()
