"""The per-event baseline: a plain Faust app whose one agent decodes each input event (orjson), one at a time.

Run by the benchmark as `python -m bench.faust_baseline` with BENCH_BROKER (kafka://host:port), BENCH_TOPICS
(comma-separated), BENCH_APP_ID, BENCH_WEB_PORT and BENCH_DATA_DIR. `GET /progress` answers
`{"events": n, "first": t, "last": t}`: events decoded and the wall-clock times of the first and the latest.
"""

from __future__ import annotations

import os
import time
from typing import Any

import faust
import orjson
from aiohttp.web import Response


def create_app(broker: str, topics: list[str], app_id: str, web_port: int, data_dir: str) -> faust.App:
    app = faust.App(
        app_id,
        broker=broker,
        web_port=web_port,
        web_host="127.0.0.1",
        datadir=data_dir,
        web_enabled=True,
        consumer_auto_offset_reset="earliest",
    )
    source = app.topic(*topics, value_serializer="raw")
    progress: dict[str, Any] = {"events": 0, "first": None, "last": None}

    @app.agent(source)
    async def decode(stream: faust.StreamT[bytes]) -> None:
        async for value in stream:
            orjson.loads(value)
            now = time.time()
            if progress["first"] is None:
                progress["first"] = now
            progress["events"] += 1
            progress["last"] = now

    @app.page("/progress")
    async def report(web: faust.web.Web, request: faust.web.Request) -> Response:
        return Response(body=orjson.dumps(progress), content_type="application/json")

    return app


def main() -> None:
    env = os.environ
    app = create_app(
        env["BENCH_BROKER"],
        env["BENCH_TOPICS"].split(","),
        env["BENCH_APP_ID"],
        int(env["BENCH_WEB_PORT"]),
        env["BENCH_DATA_DIR"],
    )
    faust.Worker(app, loglevel="WARNING").execute_from_commandline()


if __name__ == "__main__":
    main()
