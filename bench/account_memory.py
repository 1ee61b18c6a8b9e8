"""Memory on real accounts (issue 13, item 4): one worker holding a million accounts of 90 days' realistic history.

`python -m bench.account_memory [--accounts 1000000] [--sample 2000] [--traffic 200000] [--hot-accounts 1000]`,
or the `memory` part of `make bench`.

Reading 180M events to get there would take hours, so the accounts are made the way a restart makes them: a
fixed-book log (`bench.fixed_book`: two or more `product.usage` a day, monthly renewals, repricing, churn and
comebacks) of `--sample` accounts over 90 days is read in process, shard by shard as the worker shards it, and
its accounts' encodings are cloned under new ids until there are `--accounts` (clones keep everything but their
leads and opportunities, which stay with the originals). Each shard's snapshot, with the sample's ledger and
history, goes into a worker's data dir; then a real `revpulse worker` on the embedded broker restores them, and
takes `--traffic` usage events for random accounts (each decodes an account, applies, re-encodes it beyond the
hot limit: the arena churns and compacts) while it snapshots every `--snapshot-interval` s through forked
copies. Σ PSS over the worker and its copies is sampled throughout (`bench.procmem`: shared pages once).

Prints and writes (`--output`, JSON and .md): the peak during the restore, the peak while the traffic runs and
snapshots are taken, bytes per account in memory (that peak less an idle worker's, over the accounts) and in
snapshots, and the restore time.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import orjson

from bench.datasets import FX_RATES, DataSet, cached, create_topics, input_topics, producer, send
from bench.growth import idle_pss
from bench.procmem import GroupSampler
from bench.report import table
from bench.workers import Deployment, wait_until
from revpulse.local.broker import EmbeddedBroker
from revpulse.settings import Settings
from revpulse.streams.engine import Engine
from revpulse.streams.partition import InputRecord, ShardState, shard_of
from revpulse.streams.pipeline import Pipeline
from revpulse.streams.state_codec import write_state
from revpulse.topics import topic_of

MIB = 2**20
GIB = 2**30
SHARDS = Settings().shards
TARGET_GIB = 3.0


def sample_engines(sample: int, days: int, cache_dir: Path) -> list[Engine]:
    """Each shard's engine after reading the fixed-book log of `sample` accounts over `days`, in process."""
    data = cached(DataSet.fixed(sample, days), cache_dir)
    settings = Settings(clock="event", fx_rates=FX_RATES, shards=SHARDS)
    pipeline = Pipeline(settings)
    batch: list[InputRecord] = []
    for offset, line in enumerate(data.lines()):
        topic = topic_of(orjson.loads(line)["type"], settings.topics) or settings.topics.crm
        batch.append(InputRecord(topic, 0, offset, line, 0.0))
        if len(batch) == 5_000:
            pipeline.process(batch)
            batch = []
    pipeline.process(batch)
    return [shard.state.engine for shard in pipeline.shards]


def clone(engines: list[Engine], accounts: int) -> tuple[int, int]:
    """Add clones of the engines' accounts until they hold `accounts`, each in the shard its id routes to; the
    number of templates and the watermark."""
    templates = []
    for engine in engines:
        for _, data in engine.accounts.encoded(engine.config.allowed_lateness_us):
            record = orjson.loads(bytes(data))
            record[9], record[10] = [], []  # leads and opportunities stay with the originals
            templates.append(orjson.dumps(record))
    held = sum(len(engine.accounts) for engine in engines)
    for i in range(accounts - held):
        account_id = f"clone-{i:07d}"
        engines[shard_of(account_id, SHARDS)].accounts.put_encoded(account_id, templates[i % len(templates)])
    return len(templates), max(engine.watermark or 0 for engine in engines)


def write_snapshots(engines: list[Engine], directory: Path) -> int:
    """Each shard's snapshot where a worker restores it from; their bytes."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    total = 0
    for shard, engine in enumerate(engines):
        path = directory / f"shard-{shard}.state"
        with path.open("wb") as handle:
            write_state(handle, ShardState(engine, {}, Counter(), 0), shard)
        path.chmod(0o600)
        total += path.stat().st_size
    return total


async def send_usage(bootstrap: str, topic: str, clones: int, count: int, watermark_us: int) -> None:
    """`count` usage events, each for a random one of the `clones` clones, just after the watermark."""
    client = producer(bootstrap)
    await client.start()
    try:
        rng = random.Random(7)
        base_ms = watermark_us // 1000
        for start in range(0, count, 50_000):
            records = []
            for i in range(start, min(count, start + 50_000)):
                account_id = f"clone-{rng.randrange(clones):07d}"
                event = {"event_id": f"live-{i}", "type": "product.usage", "occurred_at": base_ms + i}
                records.append((topic, account_id.encode(), orjson.dumps(event | {"account_id": account_id})))
            await send(client, records)
    finally:
        await client.stop()


def measure(
    root: Path,
    cache_dir: Path,
    *,
    accounts: int,
    sample: int = 2_000,
    days: int = 90,
    traffic: int = 200_000,
    hot_accounts: int | None = 1_000,
    snapshot_interval: float = 30.0,
    sample_interval: float = 0.5,
) -> dict[str, Any]:
    started = time.perf_counter()
    engines = sample_engines(sample, days, cache_dir)
    templates, watermark = clone(engines, accounts)
    held = sum(len(engine.accounts) for engine in engines)
    print(f"{held:,} accounts from {templates:,} templates in {time.perf_counter() - started:.0f} s", flush=True)
    idle = idle_pss(root, sample_interval)
    with EmbeddedBroker() as broker:
        topics = input_topics("memory")
        asyncio.run(create_topics(broker.bootstrap, topics))
        env = {"REVPULSE_SNAPSHOT_INTERVAL": f"{snapshot_interval:g}s"}
        if hot_accounts is not None:
            env["REVPULSE_HOT_ACCOUNTS"] = str(hot_accounts)
        deployment = Deployment(broker.bootstrap, topics, "memory", root, env)
        settings = Settings(app_id=deployment.app_id)
        snapshot_bytes = write_snapshots(engines, deployment.workers.data_dir("w1") / settings.app_id)
        del engines
        print(f"snapshots: {snapshot_bytes / held:,.0f} B/account", flush=True)
        try:
            restore_started = time.monotonic()
            [worker] = deployment.start(1, wait=False)
            with GroupSampler(worker.process.pid, sample_interval) as restore:
                worker.wait_ready(timeout=1800)
            restore_seconds = time.monotonic() - restore_started
            print(f"restored in {restore_seconds:.0f} s; peak {restore.peak_pss / MIB:,.0f} MiB", flush=True)
            with GroupSampler(worker.process.pid, sample_interval) as running:
                asyncio.run(send_usage(broker.bootstrap, topics.product, held - templates, traffic, watermark))
                wait_until(lambda: deployment.events_counted() >= traffic, "traffic counted", 1800)
                time.sleep(min(3 * snapshot_interval, 60))  # copies of the state after the traffic
        finally:
            deployment.stop()
    peak = max(restore.peak_pss, running.peak_pss)
    row = {
        "accounts": held,
        "templates": templates,
        "sample_days": days,
        "traffic_events": traffic,
        "hot_accounts": hot_accounts or Settings().hot_accounts,
        "idle_pss_mib": round(idle / MIB),
        "restore_seconds": round(restore_seconds, 1),
        "restore_peak_pss_mib": round(restore.peak_pss / MIB),
        "running_peak_pss_mib": round(running.peak_pss / MIB),
        "running_peak_worker_pss_mib": round(running.peak_root_pss / MIB),
        "running_most_processes": running.most_processes,
        "peak_pss_mib": round(peak / MIB),
        "memory_bytes_per_account": round((running.peak_pss - idle) / held),
        "snapshot_bytes_per_account": round(snapshot_bytes / held),
        "target_gib": TARGET_GIB,
        "met": peak <= TARGET_GIB * GIB,
    }
    return row


def markdown(row: dict[str, Any]) -> str:
    return (
        f"### Memory on real accounts — {row['accounts']:,} accounts of {row['sample_days']} days, 1 worker\n\n"
        + table(
            ("figure", "value"),
            [
                ("peak PSS while restoring (copies incl.)", f"{row['restore_peak_pss_mib']:,} MiB"),
                ("peak PSS with traffic and snapshot copies", f"{row['running_peak_pss_mib']:,} MiB"),
                ("the worker alone, at its peak", f"{row['running_peak_worker_pss_mib']:,} MiB"),
                ("processes at most (worker + copies)", row["running_most_processes"]),
                ("memory per account (peak − idle worker)", f"{row['memory_bytes_per_account']:,} B"),
                ("snapshot per account", f"{row['snapshot_bytes_per_account']:,} B"),
                ("restore → ready", f"{row['restore_seconds']} s"),
                (f"target ≤ {row['target_gib']:g} GiB", "met" if row["met"] else "**not met**"),
            ],
        )
        + f"\n\nAccounts cloned from {row['templates']:,} read in process; {row['traffic_events']:,} usage events "
        f"for random accounts after the restore; {row['hot_accounts']:,} accounts a shard held as objects. Idle "
        f"worker: {row['idle_pss_mib']} MiB."
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--accounts", type=int, default=1_000_000)
    parser.add_argument("--sample", type=int, default=2_000, help="accounts read in process, cloned (2,000)")
    parser.add_argument("--days", type=int, default=90, help="of history per account (90)")
    parser.add_argument("--traffic", type=int, default=200_000, help="usage events after the restore (200,000)")
    parser.add_argument("--hot-accounts", type=int, default=1_000, help="REVPULSE_HOT_ACCOUNTS (1,000)")
    parser.add_argument("--snapshot-interval", type=float, default=30.0)
    parser.add_argument("--sample-interval", type=float, default=0.5)
    parser.add_argument("--cache-dir", type=Path, default=Path(tempfile.gettempdir()) / "revpulse-bench-cache")
    parser.add_argument("--output", type=Path, default=Path("bench/account_memory.json"), help="and .md beside it")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="revpulse-memory-") as root:
        row = measure(
            Path(root),
            args.cache_dir,
            accounts=args.accounts,
            sample=args.sample,
            days=args.days,
            traffic=args.traffic,
            hot_accounts=args.hot_accounts,
            snapshot_interval=args.snapshot_interval,
            sample_interval=args.sample_interval,
        )
    text = markdown(row)
    print(text)
    args.output.write_bytes(orjson.dumps(row, option=orjson.OPT_INDENT_2))
    args.output.with_suffix(".md").write_text(text + "\n")


if __name__ == "__main__":
    main()
