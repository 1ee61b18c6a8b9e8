"""The worker's work without Kafka, in one process: the bound any design running this Python code can reach.

`python -m bench.inprocess <data set JSONL>` prints JSON with two rates over the same events:
- decode: `EventDecoder.decode_record` of every record (orjson plus validation), the floor of any design that
  validates in Python;
- pipeline: `revpulse.streams.pipeline.Pipeline.process` (decode, route, every shard's engine, the rollup) in batches of
  the router's `MAX_BATCH`, with the worker's collector policy (young threshold, survivors frozen each batch).
The records are read into memory first, routed to their topics as `revpulse replay` routes them.
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from pathlib import Path

import orjson

from bench.datasets import DEFAULT_TOPICS, FX_RATES, route
from bench.workers import Rate
from revpulse.agents.app import YOUNG_COLLECTION_THRESHOLD
from revpulse.agents.base import MAX_BATCH
from revpulse.replay import read_log
from revpulse.settings import Settings
from revpulse.streams.partition import InputRecord
from revpulse.streams.pipeline import Pipeline, decoder


def records(path: Path) -> list[InputRecord]:
    offsets: dict[str, int] = {}
    out = []
    arrival = time.time()
    for line in read_log(path):
        topic, _, value = route(line, DEFAULT_TOPICS)
        offset = offsets[topic] = offsets.get(topic, -1) + 1
        out.append(InputRecord(topic, 0, offset, value, arrival))
    return out


def bench_settings() -> Settings:
    """The defaults, with the FX rates the synthetic business bills in."""
    return Settings.from_env({"REVPULSE_FX_RATES": orjson.dumps(FX_RATES).decode()})


def collect_as_the_worker() -> None:
    """The worker's collector settings: its young threshold, and what survives so far frozen."""
    gc.set_threshold(YOUNG_COLLECTION_THRESHOLD, *gc.get_threshold()[1:])
    gc.freeze()


def replay(pipeline: Pipeline, inputs: list[InputRecord]) -> float:
    """Seconds to process `inputs` in the router's batches, freezing the survivors after each (as the worker)."""
    started = time.perf_counter()
    for i in range(0, len(inputs), MAX_BATCH):
        pipeline.process(inputs[i : i + MAX_BATCH])
        gc.freeze()
    return time.perf_counter() - started


def rates(inputs: list[InputRecord], settings: Settings) -> dict[str, dict[str, float]]:
    events = len(inputs)
    collect_as_the_worker()
    decode = decoder(settings).decode_record
    started = time.perf_counter()
    for record in inputs:
        decode(record.value or b"")
    decoded = time.perf_counter() - started
    pipeline = Pipeline(settings)
    processed = replay(pipeline, inputs)
    started = time.perf_counter()
    pipeline.refresh()
    processed += time.perf_counter() - started
    return {"decode": Rate(events, decoded).as_dict(), "pipeline": Rate(events, processed).as_dict()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path, help="a data set's JSONL (one event per line)")
    args = parser.parse_args()
    sys.stdout.buffer.write(orjson.dumps(rates(records(args.data), bench_settings())) + b"\n")


if __name__ == "__main__":
    main()
