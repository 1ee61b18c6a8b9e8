"""Growth with history (issue 13, item 3): the same accounts for 90, 180, 360 and 720 days, one worker each.

`python -m bench.growth [--accounts 1000] [--days 90,180,360,720]`, or the `history` part of `make bench`
(`python -m bench.run --parts history [--history-accounts N --history-days …]`).

The data (`bench.fixed_book`): a fixed account base, all there on day 0 and none added after, with ≥ 2
`product.usage` events per account a day, renewals (monthly for most), repricing, mid-term updates, churn and
comebacks, segment changes, user signups, daily marketing spend, late deliveries and duplicates. Each span is
generated (once, cached as JSONL like every bench data set), written to a fresh embedded broker and read from the
earliest offset by a fresh `revpulse worker` (REVPULSE_CLOCK=event, snapshots every `--snapshot-interval` s so
that every span snapshots often while it is read: a shard's first snapshot by a forked copy, the later ones in the
worker while a shard takes at most 50 ms to encode). Per span:

* **peak memory**: the largest Σ PSS over the worker and its children (the forked snapshot copies), sampled every
  `--sample-interval` s from /proc/<pid>/smaps_rollup (`bench.procmem`): shared pages count once, pages copied
  while a copy runs twice. Also the state's part: the peak minus the PSS of an idle worker (measured once, on an
  empty broker): with few accounts the idle worker is most of the peak, and this is the figure that moves.
* **snapshot bytes per account**: the data dir's `shard-N.state` files once the final snapshots are written,
  over the accounts; beside it, what the snapshot topic holds in all (every snapshot written during the run: the
  embedded broker compacts nothing) and the partials topic.
* **events/s**: the events after the router group's first commit over the time until `/healthz` counts every
  event (as the throughput part); and over the last quarter of the events only (the cost of an event late in
  the history).
* **restart → ready**: the drained worker is stopped (SIGTERM) and, once the broker has expired its group
  members (a session timeout later), a new one started on the same data dir; the seconds until `/readyz` answers
  200, and the peak PSS meanwhile. Started at once, the new worker's joins wait a random part of that timeout
  for the old members (9 to 18 s seen on the same state): noise that hides what restoring the state costs.

Then the ratios to the shortest span and the issue's targets at the longest: memory and snapshot size ≤ 1.25×,
events/s ≥ 0.8×, restart time flat (taken as ≤ 1.25×).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from bench.datasets import Cached, DataSet, cached, create_topics, input_topics, load
from bench.procmem import GroupSampler
from bench.report import table
from bench.topicmeter import topic_sizes
from bench.workers import Deployment, Rate, wait_for_snapshots
from revpulse.local.broker import EmbeddedBroker
from revpulse.settings import Settings
from revpulse.topics import partials_topic, snapshot_topic

DAYS = (90, 180, 360, 720)
ACCOUNTS = 1_000
MIB = 2**20


@dataclass(frozen=True)
class Target:
    figure: str  # key of a row
    label: str
    most: float | None = None  # the ratio at the longest span must be at most this
    least: float | None = None  # … or at least this

    def met(self, ratio: float) -> bool:
        return (self.most is None or ratio <= self.most) and (self.least is None or ratio >= self.least)

    @property
    def bound(self) -> str:
        return f"≤ {self.most:g}×" if self.most is not None else f"≥ {self.least:g}×"


TARGETS = (
    Target("peak_pss_mib", "peak memory (PSS, copies included)", most=1.25),
    Target("snapshot_bytes_per_account", "snapshot bytes per account", most=1.25),
    Target("events_per_second", "events/s", least=0.8),
    Target("restart_seconds", "restart → ready (flat)", most=1.25),
)
# Ratios shown beside the targets: the state's own memory, the cost of a late event.
RATIO_FIGURES = (*(t.figure for t in TARGETS), "state_pss_mib", "late_events_per_second")


# ----------------------------------------------------------------------------------------------- pure parts


def ratio(value: float, base: float) -> float:
    return value / base if base else float("inf")


def ratios(rows: Sequence[dict[str, Any]], figures: Sequence[str] = RATIO_FIGURES) -> list[dict[str, float]]:
    """Each row's figures over the first row's (the shortest span)."""
    base = rows[0]
    return [{figure: ratio(row[figure], base[figure]) for figure in figures} for row in rows]


def verdicts(rows: Sequence[dict[str, Any]], targets: Sequence[Target] = TARGETS) -> list[dict[str, Any]]:
    """The longest span against the shortest, per target."""
    first, last = rows[0], rows[-1]
    out = []
    for target in targets:
        value = ratio(last[target.figure], first[target.figure])
        out.append(
            {
                "figure": target.figure,
                "label": target.label,
                "first": first[target.figure],
                "last": last[target.figure],
                "ratio": round(value, 3),
                "target": target.bound,
                "met": target.met(value),
            }
        )
    return out


def median_row(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One span's runs as one row: the median of every number (nested ones too), the rest from the first run;
    and each run's target figures under "each", so the spread shows beside the median."""

    def merge(values: Sequence[Any]) -> Any:
        first = values[0]
        if isinstance(first, dict):
            return {key: merge([value[key] for value in values]) for key in first}
        if isinstance(first, int | float) and not isinstance(first, bool):
            middle = statistics.median(values)
            return round(middle) if all(isinstance(v, int) for v in values) else round(middle, 2)
        return first

    row: dict[str, Any] = merge(runs)
    row["runs"] = len(runs)
    row["each"] = {t.figure: [run[t.figure] for run in runs] for t in TARGETS}
    return row


def rate_after(series: Sequence[tuple[float, int]], fraction: float) -> float:
    """Events/s over the events after the first `fraction` of them: from the first poll that counted at least
    `fraction` × the final count to the last poll. `series`: (time, events counted) in time order."""
    if len(series) < 2:
        return 0.0
    total = series[-1][1]
    start = next((t, n) for t, n in series if n >= fraction * total)
    end = series[-1]
    return (end[1] - start[1]) / (end[0] - start[0]) if end[0] > start[0] else 0.0


def markdown(part: dict[str, Any]) -> str:
    """The per-span table, the ratios to the shortest span, and the targets."""
    rows = part["rows"]
    figures = table(
        (
            "days",
            "events",
            "peak PSS MiB (copies incl.)",
            "peak − idle MiB",
            "worker alone MiB",
            "snapshot B/account",
            "snapshot topic MB",
            "partials topic MB",
            "events/s",
            "events/s, last quarter",
            "restart → ready s",
        ),
        [
            (
                r["days"],
                r["events"],
                r["peak_pss_mib"],
                r["state_pss_mib"],
                r["peak_worker_pss_mib"],
                r["snapshot_bytes_per_account"],
                round(r["snapshot_topic"]["bytes"] / 1e6, 1),
                round(r["partials_topic"]["bytes"] / 1e6, 1),
                r["events_per_second"],
                r["late_events_per_second"],
                r["restart_seconds"],
            )
            for r in rows
        ],
    )
    relative = table(
        ("days", "peak PSS", "peak − idle", "snapshot B/account", "events/s", "events/s, last quarter", "restart"),
        [
            (
                r["days"],
                *(
                    f"{x[f]:.2f}×"
                    for f in (
                        "peak_pss_mib",
                        "state_pss_mib",
                        "snapshot_bytes_per_account",
                        "events_per_second",
                        "late_events_per_second",
                        "restart_seconds",
                    )
                ),
            )
            for r, x in zip(rows, ratios(rows), strict=True)
        ],
    )
    checks = table(
        ("at the longest span vs the shortest", "ratio", "target", "met"),
        [(v["label"], f"{v['ratio']:.2f}×", v["target"], "yes" if v["met"] else "**no**") for v in part["verdicts"]],
    )
    return (
        f"### Growth with history — the same {part['accounts']:,} accounts, 1 worker\n\n"
        f"{figures}\n\nRatios to {rows[0]['days']} days:\n\n{relative}\n\n{checks}\n\n"
        f"Idle worker: {part['idle_pss_mib']:,.0f} MiB PSS. Snapshots every {part['snapshot_interval']:g} s; PSS "
        f"sampled every {part['sample_interval']:g} s."
        + (f" Medians of {repeat} runs per span (spans in turn)." if (repeat := part.get("repeat", 1)) > 1 else "")
    )


# ------------------------------------------------------------------------------------------------- running


def idle_pss(root: Path, sample_interval: float, seconds: float = 3.0) -> int:
    """Peak Σ PSS of a ready worker with nothing to read (its topics empty)."""
    with EmbeddedBroker() as broker:
        topics = input_topics("idle")
        asyncio.run(create_topics(broker.bootstrap, topics))
        deployment = Deployment(broker.bootstrap, topics, "history-idle", root)
        try:
            [worker] = deployment.start(1, wait=True)
            with GroupSampler(worker.process.pid, sample_interval) as sampler:
                time.sleep(seconds)
            return sampler.peak_pss
        finally:
            deployment.stop()


def poll_counted(deployment: Deployment, total: int, timeout: float, poll: float = 0.1) -> list[tuple[float, int]]:
    """(time, events counted) until every event is counted."""
    series: list[tuple[float, int]] = []
    deadline = time.monotonic() + timeout
    while not series or series[-1][1] < total:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{deployment.app_id}: {total:,} events not counted within {timeout:.0f}s")
        series.append((time.perf_counter(), deployment.events_counted()))
        time.sleep(poll)
    return series


def measure(
    data: Cached, accounts: int, root: Path, *, idle: int, snapshot_interval: float, sample_interval: float
) -> dict[str, Any]:
    days = data.dataset.days
    with EmbeddedBroker() as broker:
        topics = input_topics("history")
        started = time.perf_counter()
        total = asyncio.run(load(broker.bootstrap, data, topics))
        print(f"{days} days: wrote {total:,} records in {time.perf_counter() - started:.1f}s", flush=True)
        env = {"REVPULSE_SNAPSHOT_INTERVAL": f"{snapshot_interval:g}s"}
        deployment = Deployment(broker.bootstrap, topics, f"history-d{days}", root, env)
        try:
            [worker] = deployment.start(1, wait=False)
            with GroupSampler(worker.process.pid, sample_interval) as sampler:
                first = deployment.wait_first_commit()
                started = time.perf_counter()
                series = poll_counted(deployment, total, timeout=3600)
                rate = Rate(total - first, series[-1][0] - started)
                late = rate_after(series, 0.75)
                settings = worker.settings
                snapshot_bytes = wait_for_snapshots(
                    settings.data_dir / settings.app_id, settings.shards, snapshot_interval
                )
            app = Settings(app_id=deployment.app_id)
            sizes = asyncio.run(topic_sizes(broker.bootstrap, [snapshot_topic(app), partials_topic(app)]))
            deployment.workers.stop("w1")
            time.sleep(settings.session_timeout + 1)
            restarted = time.monotonic()
            worker = deployment.workers.start("w1", wait=False)
            with GroupSampler(worker.process.pid, sample_interval) as restart_sampler:
                worker.wait_ready(timeout=600)
                restart = time.monotonic() - restarted
            counted = deployment.events_counted()
            if counted != total:
                raise RuntimeError(f"{days} days: the restarted worker counts {counted:,} events of {total:,}")
        finally:
            deployment.stop()
    row = {
        "days": days,
        "dataset": data.dataset.name,
        "events": total,
        "accounts": accounts,
        "distinct_accounts": data.meta["distinct_accounts"],
        "peak_pss_mib": round(sampler.peak_pss / MIB, 1),
        "state_pss_mib": round((sampler.peak_pss - idle) / MIB, 1),
        "peak_worker_pss_mib": round(sampler.peak_root_pss / MIB, 1),
        "most_processes": sampler.most_processes,
        "samples": len(sampler.samples),
        "snapshot_bytes": snapshot_bytes,
        "snapshot_bytes_per_account": round(snapshot_bytes / accounts),
        "snapshot_topic": sizes[snapshot_topic(app)].as_dict(),
        "partials_topic": sizes[partials_topic(app)].as_dict(),
        "events_per_second": round(rate.eps),
        "late_events_per_second": round(late),
        "seconds": round(rate.seconds, 2),
        "restart_seconds": round(restart, 2),
        "restart_peak_pss_mib": round(restart_sampler.peak_pss / MIB, 1),
    }
    print(
        f"{days} days: {total:,} events at {row['events_per_second']:,}/s (last quarter "
        f"{row['late_events_per_second']:,}/s); peak PSS {row['peak_pss_mib']:,} MiB (up to "
        f"{row['most_processes']} processes); snapshots {row['snapshot_bytes_per_account']:,} B/account; "
        f"restart → ready {row['restart_seconds']} s",
        flush=True,
    )
    return row


def run_history(
    accounts: int,
    days: Sequence[int],
    cache_dir: Path,
    root: Path,
    *,
    snapshot_interval: float = 5.0,
    sample_interval: float = 0.2,
    repeat: int = 1,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The part's results, and the facts of its data sets (by name). With `repeat` > 1 every span is read that
    many times, the spans taken in turn (so that a slow spell of the machine does not fall on one span), and
    each row is the median of its runs (`median_row`)."""
    datasets = {}
    spans = []
    for span in sorted(days):
        data = cached(DataSet.fixed(accounts, span), cache_dir)
        datasets[data.dataset.name] = data.meta
        spans.append(data)
    idle = idle_pss(root, sample_interval)
    print(f"idle worker: {idle / MIB:,.0f} MiB PSS", flush=True)
    runs: list[list[dict[str, Any]]] = [[] for _ in spans]
    for index in range(repeat):
        # A data dir of its own per run: on the last run's dir, a worker would restore its state and count
        # every event at once.
        run_root = root / f"run-{index + 1}"
        run_root.mkdir(parents=True, exist_ok=True)
        for data, span_runs in zip(spans, runs, strict=True):
            span_runs.append(
                measure(
                    data,
                    accounts,
                    run_root,
                    idle=idle,
                    snapshot_interval=snapshot_interval,
                    sample_interval=sample_interval,
                )
            )
    rows = [median_row(span_runs) for span_runs in runs]
    part = {
        "accounts": accounts,
        "repeat": repeat,
        "idle_pss_mib": round(idle / MIB, 1),
        "snapshot_interval": snapshot_interval,
        "sample_interval": sample_interval,
        "rows": rows,
        "ratios": [{k: round(v, 3) for k, v in r.items()} for r in ratios(rows)],
        "verdicts": verdicts(rows),
    }
    return part, datasets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--accounts", type=int, default=ACCOUNTS, help=f"the fixed account base ({ACCOUNTS:,})")
    parser.add_argument("--days", default=",".join(map(str, DAYS)), help="the spans, comma-separated")
    parser.add_argument("--snapshot-interval", type=float, default=5.0, help="the worker's, seconds (5)")
    parser.add_argument("--sample-interval", type=float, default=0.2, help="PSS sampling, seconds (0.2)")
    parser.add_argument("--repeat", type=int, default=1, help="runs per span, the median reported (1)")
    parser.add_argument("--cache-dir", type=Path, default=Path(tempfile.gettempdir()) / "revpulse-bench-cache")
    parser.add_argument("--output", type=Path, default=Path("bench/growth.json"), help="and .md beside it")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="revpulse-history-") as root:
        part, datasets = run_history(
            args.accounts,
            [int(d) for d in args.days.split(",")],
            args.cache_dir,
            Path(root),
            snapshot_interval=args.snapshot_interval,
            sample_interval=args.sample_interval,
            repeat=args.repeat,
        )
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_bytes(orjson.dumps(part | {"datasets": datasets}, option=orjson.OPT_INDENT_2))
    text = markdown(part)
    args.output.with_suffix(".md").write_text(text + "\n")
    print("\n" + text, flush=True)


if __name__ == "__main__":
    main()
