"""Where the in-process pipeline's time goes: cProfile over `bench.inprocess`'s work, by module and by function.

`python -m bench.profile <data set JSONL> [--top 25] [--skip 0.5] [--stats FILE]`: reads the records as
`bench.inprocess` does, replays the first `--skip` share of them unprofiled (so that the profile is of a state
that has its history, not of an empty one), then profiles the rest in the router's batches. Prints the rate of
both parts (the profiled one is slowed by the profiler), the share of the profiled time spent in each module's
own code (tottime), and the `--top` functions by own time. `--stats` keeps the raw profile for `pstats`.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
from collections import Counter
from pathlib import Path

from bench.inprocess import bench_settings, collect_as_the_worker, records, replay
from revpulse.streams.pipeline import Pipeline


def module_of(filename: str) -> str:
    """A profile entry's module, short: `streams/engine.py`, `orjson`, `~` for built-ins."""
    if filename == "~":
        return "built-ins"
    parts = Path(filename).parts
    for anchor in ("site-packages", "lib"):
        if anchor in parts:
            rest = parts[parts.index(anchor) + 1 :]
            return rest[0].removesuffix(".py") if anchor == "site-packages" or len(rest) < 2 else rest[-1]
    return "/".join(parts[-2:])


def by_module(stats: pstats.Stats) -> Counter[str]:
    """Own time (s) per module."""
    out: Counter[str] = Counter()
    for (filename, _, _), (_, _, tottime, _, _) in stats.stats.items():  # type: ignore[attr-defined]
        out[module_of(filename)] += tottime
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path, help="a data set's JSONL (one event per line)")
    parser.add_argument("--skip", type=float, default=0.5, help="share of the records replayed unprofiled first")
    parser.add_argument("--top", type=int, default=25, help="functions to list")
    parser.add_argument("--stats", type=Path, help="write the raw profile here")
    args = parser.parse_args()
    inputs = records(args.data)
    cut = int(len(inputs) * args.skip)
    collect_as_the_worker()
    pipeline = Pipeline(bench_settings())
    head = replay(pipeline, inputs[:cut])
    profiler = cProfile.Profile()
    profiler.enable()
    tail = replay(pipeline, inputs[cut:])
    profiler.disable()
    if args.stats:
        profiler.dump_stats(args.stats)
    stats = pstats.Stats(profiler)
    total = sum(by_module(stats).values())
    rest = len(inputs) - cut
    print(f"unprofiled: {cut:,} events at {cut / head:,.0f}/s; profiled: {rest:,} at {rest / tail:,.0f}/s")
    print("\nown time by module:")
    for module, seconds in by_module(stats).most_common(20):
        print(f"  {seconds / total:6.1%}  {module}")
    print(f"\ntop {args.top} functions by own time:")
    stats.sort_stats("tottime").print_stats(args.top)


if __name__ == "__main__":
    main()
