"""`revpulse demo`: the embedded broker, a worker and a synthetic SaaS business, live, in one command."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import orjson
from aiokafka import AIOKafkaProducer

from revpulse.kafka_security import producer_options
from revpulse.local.broker import EmbeddedBroker, free_port
from revpulse.settings import KAFKA_ENV, KafkaSecurity, Settings
from revpulse.synth.bad_records import bad_records
from revpulse.synth.config import DAY, SynthConfig, occurred_at_ms, to_ms
from revpulse.synth.delivery import live
from revpulse.topics import routing_key

DEMO_ACCOUNTS = 1500
# The story the demo tells (issue 15, item 5). First HISTORY_DAYS of the business's past, sent at once: the board's
# charts show months of trend (and the 90-day window a full book at t0). Then the ACCELERATED_DAYS before now,
# replayed at ACCELERATION times real time once the worker has caught up: real time is slow for a business of
# 1,500 accounts (MRR may not change for minutes), a day every 36 s is not. Then real time. Every occurred_at
# stays in the past of the wall clock, which the worker (clock=wall) reads as as_of.
HISTORY_DAYS = 120
ACCELERATED_DAYS = 7  # the 7-day window fills up before the eyes
ACCELERATION = 2400.0  # 7 days in 4.2 minutes
BACKFILL_DAYS = HISTORY_DAYS + ACCELERATED_DAYS
CATCH_UP_TIMEOUT = 900.0  # seconds the accelerated replay waits at most for the worker to take in the history
# (label, metric, window) of the headline numbers printed every few seconds.
HEADLINES = (
    ("MRR", "mrr", None),
    ("ARR", "arr", None),
    ("customers", "customers", None),
    ("net new MRR 30d", "net_new_mrr", "30d"),
    ("NRR 30d", "nrr", "30d"),
    ("churn 30d", "customer_churn_rate", "30d"),
    ("win rate 30d", "win_rate", "30d"),
    ("pipeline $/day", "pipeline_velocity", "30d"),
    ("CAC 30d", "cac", "30d"),
    ("active accts 7d", "active_accounts", "7d"),
)


def run_demo(settings: Settings, *, rate: float, duration: float | None) -> int:
    config = SynthConfig(accounts=DEMO_ACCOUNTS)
    fx = dict(config.currencies) | dict(settings.fx_rates)
    broker_port = free_port()
    workdir = tempfile.mkdtemp(prefix="revpulse-demo-")
    # The embedded broker speaks plaintext on loopback: Kafka security settings of the environment stay out.
    settings = replace(settings, broker=f"kafka://127.0.0.1:{broker_port}", fx_rates=fx, kafka=KafkaSecurity())
    unset_kafka = dict.fromkeys(KAFKA_ENV, "")  # empty is unset, over a .env too
    env = (
        os.environ
        | unset_kafka
        | {
            "REVPULSE_BROKER": settings.broker,
            "REVPULSE_WEB_PORT": str(settings.web_port),
            "REVPULSE_CLOCK": "wall",
            # The embedded broker compacts nothing: snapshots rotate through topics of their own instead.
            "REVPULSE_INTERNAL_RETENTION": "rotate",
            "REVPULSE_FX_RATES": orjson.dumps(fx).decode(),
            "REVPULSE_DATA_DIR": os.path.join(workdir, "data"),
        }
    )
    log_path = os.path.join(workdir, "worker.log")
    print(board_line(settings), flush=True)
    with EmbeddedBroker("127.0.0.1", broker_port) as broker, open(log_path, "wb") as log:
        print(f"revpulse demo: embedded broker on {broker.bootstrap}; worker log {log_path}", flush=True)
        worker = subprocess.Popen(
            [sys.executable, "-m", "revpulse.cli", "worker"], env=env, stdout=log, stderr=subprocess.STDOUT
        )
        try:
            asyncio.run(_drive(settings, config, rate=rate, duration=duration))
        except KeyboardInterrupt:
            pass
        finally:
            worker.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                worker.wait(10)
            if worker.poll() is None:
                worker.kill()
    return 0


def board_address(settings: Settings) -> str:
    """Where the board is (agents/board.py); with a read token, the address that takes it once."""
    base = f"http://127.0.0.1:{settings.web_port}/"
    return f"{base}?token=<REVPULSE_READ_TOKEN>" if settings.web.read_token is not None else base


def board_line(settings: Settings) -> str:
    """The demo's first line: where to look."""
    login = " (log in as REVPULSE_READ_USER)" if settings.web.read_user is not None else ""
    return f"Board: {board_address(settings)}{login}"


def read_headers(settings: Settings) -> dict[str, str]:
    """The read credentials of the environment, for the demo's own requests to its worker."""
    web = settings.web
    if web.read_token is not None:
        return {"Authorization": f"Bearer {web.read_token}"}
    if web.read_user is not None and web.read_password is not None:
        pair = base64.b64encode(f"{web.read_user}:{web.read_password}".encode()).decode()
        return {"Authorization": f"Basic {pair}"}
    return {}


async def _drive(settings: Settings, config: SynthConfig, *, rate: float, duration: float | None) -> None:
    base = f"http://127.0.0.1:{settings.web_port}"
    async with aiohttp.ClientSession(headers=read_headers(settings)) as http:
        await _wait_ready(http, base)
        print(
            f"\nRevPulse is live.\n  Board:        {board_address(settings)}\n"
            f"  Prometheus:   {base}/metrics\n  JSON:         {base}/api/metrics, {base}/api/history\n"
            f"  Health:       {base}/healthz  {base}/readyz\n"
            f"  Metric topic: {settings.topics.metrics} on {settings.bootstrap_servers}\n"
            f"Sending {HISTORY_DAYS} days of history at once, then the last {ACCELERATED_DAYS} days at "
            f"{ACCELERATION:g}x real time, then live. Ctrl-C stops.\n",
            flush=True,
        )
        producer = AIOKafkaProducer(**producer_options(settings), linger_ms=10)
        await producer.start()
        try:
            # Dated at the start of the history: the one valid event among them (accepted) starts no earlier one.
            for topic, value in bad_records(at=datetime.now(UTC) - timedelta(days=BACKFILL_DAYS)):
                await producer.send(topic, value)
            summary = asyncio.create_task(_summaries(http, base))
            try:
                await _stream(producer, config, rate, duration, http, base)
            finally:
                summary.cancel()
        finally:
            await producer.stop()


class Pacer:
    """When to send each event of the live stream started at `t0_ms`: the history at once, the `accelerated_days`
    before `t0_ms` at `speed` times real time from the first of them on, then each event when the wall clock
    reaches its occurred_at. A late or re-sent event whose time has passed goes at once."""

    PHASES = ("history", "accelerated", "live")

    def __init__(
        self, t0_ms: int, accelerated_days: float, speed: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.t0_ms = t0_ms
        self.fast_from_ms = t0_ms - round(accelerated_days * DAY)
        self.speed = speed
        self.clock = clock
        self.fast_started: float | None = None

    def phase(self, occurred_ms: int) -> str:
        if occurred_ms < self.fast_from_ms:
            return "history"
        return "accelerated" if occurred_ms < self.t0_ms else "live"

    def delay(self, occurred_ms: int, wall_ms: int) -> float:
        """Seconds to wait before sending an event that occurred at `occurred_ms`, the wall clock being at
        `wall_ms`."""
        phase = self.phase(occurred_ms)
        if phase == "history":
            return 0.0
        if phase == "live":
            return max(0.0, (occurred_ms - wall_ms) / 1000)
        if self.fast_started is None:
            self.fast_started = self.clock()
        due = self.fast_started + (occurred_ms - self.fast_from_ms) / 1000 / self.speed
        return max(0.0, due - self.clock())


async def _stream(
    producer: AIOKafkaProducer,
    config: SynthConfig,
    rate: float,
    duration: float | None,
    http: aiohttp.ClientSession,
    base: str,
) -> None:
    started = time.monotonic()
    t0 = datetime.now(UTC)
    pacer = Pacer(to_ms(t0) - to_ms(t0) % 1000, ACCELERATED_DAYS, ACCELERATION)
    events = live(config, rate=rate, now=lambda: t0, backfill_days=BACKFILL_DAYS)
    phase = 0
    for sent, (topic, event) in enumerate(events):  # `sent`: the events sent before this one
        occurred = occurred_at_ms(event["occurred_at"])
        reached = Pacer.PHASES.index(pacer.phase(occurred))
        if reached > phase:  # a late event of an earlier phase does not take the story back
            phase = reached
            await producer.flush()
            if phase == 1:
                print(f"History sent ({sent:,} events); waiting for the worker to take it in", flush=True)
                await _caught_up(http, base, sent)
                print(
                    f"Replaying the last {ACCELERATED_DAYS} days at {ACCELERATION:g}x real time (a day every "
                    f"{86_400 / ACCELERATION:g} s): watch the board",
                    flush=True,
                )
            else:
                print("Caught up with the wall clock: live from now on", flush=True)
        wait = pacer.delay(occurred, to_ms(datetime.now(UTC)))
        if wait > 0:
            await asyncio.sleep(wait)
        key = routing_key(event)
        await producer.send(topic, orjson.dumps(event), key=None if key is None else key.encode())
        if duration is not None and time.monotonic() - started > duration:
            return


async def _caught_up(http: aiohttp.ClientSession, base: str, sent: int) -> None:
    """Until the worker counted `sent` input events, or its count stood still for 5 s (some records of the demo
    are bad on purpose), or CATCH_UP_TIMEOUT passed."""
    deadline = time.monotonic() + CATCH_UP_TIMEOUT
    last, still = -1, 0.0
    while time.monotonic() < deadline and still < 5.0:
        await asyncio.sleep(1)
        with contextlib.suppress(aiohttp.ClientError, ValueError, KeyError, TypeError):
            async with http.get(f"{base}/healthz") as response:
                counted = int(orjson.loads(await response.read())["events"])
            if counted >= sent:
                return
            still = still + 1 if counted == last else 0.0
            last = counted


async def _wait_ready(http: aiohttp.ClientSession, base: str) -> None:
    print("waiting for the worker to join its consumer group", end="", flush=True)
    while True:
        with contextlib.suppress(aiohttp.ClientError):
            async with http.get(f"{base}/readyz") as response:
                if response.status == 200:
                    return
        print(".", end="", flush=True)
        await asyncio.sleep(1)


async def _summaries(http: aiohttp.ClientSession, base: str) -> None:
    while True:
        await asyncio.sleep(5)
        with contextlib.suppress(aiohttp.ClientError):
            async with http.get(f"{base}/api/metrics") as response:
                records = orjson.loads(await response.read())
            async with http.get(f"{base}/metrics") as response:
                exposition = await response.text()
            accepted, data_until = accepted_events(exposition), watermark(exposition)
            print(f"{headline(records)} | events accepted {accepted:,} | data up to {data_until}", flush=True)


def headline(records: list[dict[str, Any]]) -> str:
    """One terminal line of the segment-`all` headline numbers."""
    values = {
        (r["metric"], r["labels"].get("window")): r["value"]
        for r in records
        if r["labels"].get("segment") == "all" and set(r["labels"]) <= {"segment", "window"}
    }
    as_of = records[0]["as_of"] if records else "-"
    parts = [f"{label} {_fmt(values.get((metric, window)))}" for label, metric, window in HEADLINES]
    return f"[{as_of}] " + " | ".join(parts)


def accepted_events(exposition: str) -> int:
    """Σ of `revpulse_events_total{outcome="accepted"}` in a Prometheus text exposition."""
    return sum(
        int(float(line.rsplit(" ", 1)[1]))
        for line in exposition.splitlines()
        if line.startswith("revpulse_events_total{") and 'outcome="accepted"' in line
    )


def watermark(exposition: str) -> str:
    """`revpulse_watermark_timestamp_seconds` of a Prometheus text exposition, to the minute ("-" before any)."""
    for line in exposition.splitlines():
        if line.startswith("revpulse_watermark_timestamp_seconds "):
            seconds = float(line.rsplit(" ", 1)[1])
            if seconds > 0:
                return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M")
    return "-"


def _fmt(value: float | None) -> str:
    if value is None:
        return "n/a"
    if abs(value) < 10:
        return f"{value:.3f}"
    return f"{value:,.0f}"
