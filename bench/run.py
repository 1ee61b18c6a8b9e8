"""The performance benchmark: `make bench`, or `python -m bench.run [--quick] [--parts …] [--events N] …`.

Every figure of the performance issue in one run (≈ 30 minutes with the defaults; `--quick`: a smoke run of a
few minutes on small data). Each data set is generated once into a cache dir (JSONL, reused by later runs) and
written once to a fresh embedded broker; every consumer below reads the same topics from the earliest offset
(each RevPulse run is a deployment of its own app id, so its consumer groups and internal topics are new).
Workers are real `revpulse worker` processes (`revpulse.local.processes.LocalWorkers`) with the default settings except
REVPULSE_CLOCK=event (replays) and a 6 s session timeout, unless said otherwise below.

Parts (`--parts`, comma-separated; all by default):

* throughput — on the main data set (`--events` over `--accounts` base accounts and `--days` days of
  `revpulse.synth.delivery.generate`; its type mix is printed): events/s of
  - the ceiling: a bare aiokafka consumer, `getmany` + `orjson.loads` of every record, nothing else;
  - the per-event baseline: a plain Faust app, `@app.agent` over the same topics, `async for value in stream`
    + `orjson.loads` (value_serializer "raw"), timed from its first event to its last (capped at
    `--faust-timeout` seconds: then the rate of what it decoded);
  - RevPulse, one worker, all metrics: the events after its router group's first commit over the time from
    that commit until `/healthz` counts every event;
  and the ratio to the ceiling, the gain over the Faust baseline, the worker's peak RSS, and correctness: its
  settled `/api/metrics` against `tests/support/reference.py` over the same events (tolerance rel 1e-9, abs 1e-6, as
  the crosscheck tests);
  - the same work without Kafka (`bench.inprocess`): decode + validate alone, and the whole pipeline in one
    process: the bound a worker running this code can reach.
* long — the same measures as throughput but the Faust baseline, on a realistic long history: `--long-events`
  events of the synthetic business over `--long-days` days (15 months) from `--long-accounts` base accounts
  (about 26k accounts in all with the defaults; three quarters `product.usage`, the rest CRM, billing and
  spend): the ceiling; the peer a user would pick instead, Quix Streams in a venv of its own with one windowed
  aggregate over the same topics (`bench.quix_peer`); deployments of `--long-workers` workers (their peak RSS,
  and their metrics against the reference); and the in-process bound. `python -m bench.profile` on its JSONL
  shows where the in-process time goes.
* latency — a fresh worker with REVPULSE_CLOCK=wall and the default publish interval; a paced producer offers
  `--latency-rate` events/s (the main data set's events re-timed to the wall clock) for `--latency-seconds`.
  p50 and p99 of `revpulse_processing_lag_seconds` (the worker's histogram on /metrics: arrival in Kafka →
  metrics updated) over the observations after `--latency-warmup` s, until every event sent was observed:
  computed like PromQL `histogram_quantile` (linear interpolation in the bucket), with the bucket bounds.
* memory — memory on real accounts (`bench.account_memory`): a worker restoring `--memory-accounts` accounts of
  90 days' realistic history (cloned from a fixed-book log read in process), then usage traffic for random
  accounts while it snapshots through forked copies: peak PSS of the worker and its copies, bytes per account
  in memory and in snapshots, restore time.
* scale — 2 workers vs 1 on the main data set: the same measure as throughput, the events counted summed over
  both workers' `/healthz`; the 2-worker metrics are checked against the reference too.
* growth — one worker over `--growth` sizes of the synthetic mix (the main data set's accounts per event):
  events/s and peak RSS per size; the main size reuses the throughput run.
* history — growth with history (`bench.growth`): the same `--history-accounts` accounts (none added after
  day 0, ≥ 2 usage events per account a day, renewals, repricing, churn and comebacks) over `--history-days`
  spans, each read by a fresh worker: peak PSS of the worker and its forked snapshot copies, snapshot bytes per
  account, events/s and restart → ready, with the ratios to the shortest span against the issue's targets.

Output: bench/results.json (every figure, the data sets' facts, machine info) and bench/results.md (a table per
part), also printed; the exit status is 1 when a correctness check failed. Absolute numbers depend on the
machine and on what else runs on it (the load average before and after is recorded).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from bench.account_memory import measure as measure_accounts
from bench.correctness import compare, reference
from bench.datasets import Cached, DataSet, cached, create_topics, input_topics, load
from bench.growth import run_history
from bench.latency import difference, histogram_quantile, lag_buckets, offer
from bench.quix_peer import quix_peer
from bench.report import markdown
from bench.workers import (
    Deployment,
    Rate,
    WorkerRun,
    ceiling,
    faust_baseline,
    timed_run,
    wait_until,
)
from revpulse.local.broker import EmbeddedBroker
from revpulse.settings import Settings, Topics
from tests.support.reference import RefResult

PARTS = ("throughput", "long", "latency", "memory", "scale", "growth", "history")
PRESETS: dict[str, dict[str, Any]] = {
    "full": {
        "events": 1_000_000,
        "accounts": 100_000,
        "latency_rate": 20_000.0,
        "latency_seconds": 45.0,
        "latency_warmup": 5.0,
        "memory_accounts": 1_000_000,
        "growth": "100000,1000000,3000000",
        "history_accounts": 1_000,
        "history_days": "90,180,360,720",
        "faust_timeout": 240.0,
        "long_accounts": 2_500,
        "long_events": 977_000,
        "long_days": 456,
        "long_workers": "1,2,4",
    },
    "quick": {
        "events": 50_000,
        "accounts": 5_000,
        "latency_rate": 20_000.0,
        "latency_seconds": 12.0,
        "latency_warmup": 3.0,
        "memory_accounts": 20_000,
        "growth": "20000,50000",
        "history_accounts": 200,
        "history_days": "90,180",
        "faust_timeout": 30.0,
        "long_accounts": 300,
        "long_events": 60_000,
        "long_days": 456,
        "long_workers": "1,2",
    },
}


@dataclass
class Loaded:
    data: Cached
    bootstrap: str
    topics: Topics
    total: int


class Bench:
    def __init__(self, args: argparse.Namespace, root: Path) -> None:
        self.args = args
        self.root = root
        self.main = DataSet.synth(args.accounts, args.events, args.days)
        self.long = DataSet.synth(args.long_accounts, args.long_events, args.long_days)
        self._references: dict[str, RefResult] = {}
        self.results: dict[str, Any] = {"datasets": {}, "notes": []}
        self._runs = 0
        self._one_worker: WorkerRun | None = None

    # -------------------------------------------------------------------------------------------- plumbing

    def cached(self, dataset: DataSet) -> Cached:
        data = cached(dataset, self.args.cache_dir)
        if dataset.name not in self.results["datasets"]:
            self.results["datasets"][dataset.name] = data.meta
            print(_mix(data.meta), flush=True)
        return data

    @contextlib.contextmanager
    def loaded(self, dataset: DataSet) -> Iterator[Loaded]:
        """A fresh broker holding the data set on its input topics."""
        data = self.cached(dataset)
        with EmbeddedBroker() as broker:
            topics = input_topics("bench")
            started = time.perf_counter()
            total = asyncio.run(load(broker.bootstrap, data, topics))
            print(f"wrote {total:,} records of {dataset.name} in {time.perf_counter() - started:.1f}s", flush=True)
            yield Loaded(data, broker.bootstrap, topics, total)

    def deployment(self, bootstrap: str, topics: Topics, part: str, **env: str) -> Deployment:
        self._runs += 1
        return Deployment(bootstrap, topics, f"bench-{part}-{self._runs}", self.root, env)

    def workers_run(self, loaded: Loaded, part: str, workers: int, *, api: bool) -> WorkerRun:
        deployment = self.deployment(loaded.bootstrap, loaded.topics, part)
        run = timed_run(deployment, workers, loaded.total, api=api)
        print(f"revpulse ({workers} worker{'s' * (workers > 1)}): {run.rate.eps:>10,.0f} events/s", flush=True)
        return run

    def reference(self, dataset: DataSet) -> RefResult:
        if dataset.name not in self._references:
            print(f"computing the batch reference of {dataset.name} (tests/support/reference.py)…", flush=True)
            self._references[dataset.name] = reference(self.cached(dataset))
        return self._references[dataset.name]

    def check(self, run: WorkerRun, dataset: DataSet) -> dict[str, Any]:
        assert run.api is not None
        verdict = compare(run.api, self.reference(dataset))
        print(f"correctness: {'OK' if verdict['ok'] else 'MISMATCH'} over {verdict['series']:,} series", flush=True)
        return verdict

    # ---------------------------------------------------------------------------------------------- parts

    def one_worker(self, loaded: Loaded) -> WorkerRun:
        """The one-worker run on the main data set, shared by throughput, scale and growth."""
        if self._one_worker is None:
            self._one_worker = self.workers_run(loaded, "one", 1, api=True)
        return self._one_worker

    def throughput(self, loaded: Loaded) -> None:
        raw = self.measure_ceiling(loaded)
        broker_url = f"kafka://{loaded.bootstrap}"
        faust = faust_baseline(broker_url, loaded.topics, loaded.total, self.root, self.args.faust_timeout)
        print(f"plain Faust agent (one event at a time): {faust['events_per_second']:>10,} events/s", flush=True)
        ours = self.one_worker(loaded)
        self.results["throughput"] = self.against_ceiling(loaded, raw, ours) | {
            "faust_baseline": faust,
            "gain_over_faust": round(ours.rate.eps / max(faust["events_per_second"], 1), 2),
        }

    def long_history(self) -> None:
        """The realistic long-history set: the ceiling, the Quix Streams peer, `--long-workers` deployments of
        1, 2, … workers (each checked against the reference) and the in-process bound, as the throughput part,
        without the Faust baseline."""
        with self.loaded(self.long) as loaded:
            raw = self.measure_ceiling(loaded)
            peer = quix_peer(loaded.bootstrap, loaded.topics, loaded.total, self.args.cache_dir, 1800)
            print(f"peer (Quix Streams, one windowed aggregate): {peer.get('events_per_second', peer)} events/s")
            counts = sorted({int(count) for count in self.args.long_workers.split(",")})
            runs = [self.workers_run(loaded, f"long{count}", count, api=True) for count in counts]
            more = [run.as_dict() | {"correctness": self.check(run, self.long)} for run in runs[1:]]
            self.results["long"] = self.against_ceiling(loaded, raw, runs[0]) | {
                "quix_peer": peer,
                "more_workers": more,
            }

    def measure_ceiling(self, loaded: Loaded) -> Rate:
        raw = ceiling(loaded.bootstrap, loaded.topics, loaded.total)
        print(f"ceiling  (aiokafka getmany + orjson): {raw.eps:>10,.0f} events/s", flush=True)
        return raw

    def against_ceiling(self, loaded: Loaded, raw: Rate, ours: WorkerRun) -> dict[str, Any]:
        """One worker's run beside the ceiling and the in-process bound, its metrics checked."""
        bound = in_process(loaded.data.path)
        print(f"no Kafka, one process: {bound['pipeline']['events_per_second']:>10,} events/s", flush=True)
        return {
            "dataset": loaded.data.dataset.name,
            "ceiling": raw.as_dict(),
            "revpulse_1_worker": ours.as_dict(),
            "ratio_to_ceiling": round(ours.rate.eps / raw.eps, 3),
            "correctness": self.check(ours, loaded.data.dataset),
            "in_process": bound,
        }

    def scale(self, loaded: Loaded) -> None:
        one = self.one_worker(loaded)
        two = self.workers_run(loaded, "two", 2, api=True)
        self.results["scale"] = {
            "dataset": loaded.data.dataset.name,
            "1_worker": one.as_dict(),
            "2_workers": two.as_dict(),
            "speedup": round(two.rate.eps / one.rate.eps, 2),
            "correctness_2_workers": self.check(two, self.main),
        }

    def growth(self, main: Loaded | None) -> None:
        rows = []
        per_event = self.args.accounts / self.args.events
        for size in sorted(int(size) for size in self.args.growth.split(",")):
            dataset = DataSet.synth(max(1, round(size * per_event)), size, self.args.days)
            if main is not None and dataset == main.data.dataset:
                run = self.one_worker(main)
            else:
                with self.loaded(dataset) as loaded:
                    run = self.workers_run(loaded, "growth", 1, api=False)
            rows.append({"dataset": dataset.name, "size": size, "accounts": dataset.accounts, **run.as_dict()})
        self.results["growth"] = rows

    def latency(self) -> None:
        args = self.args
        data = self.cached(self.main)
        publish_interval = Settings().publish_interval
        with EmbeddedBroker() as broker:
            topics = input_topics("latency")
            asyncio.run(create_topics(broker.bootstrap, topics))
            deployment = self.deployment(broker.bootstrap, topics, "latency", REVPULSE_CLOCK="wall")
            try:
                [worker] = deployment.start(1, wait=True)
                before: dict[str, Any] = {}

                async def mark() -> None:
                    before["buckets"] = lag_buckets((await asyncio.to_thread(worker.get, "/metrics"))[1].decode())

                sent, seconds = asyncio.run(
                    offer(
                        broker.bootstrap,
                        topics,
                        data,
                        args.latency_rate,
                        args.latency_seconds,
                        (args.latency_warmup, mark),
                    )
                )
                stopped = time.monotonic()
                deployment.wait_counted(sent, timeout=600)
                drain = time.monotonic() - stopped

                def observed() -> list[tuple[float, float]]:
                    return lag_buckets(worker.get("/metrics")[1].decode())

                wait_until(lambda: observed()[-1][1] >= sent, "every event observed in the lag histogram", 120, 0.5)
                window = difference(observed(), before["buckets"])
            finally:
                deployment.stop()
        quantiles = {f"p{round(q * 100)}": histogram_quantile(q, window) for q in (0.5, 0.99)}
        self.results["latency"] = {
            "dataset": data.dataset.name,
            "target_rate": args.latency_rate,
            "offered_rate": round(sent / seconds),
            "events": sent,
            "seconds": round(seconds, 1),
            "warmup_seconds": args.latency_warmup,
            "observations": int(window[-1][1]),
            "drain_seconds": round(drain, 2),
            "publish_interval": publish_interval,
            "clock": "wall",
            "buckets": [[le, count] for le, count in window],
            **{name: quantile.as_dict() for name, quantile in quantiles.items()},
        }
        print(
            "latency: "
            + ", ".join(f"{name} {q.value:.3f}s in ({q.bucket[0]}, {q.bucket[1]}]" for name, q in quantiles.items()),
            flush=True,
        )

    def memory(self) -> None:
        args = self.args
        self.results["memory"] = measure_accounts(
            self.root,
            args.cache_dir,
            accounts=args.memory_accounts,
            traffic=args.memory_accounts // 5,
            sample=min(2_000, args.memory_accounts),
        )

    def history(self) -> None:
        args = self.args
        days = [int(span) for span in args.history_days.split(",")]
        part, datasets = run_history(
            args.history_accounts,
            days,
            args.cache_dir,
            self.root,
            snapshot_interval=args.snapshot_interval,
            sample_interval=args.sample_interval,
        )
        for name, meta in datasets.items():
            if name not in self.results["datasets"]:
                self.results["datasets"][name] = meta
                print(_mix(meta), flush=True)
        self.results["history"] = part

    def run(self, parts: set[str]) -> None:
        if parts & {"throughput", "scale", "growth"}:
            with self.loaded(self.main) as main:
                if "throughput" in parts:
                    self.throughput(main)
                if "scale" in parts:
                    self.scale(main)
                if "growth" in parts:
                    self.growth(main)
        if "long" in parts:
            self.long_history()
        if "latency" in parts:
            self.latency()
        if "memory" in parts:
            self.memory()
        if "history" in parts:
            self.history()
        self.results["notes"] += self.notes()

    def notes(self) -> list[str]:
        """What a reader of the figures should know about the data and the run."""
        notes = []
        meta = self.results["datasets"].get(self.main.name)
        if meta is not None:
            usage = meta["types"].get("product.usage", {"share": 0.0})["share"]
            if usage < 0.2 or meta["span_days"] < self.args.days * 0.9:
                notes.append(
                    f"main data set: {meta['events'] / self.args.accounts:.0f} events per base account is below the "
                    f"synthetic business's natural volume, so generate() stops early ({meta['span_days']} of "
                    f"{self.args.days} days) and product.usage is {usage:.1%}: the mix is account life-cycle events "
                    "(onboarding, funnel, billing). A usage-heavy mix needs ≈ 50+ events per base account "
                    "(≈ 70% product.usage at 50 per account, e.g. --accounts 20000 for 1M events)."
                )
        latency = self.results.get("latency")
        if latency is not None and latency["drain_seconds"] > 2 * latency["publish_interval"] + 1:
            notes.append(
                f"latency: the worker did not keep up with {latency['target_rate']:,.0f} events/s (it needed "
                f"{latency['drain_seconds']:.0f} s after the producer stopped): the quantiles include a growing "
                "backlog, not a steady state."
            )
        return notes


def in_process(data: Path) -> dict[str, Any]:
    """`bench.inprocess` over the data set, in a process of its own (its heap and collector settings too)."""
    command = [sys.executable, "-m", "bench.inprocess", str(data)]
    return orjson.loads(subprocess.run(command, check=True, capture_output=True).stdout)  # type: ignore[no-any-return]


def _mix(meta: dict[str, Any]) -> str:
    top = ", ".join(f"{kind} {info['share']:.1%}" for kind, info in meta["types"].items())
    return (
        f"data set {meta['name']}: {meta['events']:,} events, {meta['distinct_accounts']:,} accounts, "
        f"{meta['span_days']} days; {top}"
    )


def machine(load: str) -> dict[str, Any]:
    commit = subprocess.run(
        ["git", "describe", "--always", "--dirty"], capture_output=True, text=True, check=False
    ).stdout.strip()
    return {
        "cpus": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "commit": commit or "unknown",
        "load_before": load,
    }


def _load_average() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small data sets and short runs: a smoke test")
    parser.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated, of {', '.join(PARTS)}")
    parser.add_argument("--events", type=int, help="events of the main data set (1M; quick 50k)")
    parser.add_argument("--accounts", type=int, help="base accounts of the main data set (100k; quick 5k)")
    parser.add_argument("--days", type=int, default=90, help="days of the main data set (90)")
    parser.add_argument("--latency-rate", type=float, help="offered events/s of the latency part (20k)")
    parser.add_argument("--latency-seconds", type=float, help="how long the load is offered (45; quick 12)")
    parser.add_argument("--latency-warmup", type=float, help="seconds left out of the quantiles (5; quick 3)")
    parser.add_argument("--memory-accounts", type=int, help="accounts of the memory part (1M; quick 20k)")
    parser.add_argument(
        "--snapshot-interval", type=float, default=5.0, help="of the memory and history parts' workers (5 s)"
    )
    parser.add_argument("--growth", help="event counts of the growth part (100000,1000000,3000000)")
    parser.add_argument("--history-accounts", type=int, help="fixed accounts of the history part (1000; quick 200)")
    parser.add_argument("--history-days", help="spans of the history part (90,180,360,720; quick 90,180)")
    parser.add_argument(
        "--sample-interval", type=float, default=0.2, help="PSS sampling of the history part, seconds (0.2)"
    )
    parser.add_argument("--long-accounts", type=int, help="base accounts of the long part (2,500; quick 300)")
    parser.add_argument("--long-events", type=int, help="events of the long part (977k; quick 60k)")
    parser.add_argument("--long-days", type=int, help="days of the long part (456)")
    parser.add_argument("--long-workers", help="deployments of the long part, in workers (1,2,4; quick 1,2)")
    parser.add_argument("--faust-timeout", type=float, help="longest Faust baseline run, seconds (240; quick 30)")
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=Path(tempfile.gettempdir()) / "revpulse-bench-cache",
        help="where generated data sets are kept (JSONL) for later runs",
    )
    parser.add_argument("--output", type=Path, default=Path("bench/results.json"), help="and .md beside it")
    args = parser.parse_args()
    preset = PRESETS["quick" if args.quick else "full"]
    for name, value in preset.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    unknown = set(args.parts.split(",")) - set(PARTS)
    if unknown:
        parser.error(f"unknown parts: {', '.join(sorted(unknown))}")
    return args


def main() -> None:
    args = parse_args()
    started = datetime.datetime.now(datetime.UTC)
    info = machine(_load_average())
    with tempfile.TemporaryDirectory(prefix="revpulse-bench-") as root:
        bench = Bench(args, Path(root))
        bench.run(set(args.parts.split(",")))
    info["load_after"] = _load_average()
    results = {
        "started": started.isoformat(timespec="seconds"),
        "preset": "quick" if args.quick else "full",
        "wall_seconds": round((datetime.datetime.now(datetime.UTC) - started).total_seconds()),
        "machine": info,
        "arguments": {key: str(value) for key, value in vars(args).items()},
        **bench.results,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2))
    text = markdown(results)
    args.output.with_suffix(".md").write_text(text)
    print("\n" + text, flush=True)
    long = results.get("long", {})
    checks = [
        results.get("throughput", {}).get("correctness"),
        results.get("scale", {}).get("correctness_2_workers"),
        long.get("correctness"),
        *(run["correctness"] for run in long.get("more_workers", ())),
    ]
    if any(check is not None and not check["ok"] for check in checks):
        raise SystemExit("the worker's final metrics differ from tests/support/reference.py (see above)")


if __name__ == "__main__":
    main()
