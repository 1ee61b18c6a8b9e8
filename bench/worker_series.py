"""One worker's memory while it reads a fixed-book span: `python -m bench.worker_series --days 720`.

A finer look than `bench.growth` at one span: a fresh embedded broker is loaded with the span (`bench.fixed_book`,
cached like every bench data set), one fresh `revpulse worker` reads it from the earliest offset with snapshots
every `--snapshot-interval` s, and every `--every` s a line shows the events counted so far, Σ PSS over the
worker and its snapshot copies, and the worker's own PSS. The last line: the read's seconds and both peaks.
For an A/B of two commits, run it from a worktree of each, in turn, on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench.datasets import DataSet, cached, input_topics, load
from bench.procmem import GroupSample, GroupSampler
from bench.workers import Deployment
from revpulse.local.broker import EmbeddedBroker

MIB = 2**20


@dataclass
class Series:
    """The lines that show a worker's samples and their peaks (`GroupSampler` takes the samples)."""

    total: int  # events to read
    started: float
    sampler: GroupSampler

    def line(self, sample: GroupSample, counted: int) -> str:
        return (
            f"{sample.at - self.started:6.1f}s {counted / self.total:5.0%} PSS {sample.pss / MIB:5.0f} MiB "
            f"(worker {sample.root_pss / MIB:5.0f}, {sample.processes} processes); "
            f"peak {self.sampler.peak_pss / MIB:5.0f} (worker {self.sampler.peak_root_pss / MIB:5.0f})"
        )

    def summary(self, ended: float) -> str:
        return (
            f"read {self.total:,} events in {ended - self.started:.0f} s; peak PSS "
            f"{self.sampler.peak_pss / MIB:.0f} MiB, the worker alone {self.sampler.peak_root_pss / MIB:.0f} MiB"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--days", type=int, default=720, help="the span (720)")
    parser.add_argument("--accounts", type=int, default=1000, help="the fixed account base (1,000)")
    parser.add_argument("--snapshot-interval", type=float, default=5.0, help="the worker's, seconds (5)")
    parser.add_argument("--every", type=float, default=3.0, help="seconds between lines (3)")
    parser.add_argument("--cache-dir", type=Path, default=Path(tempfile.gettempdir()) / "revpulse-bench-cache")
    args = parser.parse_args()
    data = cached(DataSet.fixed(args.accounts, args.days), args.cache_dir)
    root = Path(tempfile.mkdtemp(prefix="worker-series-"))
    with EmbeddedBroker() as broker:
        topics = input_topics("history")
        total = asyncio.run(load(broker.bootstrap, data, topics))
        env = {"REVPULSE_SNAPSHOT_INTERVAL": f"{args.snapshot_interval:g}s"}
        deployment = Deployment(broker.bootstrap, topics, f"series-d{args.days}", root, env)
        try:
            [worker] = deployment.start(1, wait=False)
            with GroupSampler(worker.process.pid) as sampler:
                series = Series(total, time.monotonic(), sampler)
                counted = 0
                while counted < total:
                    time.sleep(args.every)
                    counted = deployment.events_counted()
                    if sampler.samples:
                        print(series.line(sampler.samples[-1], counted), flush=True)
            print(series.summary(time.monotonic()), flush=True)
        finally:
            deployment.stop()


if __name__ == "__main__":
    main()
