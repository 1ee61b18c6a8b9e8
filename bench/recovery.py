"""Recovery times for a state of many accounts: `python -m bench.recovery --accounts 100000`.

Builds the state with one worker (each account: a segment, a subscription, a signup), waits for its snapshots,
then measures restart → ready after `kill -9`: with the data dir (local snapshots), and with the data dir
deleted (snapshots read back from the snapshot topic). Writes bench/recovery.json.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer

from revpulse.local.broker import EmbeddedBroker
from revpulse.local.processes import LocalWorkers, WorkerProcess

SEGMENTS = ("smb", "mid_market", "enterprise")


def account_events(accounts: int) -> Iterator[tuple[str, dict[str, Any]]]:
    """(topic, event): three events per account, spread over 30 days of January 2024."""
    for i in range(accounts):
        account = f"acc-{i:07d}"
        at = 1_704_067_200_000 + (i * 997 % (30 * 86_400)) * 1000
        common = {"account_id": account, "occurred_at": at}
        events = [
            ("crm.events", {"type": "account.updated", "segment": SEGMENTS[i % 3]}),
            ("billing.events", {"type": "subscription.started", "subscription_id": "s1", "mrr": 50 + i % 500}),
            ("product.events", {"type": "product.signup"}),
        ]
        for n, (topic, fields) in enumerate(events):
            yield topic, {"event_id": f"{account}-{n}", **common, **fields}


async def produce(bootstrap: str, records: list[tuple[str, bytes, bytes]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, max_batch_size=1024 * 1024)
    await producer.start()
    try:
        pending: list[Any] = []
        for topic, key, value in records:
            pending.append(await producer.send(topic, value, key=key))
            if len(pending) >= 20_000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
    finally:
        await producer.stop()


def wait_for_events(worker: WorkerProcess, total: int) -> None:
    while orjson.loads(worker.get("/healthz")[1])["events"] < total:
        time.sleep(0.5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--accounts", type=int, default=100_000)
    parser.add_argument("--output", type=Path, default=Path("bench/recovery.json"))
    args = parser.parse_args()
    records = [
        (topic, event["account_id"].encode(), orjson.dumps(event)) for topic, event in account_events(args.accounts)
    ]
    with EmbeddedBroker() as broker, tempfile.TemporaryDirectory() as root:
        env = {
            "REVPULSE_BROKER": broker.url,
            "REVPULSE_CLOCK": "event",
            "REVPULSE_SESSION_TIMEOUT": "3s",
            "REVPULSE_SNAPSHOT_INTERVAL": "5s",
            "REVPULSE_APP_ID": "revpulse-recovery",
        }
        workers = LocalWorkers(env, Path(root))
        worker = workers.start("w1")
        started = time.monotonic()
        asyncio.run(produce(broker.bootstrap, records))
        wait_for_events(worker, len(records))
        build = time.monotonic() - started
        print(f"state of {args.accounts:,} accounts ({len(records):,} events) built in {build:.1f}s", flush=True)
        time.sleep(12)  # two snapshot intervals: every shard has a snapshot of its final state
        snapshot_bytes = sum(path.stat().st_size for path in workers.data_dir("w1").rglob("shard-*.state"))
        results: dict[str, float] = {
            "accounts": args.accounts,
            "events": len(records),
            "build_seconds": build,
            "snapshot_bytes": snapshot_bytes,
        }
        for case in ("with data dir", "data dir deleted"):
            workers.kill("w1")
            if case == "data dir deleted":
                shutil.rmtree(workers.data_dir("w1"))
            restarted = time.monotonic()
            worker = workers.start("w1", wait=False)
            worker.wait_ready(timeout=600)
            seconds = time.monotonic() - restarted
            assert orjson.loads(worker.get("/healthz")[1])["events"] == len(records)
            results[f"restart_to_ready_seconds ({case})"] = seconds
            print(f"restart → ready, {case}: {seconds:.1f}s", flush=True)
        workers.stop_all()
    print(f"snapshots: {snapshot_bytes / 1e6:.1f} MB ({snapshot_bytes / args.accounts:.0f} bytes per account)")
    args.output.write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2))


if __name__ == "__main__":
    main()
