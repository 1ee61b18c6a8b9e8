"""Does a long-running demo stay flat? (issue 13, item 5): `python -m bench.demo_flat [--minutes 30]`.

Runs `revpulse demo --duration <minutes>` (the embedded broker, one worker, the synthetic business: a 45-day
backfill, then live traffic at `--rate` events/s) and every `--interval` seconds samples:

* the broker's and the worker's memory: RSS and PSS from /proc/<pid>/smaps_rollup; for the worker, also Σ PSS over
  it and its children (its forked snapshot copies), as `bench.procmem` measures it: a sample taken while a copy
  runs is higher by what the copy costs, so that figure's slope depends on which samples caught one;
* every `--topic-interval` seconds, by a task of its own, every topic's records and payload bytes (key + value),
  read from the broker (`bench.topicmeter`: the embedded broker compacts nothing, so this is what it holds): the
  inputs, the metric and dead-letter topics, and RevPulse's internal ones (`<app id>-shards`, `-partials`,
  `-snapshots`). Apart and seldom, because a read loads the broker: read every 10 s, it took minutes once the
  log was long, and held the memory samples back with it;
* the events the worker counted (`/healthz`), and the CPU time the broker and the worker used.

Then per figure: the value at the end of the warm-up (`--warmup` minutes: the backfill and the first snapshots),
at the end, and the slope after the warm-up (least squares, per hour), also over the last half of the run
alone: flat means a slope near zero, whatever the level. Writes `--output` (JSON, every sample) and prints the
tables.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

from bench.procmem import children, cpu_seconds, memory, sample_group
from bench.report import table
from bench.topicmeter import TopicMeter
from revpulse.local.broker import free_port
from revpulse.settings import Settings
from revpulse.topics import partials_topic, shard_topic, snapshot_topic

MIB = 2**20
HOUR = 3600.0
MEMORY_FIGURES = (
    ("broker_rss", "broker RSS"),
    ("broker_pss", "broker PSS"),
    ("worker_rss", "worker RSS"),
    ("worker_own_pss", "worker PSS (the process alone)"),
    ("worker_pss", "worker PSS (copies incl.)"),
)


# ----------------------------------------------------------------------------------------------- pure parts


def slope(points: Sequence[tuple[float, float]]) -> float:
    """Least-squares slope of (x, y) points; 0 with fewer than two distinct x."""
    n = len(points)
    if n < 2:
        return 0.0
    mean_x = sum(x for x, _ in points) / n
    mean_y = sum(y for _, y in points) / n
    sxx = sum((x - mean_x) ** 2 for x, _ in points)
    if sxx == 0:
        return 0.0
    return sum((x - mean_x) * (y - mean_y) for x, y in points) / sxx


def trend(samples: Sequence[dict[str, Any]], key: str, warmup: float) -> dict[str, float]:
    """`key` of the samples (each with `t`, seconds since the start): at the warm-up's end, at the end, the most,
    and the slope per hour after the warm-up and over the last half of the run."""
    after = [(s["t"], float(s[key])) for s in samples if s["t"] >= warmup]
    if not after:
        after = [(s["t"], float(s[key])) for s in samples[-1:]]
    end = samples[-1]["t"]
    late = [(t, y) for t, y in after if t >= end / 2] if end / 2 >= warmup else after
    return {
        "at_warmup_end": after[0][1],
        "at_end": after[-1][1],
        "peak": max(float(s[key]) for s in samples),
        "per_hour": slope(after) * HOUR,
        "late_per_hour": slope(late) * HOUR,
    }


def process_of(cmdline: Sequence[str], kind: str) -> bool:
    """Whether a command line is the demo's broker (`kind` "broker") or its worker ("worker")."""
    if kind == "broker":
        return "--listener-url" in cmdline and "broker" in cmdline
    return "revpulse.cli" in cmdline and "worker" in cmdline


def listener(cmdline: Sequence[str]) -> str:
    """`host:port` of the broker's `--listener-url tcp://host:port`."""
    return cmdline[cmdline.index("--listener-url") + 1].removeprefix("tcp://")


def memory_table(trends: dict[str, dict[str, float]]) -> str:
    return table(
        ("process", "after warm-up MiB", "at the end MiB", "peak MiB", "slope MiB/h", "last half MiB/h"),
        [
            (
                label,
                round(trends[key]["at_warmup_end"] / MIB, 1),
                round(trends[key]["at_end"] / MIB, 1),
                round(trends[key]["peak"] / MIB, 1),
                round(trends[key]["per_hour"] / MIB, 1),
                round(trends[key]["late_per_hour"] / MIB, 1),
            )
            for key, label in MEMORY_FIGURES
        ],
    )


def topic_table(topics: dict[str, dict[str, Any]]) -> str:
    return table(
        ("topic", "role", "records", "MB at the end", "MB/h after warm-up", "records/h after warm-up"),
        [
            (
                name,
                info["role"],
                info["records"]["at_end"],
                round(info["bytes"]["at_end"] / 1e6, 2),
                round(info["bytes"]["per_hour"] / 1e6, 2),
                round(info["records"]["per_hour"]),
            )
            for name, info in topics.items()
        ],
    )


def markdown(result: dict[str, Any]) -> str:
    cpu = result["cpu"]
    return (
        f"### Long-running demo — {result['minutes']:g} minutes at {result['rate']:g} events/s, warm-up "
        f"{result['warmup_minutes']:g} min, sampled every {result['interval']:g} s\n\n"
        f"{memory_table(result['memory'])}\n\n{topic_table(result['topics'])}\n\n"
        f"CPU after the warm-up (cores; over the last half): broker {cpu['broker_cpu']['per_hour'] / HOUR:.2f} "
        f"({cpu['broker_cpu']['late_per_hour'] / HOUR:.2f}), worker {cpu['worker_cpu']['per_hour'] / HOUR:.2f} "
        f"({cpu['worker_cpu']['late_per_hour'] / HOUR:.2f}).\n"
        f"Topics read {len(result['topic_reads'])} times; the longest read took "
        f"{max((s for _, s in result['topic_reads']), default=0.0):,.1f} s.\n"
        f"Events counted by the worker: {result['events_at_warmup_end']:,} after the warm-up, "
        f"{result['events_at_end']:,} at the end ({result['events_per_second_after_warmup']:,.0f}/s after it)."
    )


# ------------------------------------------------------------------------------------------------- running


def cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def find(parent: int, kind: str, timeout: float = 120) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for pid in children(parent):
            if process_of(cmdline(pid), kind):
                return pid
        time.sleep(0.2)
    raise TimeoutError(f"no {kind} process under the demo ({parent}) within {timeout:.0f}s")


def events_counted(port: int) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as response:
            return int(orjson.loads(response.read())["events"])
    except (OSError, ValueError, KeyError):
        return -1


def topic_roles(settings: Settings) -> dict[str, str]:
    topics = settings.topics
    roles = {name: "input" for name in topics.inputs}
    roles[topics.metrics] = "metrics (compacted on Kafka)"
    roles[topics.deadletter] = "dead letters"
    roles[shard_topic(settings)] = "internal: routed items"
    roles[partials_topic(settings)] = "internal: partials (compacted on Kafka)"
    roles[snapshot_topic(settings)] = "internal: snapshots (compacted on Kafka)"
    return roles


async def sample(
    demo: subprocess.Popen[bytes],
    web_port: int,
    settings: Settings,
    minutes: float,
    interval: float,
    topic_interval: float,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Memory and events every `interval` seconds; topic sizes, read by a task of their own, every
    `topic_interval`: reading the topics loads the broker and can take minutes on a long embedded log."""
    broker = await asyncio.to_thread(find, demo.pid, "broker")
    bootstrap = listener(cmdline(broker))
    worker = await asyncio.to_thread(find, demo.pid, "worker")
    roles = topic_roles(settings)
    samples: list[dict[str, Any]] = []
    topic_samples: list[dict[str, Any]] = []
    started = time.monotonic()
    stop_at = started + minutes * 60 - interval / 2  # before the demo stops its worker
    async with TopicMeter(bootstrap, roles) as meter:
        reading = asyncio.create_task(read_topics(meter, started, stop_at, topic_interval, topic_samples))
        try:
            while time.monotonic() < stop_at and demo.poll() is None:
                tick = time.monotonic()
                group = sample_group(worker)
                broker_memory = memory(broker)
                samples.append(
                    {
                        "t": round(tick - started, 2),
                        "broker_rss": broker_memory.get("Rss", 0),
                        "broker_pss": broker_memory.get("Pss", 0),
                        "worker_rss": group.root_rss,
                        "worker_own_pss": group.root_pss,
                        "worker_pss": group.pss,
                        "worker_processes": group.processes,
                        "broker_cpu": cpu_seconds(broker),
                        "worker_cpu": cpu_seconds(worker),
                        "events": await asyncio.to_thread(events_counted, web_port),
                    }
                )
                last = samples[-1]
                print(
                    f"t={last['t']:7.0f}s broker RSS {last['broker_rss'] / MIB:7.1f} MiB, worker PSS "
                    f"{last['worker_pss'] / MIB:7.1f} MiB, events {last['events']:,}",
                    flush=True,
                )
                await asyncio.sleep(max(0.0, interval - (time.monotonic() - tick)))
        finally:
            reading.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reading
    return samples, topic_samples


async def read_topics(
    meter: TopicMeter, started: float, stop_at: float, every: float, out: list[dict[str, Any]]
) -> None:
    """Append each completed read of the topics to `out`, with when it started and how long it took."""
    while time.monotonic() < stop_at:
        tick = time.monotonic()
        try:
            sizes = await meter.catch_up(timeout=max(every, stop_at - tick))
        except TimeoutError as exc:
            print(f"topics: {exc}", flush=True)
            continue
        read = time.monotonic() - tick
        out.append(
            {
                "t": round(tick - started, 2),
                "read_seconds": round(read, 2),
                "topics": {name: size.as_dict() for name, size in sizes.items()},
            }
        )
        print(
            f"topics at t={tick - started:7.0f}s: {sum(s.bytes for s in sizes.values()) / 1e6:,.1f} MB, "
            f"read in {read:.1f} s",
            flush=True,
        )
        await asyncio.sleep(max(0.0, every - read))


def summarize(
    samples: list[dict[str, Any]],
    topic_samples: list[dict[str, Any]],
    roles: dict[str, str],
    *,
    minutes: float,
    warmup: float,
    rate: float,
    interval: float,
) -> dict[str, Any]:
    seconds = warmup * 60
    flat = [
        {"t": s["t"]} | {f"{name}:{k}": v for name, size in s["topics"].items() for k, v in size.items()}
        for s in topic_samples
    ]
    after = [s for s in samples if s["t"] >= seconds] or samples[-1:]
    span = after[-1]["t"] - after[0]["t"]
    return {
        "minutes": minutes,
        "warmup_minutes": warmup,
        "rate": rate,
        "interval": interval,
        "memory": {key: trend(samples, key, seconds) for key, _ in MEMORY_FIGURES},
        # cores: CPU seconds per second
        "cpu": {key: trend(samples, key, seconds) for key in ("broker_cpu", "worker_cpu")},
        "topics": {
            name: {
                "role": role,
                "records": trend(flat, f"{name}:records", seconds),
                "bytes": trend(flat, f"{name}:bytes", seconds),
            }
            for name, role in roles.items()
        }
        if flat
        else {},
        "topic_reads": [(s["t"], s["read_seconds"]) for s in topic_samples],
        "events_at_warmup_end": after[0]["events"],
        "events_at_end": after[-1]["events"],
        "events_per_second_after_warmup": (after[-1]["events"] - after[0]["events"]) / span if span else 0.0,
        "samples": samples,
        "topic_samples": topic_samples,
    }


def stop(demo: subprocess.Popen[bytes]) -> None:
    """Ctrl-C for the demo (it stops its worker and its broker), then SIGKILL if it is still there."""
    if demo.poll() is None:
        worker = next((pid for pid in children(demo.pid) if process_of(cmdline(pid), "worker")), None)
        demo.send_signal(signal.SIGINT)
        try:
            demo.wait(30)
        except subprocess.TimeoutExpired:
            if worker is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(worker, signal.SIGKILL)
            demo.kill()
            demo.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=30.0, help="how long the demo runs (30)")
    parser.add_argument("--warmup", type=float, help="minutes left out of the slopes (a sixth of the run, ≥ 2)")
    parser.add_argument("--interval", type=float, default=10.0, help="seconds between memory samples (10)")
    parser.add_argument("--topic-interval", type=float, default=300.0, help="seconds between reads of the topics (300)")
    parser.add_argument("--rate", type=float, default=200.0, help="the demo's live events/s (200, its default)")
    parser.add_argument("--output", type=Path, default=Path("bench/demo_flat.json"), help="and .md beside it")
    args = parser.parse_args()
    warmup = args.warmup if args.warmup is not None else max(2.0, args.minutes / 6)
    web_port = free_port()
    env = os.environ | {"REVPULSE_WEB_PORT": str(web_port)}
    settings = Settings.from_env(env)
    log = args.output.with_suffix(".log")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "revpulse.cli", "demo", "--duration", f"{args.minutes * 60:g}"]
    with log.open("wb") as handle:
        demo = subprocess.Popen([*command, "--rate", f"{args.rate:g}"], env=env, stdout=handle, stderr=handle)
    try:
        samples, topic_samples = asyncio.run(
            sample(demo, web_port, settings, args.minutes, args.interval, args.topic_interval)
        )
    finally:
        stop(demo)
    result = summarize(
        samples,
        topic_samples,
        topic_roles(settings),
        minutes=args.minutes,
        warmup=warmup,
        rate=args.rate,
        interval=args.interval,
    )
    args.output.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    text = markdown(result)
    args.output.with_suffix(".md").write_text(text + "\n")
    print("\n" + text, flush=True)


if __name__ == "__main__":
    main()
