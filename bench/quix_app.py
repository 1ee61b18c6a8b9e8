"""The peer a user would pick instead: a Quix Streams app with one windowed aggregate over the input topics.

Run by `bench.quix_peer` with the Python of a venv of its own (Quix Streams and its dependencies stay out of
RevPulse's): `python quix_app.py <bootstrap> <topics, comma-separated> <events> <state dir>`. Per topic, per
key (the account, SPEC §1), a 1-hour tumbling window of event time (`occurred_at`) counting the events and
summing their amount (`quantity`, `mrr` or `amount`, else 0), emitted as each window closes. Stops once every
one of `<events>` was read, and prints JSON: the events and the seconds from the first to the last. Imports
nothing of RevPulse.
"""

from __future__ import annotations

import json
import sys
import time
from datetime import datetime, timedelta
from typing import Any

from quixstreams import Application
from quixstreams.dataframe.windows import Count, Sum


def occurred_at_ms(value: Any, headers: Any, timestamp: float, timestamp_type: Any) -> int:
    try:
        return int(datetime.fromisoformat(value["occurred_at"]).timestamp() * 1000)
    except (TypeError, KeyError, ValueError):
        return int(timestamp)


def amount(event: Any) -> float:
    for name in ("quantity", "mrr", "amount"):
        value = event.get(name) if isinstance(event, dict) else None
        if isinstance(value, int | float):
            return float(value)
    return 0.0


def main() -> None:
    bootstrap, names, total, state_dir = sys.argv[1], sys.argv[2].split(","), int(sys.argv[3]), sys.argv[4]
    app = Application(
        broker_address=bootstrap,
        consumer_group=f"bench-quix-{time.time_ns()}",
        auto_offset_reset="earliest",
        state_dir=state_dir,
        use_changelog_topics=False,  # the embedded broker does not compact
        loglevel="WARNING",
    )
    seen = {"events": 0, "first": 0.0, "last": 0.0}

    def count(_: Any) -> None:
        now = time.perf_counter()
        seen["first"] = seen["first"] or now
        seen["last"] = now
        seen["events"] += 1
        if seen["events"] >= total:
            app.stop()

    for name in names:
        topic = app.topic(name, value_deserializer="json", timestamp_extractor=occurred_at_ms)
        frame = app.dataframe(topic).update(count).apply(amount)
        frame.tumbling_window(timedelta(hours=1)).agg(events=Count(), total=Sum()).final()
    app.run()
    print(json.dumps({"events": seen["events"], "seconds": seen["last"] - seen["first"]}))


if __name__ == "__main__":
    main()
