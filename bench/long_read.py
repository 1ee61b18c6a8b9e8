"""A deployment's read of the long history, with settings of its own: `python -m bench.long_read [--workers 2]
[--env REVPULSE_STANDBY_REPLICAS=1] [--env REVPULSE_SHARDS=4 …]`.

A fresh embedded broker is loaded with the realistic long-history set (`bench.run`'s long part, cached like
every bench data set); a deployment of `--workers` workers with the `--env` settings reads it from the earliest
offset. Prints the events/s (from the router group's first commit until every event is counted, as `bench.run`
measures) and each worker's peak RSS. With standby replicas, also how far behind the replicas were when the
owners were done, and how long after that they had counted what their owners did (`/healthz`
`standby_events`: each worker follows every shard it does not own, so once current the replicas of n workers
count n − 1 times every event). For an A/B of settings, run each in turn on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

import orjson

from bench.datasets import DataSet, cached, input_topics, load
from bench.workers import Deployment, wait_until
from revpulse.local.broker import EmbeddedBroker

MIB = 2**20


def standby_events(deployment: Deployment) -> int:
    """Σ `/healthz` standby_events over the workers."""
    return sum(int(orjson.loads(worker.get("/healthz")[1])["standby_events"]) for worker in deployment.running)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=2, help="workers of the deployment (2)")
    parser.add_argument("--env", action="append", default=[], help="a setting NAME=VALUE (repeatable)")
    parser.add_argument("--accounts", type=int, default=2_500, help="base accounts of the long set (2,500)")
    parser.add_argument("--events", type=int, default=977_000, help="events of the long set (977k)")
    parser.add_argument("--days", type=int, default=456, help="days of the long set (456)")
    parser.add_argument("--timeout", type=float, default=1800, help="longest read and catch-up, seconds")
    parser.add_argument("--cache-dir", type=Path, default=Path(tempfile.gettempdir()) / "revpulse-bench-cache")
    args = parser.parse_args()
    data = cached(DataSet.synth(args.accounts, args.events, args.days), args.cache_dir)
    root = Path(tempfile.mkdtemp(prefix="bench-long-read-"))
    with EmbeddedBroker() as broker:
        topics = input_topics("long")
        total = asyncio.run(load(broker.bootstrap, data, topics))
        env = dict(setting.split("=", 1) for setting in args.env)
        app_id = f"long-read-{int(time.time())}"
        deployment = Deployment(broker.bootstrap, topics, app_id, root, env)
        try:
            rate = deployment.timed_read(args.workers, total, args.timeout)
            read = time.perf_counter()
            print(f"{args.workers} worker(s), {' '.join(args.env) or 'defaults'}: {rate.eps:,.0f} events/s", flush=True)
            if int(env.get("REVPULSE_STANDBY_REPLICAS", "0")) and args.workers > 1:
                expected = (args.workers - 1) * total
                behind = expected - standby_events(deployment)
                wait_until(lambda: standby_events(deployment) >= expected, "replicas current", args.timeout, poll=0.1)
                print(
                    f"replicas: {behind:,} events behind when the owners were done, current "
                    f"{time.perf_counter() - read:.1f} s after",
                    flush=True,
                )
            peaks = [f"{peak / MIB:.0f}" for peak in deployment.status("VmHWM")]
            print(f"peak RSS per worker: {', '.join(peaks)} MiB", flush=True)
        finally:
            deployment.stop()


if __name__ == "__main__":
    main()
