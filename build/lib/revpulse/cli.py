"""The `revpulse` command (SPEC §6): worker, replay, broker, demo."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
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
    from revpulse.local.demo import run_demo

    return run_demo(settings, rate=args.rate, duration=args.duration)


def run_worker(settings: Settings) -> int:
    import faust

    from revpulse.agents.app import create_worker

    worker = create_worker(settings)
    faust.Worker(worker.app, loglevel="INFO").execute_from_commandline()
    return 0


def run_replay(settings: Settings, path: Path) -> int:
    from revpulse.replay import read_log, send

    if not path.is_file():
        print(f"revpulse replay: no such file: {path}", file=sys.stderr)
        return 2
    asyncio.run(send(read_log(path), settings, source=f"replay:{path.name}"))
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
