"""Two checkouts' in-process rates on one data set, measured at the same time: one per core, swapped each round.

`python -m bench.side_by_side <checkout A> <checkout B> <data set JSONL> [--rounds 2]` runs `python -m
bench.inprocess` in both checkouts at once, each with its own `.venv` (an editable install of that checkout) and
pinned to a core of its own with `taskset`, and prints each round's pipeline rates and B's gain over A. On a
shared machine one run's rate moves by ±10 % from minute to minute, more than most single changes; two runs side
by side see the same minute. A machine with one core has nothing to pin to: they share it.
"""

from __future__ import annotations

import argparse
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import orjson


@dataclass(frozen=True)
class Round:
    cores: tuple[int, int]  # A's core, B's core
    rates: tuple[float, float]  # pipeline events/s of A, of B

    @property
    def gain(self) -> float:
        """B's rate over A's, minus one."""
        return self.rates[1] / self.rates[0] - 1

    def line(self) -> str:
        (a, b), (core_a, core_b) = self.rates, self.cores
        return f"A {a:>9,.0f} events/s (core {core_a})   B {b:>9,.0f} events/s (core {core_b})   B/A {self.gain:+.1%}"


def cores(rounds: int, available: int) -> list[tuple[int, int]]:
    """The cores of A and B in each round: 0 and 1, then swapped, so neither keeps the faster one."""
    if available < 2:
        return [(0, 0)] * rounds
    return [(0, 1) if i % 2 == 0 else (1, 0) for i in range(rounds)]


def pipeline_rate(output: bytes) -> float:
    """The pipeline's events/s in `bench.inprocess`'s JSON."""
    return float(orjson.loads(output)["pipeline"]["events_per_second"])


def measure(checkouts: tuple[Path, Path], data: Path, pinned: tuple[int, int]) -> Round:
    runs = [
        subprocess.Popen(
            ["taskset", "-c", str(core), str(checkout / ".venv/bin/python"), "-m", "bench.inprocess", str(data)],
            cwd=checkout,
            stdout=subprocess.PIPE,
        )
        for checkout, core in zip(checkouts, pinned, strict=True)
    ]
    outputs = [run.communicate()[0] for run in runs]
    for checkout, run in zip(checkouts, runs, strict=True):
        if run.returncode:
            raise SystemExit(f"bench.inprocess failed in {checkout} (exit {run.returncode})")
    a, b = (pipeline_rate(output) for output in outputs)
    return Round(pinned, (a, b))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a", type=Path, help="the checkout to compare against (the earlier commit)")
    parser.add_argument("b", type=Path, help="the checkout with the change")
    parser.add_argument("data", type=Path, help="a data set's JSONL (bench.run's cache dir holds them)")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    for pinned in cores(args.rounds, os.cpu_count() or 1):
        print(measure((args.a.resolve(), args.b.resolve()), args.data.resolve(), pinned).line(), flush=True)


if __name__ == "__main__":
    main()
