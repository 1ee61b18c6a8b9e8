"""`revpulse demo`: the embedded broker, a worker and a synthetic SaaS business, live, in one command."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import aiohttp
import orjson
from aiokafka import AIOKafkaProducer

from revpulse.kafka_security import client_options
from revpulse.local.broker import EmbeddedBroker, free_port
from revpulse.settings import KAFKA_ENV, KafkaSecurity, Settings
from revpulse.synth.bad_records import bad_records
from revpulse.synth.config import SynthConfig, seconds_until_due
from revpulse.synth.delivery import live
from revpulse.topics import routing_key

DEMO_ACCOUNTS = 1500
# The backfill covers the 30-day window entirely, so C0-based rates (churn, NRR) have a full book at t0.
BACKFILL_DAYS = 45
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
            "REVPULSE_FX_RATES": orjson.dumps(fx).decode(),
            "REVPULSE_DATA_DIR": os.path.join(workdir, "data"),
        }
    )
    log_path = os.path.join(workdir, "worker.log")
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


async def _drive(settings: Settings, config: SynthConfig, *, rate: float, duration: float | None) -> None:
    base = f"http://127.0.0.1:{settings.web_port}"
    async with aiohttp.ClientSession() as http:
        await _wait_ready(http, base)
        print(
            f"\nRevPulse is live.\n  Prometheus:   {base}/metrics\n  JSON:         {base}/api/metrics\n"
            f"  Health:       {base}/healthz  {base}/readyz\n"
            f"  Metric topic: {settings.topics.metrics} on {settings.bootstrap_servers}\n"
            f"Backfilling {BACKFILL_DAYS} days of history, then streaming live. Ctrl-C stops.\n",
            flush=True,
        )
        producer = AIOKafkaProducer(**client_options(settings), linger_ms=10)
        await producer.start()
        try:
            for topic, value in bad_records():
                await producer.send(topic, value)
            summary = asyncio.create_task(_summaries(http, base))
            try:
                await _stream(producer, config, rate, duration)
            finally:
                summary.cancel()
        finally:
            await producer.stop()


async def _stream(producer: AIOKafkaProducer, config: SynthConfig, rate: float, duration: float | None) -> None:
    started = time.monotonic()
    events = live(config, rate=rate, now=lambda: datetime.now(UTC), backfill_days=BACKFILL_DAYS)
    for topic, event in events:
        wait = seconds_until_due(event, datetime.now(UTC))
        if wait > 0:
            await asyncio.sleep(wait)
        key = routing_key(event)
        await producer.send(topic, orjson.dumps(event), key=None if key is None else key.encode())
        if duration is not None and time.monotonic() - started > duration:
            return


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
                accepted = accepted_events(await response.text())
            print(f"{headline(records)} | events accepted {accepted:,}", flush=True)


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


def _fmt(value: float | None) -> str:
    if value is None:
        return "n/a"
    if abs(value) < 10:
        return f"{value:.3f}"
    return f"{value:,.0f}"
