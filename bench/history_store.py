"""What the history (SPEC §5) costs: its size for every series over the kept midnights, and the time it adds.

`python -m bench.history_store [--accounts 3000] [--days 450] [--events 400000]` reads one synthetic log (cached
like every bench data set) through the in-process pipeline twice, with REVPULSE_HISTORY_DAYS=400 and with 0, and
prints JSON: events/s of each, the points and history cells the shards keep, their bytes as snapshots hold them,
the series per point, and the time to compute every point's series once (a cold `/api/history`).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import orjson

from bench.datasets import FX_RATES, DataSet, cached
from bench.inprocess import records
from revpulse.agents.base import MAX_BATCH
from revpulse.settings import Settings
from revpulse.streams.pipeline import Pipeline
from revpulse.streams.state_codec import ENGINE_FIELDS


def run(path: Path, history_days: int) -> tuple[Pipeline, float]:
    inputs = records(path)
    pipeline = Pipeline(Settings(clock="event", fx_rates=FX_RATES, shards=4, history_days=history_days))
    start = time.perf_counter()
    for first in range(0, len(inputs), MAX_BATCH):
        pipeline.process(inputs[first : first + MAX_BATCH])
    return pipeline, len(inputs) / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.history_store")
    parser.add_argument("--accounts", type=int, default=3000)
    parser.add_argument("--days", type=int, default=450)
    parser.add_argument("--events", type=int, default=400_000)
    parser.add_argument("--cache-dir", type=Path, default=Path(tempfile.gettempdir()) / "revpulse-bench-cache")
    args = parser.parse_args(argv)
    data = cached(DataSet.synth(args.accounts, args.events, args.days), args.cache_dir)
    with_history, rate = run(data.path, 400)
    _, rate_without = run(data.path, 0)
    engines = [shard.state.engine for shard in with_history.shards]
    dump = ENGINE_FIELDS["history"].dump
    start = time.perf_counter()
    points = with_history.outputs.history()
    compute = time.perf_counter() - start
    report = {
        "log": {"accounts": args.accounts, "days": args.days, "events": len(records(data.path))},
        "events_per_second": {"history_400_days": round(rate), "no_history": round(rate_without)},
        "points": len(points),
        "series_per_point": len(points[-1][1]) if points else 0,
        "history_cells_in_shards": sum(len(engine.history.values) for engine in engines),
        "history_bytes_in_snapshots": sum(len(orjson.dumps(dump(engine.history))) for engine in engines),
        "every_point_computed_once_seconds": round(compute, 2),
    }
    sys.stdout.write(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode() + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
