"""The `revpulse` command (SPEC §5-6): worker, replay, broker, demo, history."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import re
import sys
from collections.abc import Sequence
from pathlib import Path

from revpulse.settings import Settings, SettingsError


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="revpulse", description="Real-time revenue-operations metrics")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("worker", help="run a worker (consume, compute, publish)")
    replay = commands.add_parser("replay", help="send a JSONL or .json event log to the input topics")
    replay.add_argument("file", type=Path)
    commands.add_parser("broker", help="run the embedded Kafka-compatible broker on REVPULSE_BROKER")
    past = commands.add_parser("history", help="write every kept history point (SPEC §5), e.g. for backfill")
    past.add_argument("--format", choices=("openmetrics", "json"), default="openmetrics")
    past.add_argument("--from", dest="start", help="first midnight, e.g. 2025-01-01 (default: all kept)")
    past.add_argument("--to", dest="end", help="last midnight (default: all kept)")
    past.add_argument("--output", type=Path, help="a file instead of standard output")
    past.add_argument(
        "--label",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="add a label to every OpenMetrics series, e.g. job=revpulse as the scrape adds it",
    )
    demo = commands.add_parser("demo", help="embedded broker + worker + a synthetic SaaS business, live")
    demo.add_argument("--rate", type=float, default=200.0, help="live events per second after the backfill")
    demo.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        print(f"revpulse: {exc}", file=sys.stderr)
        return 2
    if args.command == "worker":
        return run_worker(settings)
    if args.command == "replay":
        return run_replay(settings, args.file)
    if args.command == "broker":
        return run_broker(settings)
    if args.command == "history":
        return run_history(settings, args.format, args.start, args.end, args.output, args.label)
    from revpulse.local.demo import run_demo

    return run_demo(settings, rate=args.rate, duration=args.duration)


def run_worker(settings: Settings) -> int:
    import faust

    from revpulse.agents.app import create_worker

    if not check_kafka(settings):
        return 1
    worker = create_worker(settings)
    faust.Worker(worker.app, loglevel="INFO").execute_from_commandline()
    return 0


def check_kafka(settings: Settings) -> bool:
    """Connect to Kafka as every client will: False, after one line naming the setting to fix, when TLS or SASL
    fails (a worker would only fail again and again); a warning only when no server is reachable yet."""
    from revpulse.kafka_security import KafkaUnusable, preflight

    # A loop of its own, never made current: the worker's loop comes after, as Faust sets it up.
    loop = asyncio.new_event_loop()
    try:
        warning = loop.run_until_complete(preflight(settings))
    except KafkaUnusable as exc:
        print(f"revpulse: {exc}", file=sys.stderr)
        return False
    finally:
        loop.close()
    if warning is not None:
        print(f"revpulse: {warning}; starting anyway, the clients keep retrying", file=sys.stderr)
    return True


def run_replay(settings: Settings, path: Path) -> int:
    from revpulse.replay import read_log, send

    if not path.is_file():
        print(f"revpulse replay: no such file: {path}", file=sys.stderr)
        return 2
    if not check_kafka(settings):
        return 1
    asyncio.run(send(read_log(path), settings, source=f"replay:{path.name}"))
    return 0


def run_history(
    settings: Settings, form: str, start: str | None, end: str | None, output: Path | None, labels: list[str]
) -> int:
    import orjson

    from revpulse.agents.history_export import read_history
    from revpulse.streams.history_query import every_series, openmetrics, parse_date

    bounds = [None if text is None else parse_date(text) for text in (start, end)]
    if any(text is not None and bound is None for text, bound in zip((start, end), bounds, strict=True)):
        print("revpulse history: --from/--to take a date (2025-01-01) or an RFC 3339 instant", file=sys.stderr)
        return 2
    extra = dict(label.partition("=")[::2] for label in labels)
    if any(not re.fullmatch(r"[a-zA-Z_][a-zA-Z0-9_]*", name) or not value for name, value in extra.items()):
        print("revpulse history: --label takes NAME=VALUE, NAME a Prometheus label name", file=sys.stderr)
        return 2
    if not check_kafka(settings):
        return 1
    points = asyncio.run(read_history(settings))
    if form == "openmetrics":
        text = "".join(openmetrics(points, *bounds, extra))
    else:
        text = orjson.dumps(every_series(points, *bounds), option=orjson.OPT_APPEND_NEWLINE).decode()
    if output is None:
        sys.stdout.write(text)
    else:
        output.write_text(text)
    return 0


def run_broker(settings: Settings) -> int:
    from revpulse.local.broker import EmbeddedBroker

    host, _, port = settings.bootstrap_servers.split(",")[0].rpartition(":")
    with EmbeddedBroker(host, int(port)) as broker:
        print(f"revpulse broker: listening on {host}:{port} (memory storage; Ctrl-C stops it)", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            broker.wait()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
