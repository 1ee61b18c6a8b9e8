"""How a shard's state grows with history, in process: the same business simulated for more and more days.

`python -m bench.state_growth [--accounts N] [--days 90,180,360]` prints JSON per span: events, snapshot bytes
(every shard's state encoded, as a snapshot holds it), per account, and events/s. Accounts keep arriving in
the simulation, so the base grows a little with the span; the figure to watch is bytes per account.
"""

from __future__ import annotations

import argparse
import time

import orjson

from revpulse.settings import Settings
from revpulse.streams.partition import InputRecord
from revpulse.streams.pipeline import Pipeline
from revpulse.streams.state_codec import encode_state
from revpulse.synth.config import SynthConfig
from revpulse.synth.delivery import generate

BATCH = 5_000


def grow(accounts: int, days: int) -> dict[str, float]:
    settings = Settings(clock="event", fx_rates={"EUR": 1.08})
    pipeline = Pipeline(settings)
    records = [
        InputRecord(topic, 0, offset, orjson.dumps(event), 0.0)
        for offset, (topic, event) in enumerate(generate(SynthConfig(accounts=accounts, days=days)))
    ]
    started = time.perf_counter()
    for i in range(0, len(records), BATCH):
        pipeline.process(records[i : i + BATCH])
    seconds = time.perf_counter() - started
    states = [shard.state for shard in pipeline.shards]
    snapshot = sum(len(encode_state(shard.state, shard.id)) for shard in pipeline.shards)
    known = sum(len(state.engine.accounts) for state in states)
    return {
        "days": days,
        "events": len(records),
        "accounts": known,
        "snapshot_bytes": snapshot,
        "snapshot_bytes_per_account": round(snapshot / max(known, 1)),
        "events_per_second": round(len(records) / seconds),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", type=int, default=1_000)
    parser.add_argument("--days", default="90,180,360")
    args = parser.parse_args()
    for days in (int(d) for d in args.days.split(",")):
        print(orjson.dumps(grow(args.accounts, days)).decode(), flush=True)


if __name__ == "__main__":
    main()
