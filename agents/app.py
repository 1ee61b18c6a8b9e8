"""The Faust application: settings, topics, the agents and the HTTP outputs of SPEC §5.

Data flow: input topics → router agent → `<app id>-shards` (one partition per shard) → shard agents (state,
dead letters) → `<app id>-partials` → the rollup agent of every worker → global series → `/metrics`,
`/api/metrics`, and the metric topic (published by the worker that owns shard 0).
Provider data: `POST /ingest/<source>` → `ingest.raw.<source>`, and Salesforce CDC → `salesforce.cdc`; the
connector agent maps both to canonical events on the input topics.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from dataclasses import dataclass

import faust
import orjson
from aiohttp.web import Response
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from revpulse.agents import heap
from revpulse.agents.base import ProducerService
from revpulse.agents.board import register_board
from revpulse.agents.collector import Collector
from revpulse.agents.connector_agent import ConnectorAgent
from revpulse.agents.ingest import configure_web_server, register_ingest
from revpulse.agents.publisher import Publisher
from revpulse.agents.rollup_agent import RollupAgent
from revpulse.agents.router_agent import RouterAgent
from revpulse.agents.shard_agent import ShardAgent
from revpulse.agents.snapshots import SnapshotStore, copy_running
from revpulse.agents.span_reader import SpanReader
from revpulse.kafka_security import client_options, faust_options
from revpulse.settings import Settings
from revpulse.streams.history_query import QueryError, parse_query
from revpulse.streams.history_query import answer as history_answer
from revpulse.streams.outputs import Outputs
from revpulse.streams.partition import Router, total_outcomes
from revpulse.streams.pipeline import decoder, engine_config
from revpulse.streams.rollup import Rollup
from revpulse.topics import partials_topic, raw_topics, shard_topic, snapshot_topic

log = logging.getLogger(__name__)

SHARD_RECORD_BYTES = str(16 * 1024 * 1024)

INPUT_PARTITIONS = 4
PARTIALS_PARTITIONS = 4
REFRESH_INTERVAL = 0.025  # seconds between checks for a changed rollup
# The state is millions of long-lived objects without cycles: Python's collector walking them again and again
# cost a third of the throughput. What survives a second is frozen (young collections then skip it), and a
# full collection (`Collector`) frees the cycles the libraries leave behind among frozen objects.
FREEZE_INTERVAL = 1.0
YOUNG_COLLECTION_THRESHOLD = 100_000  # allocations between young collections (Python's default: 700)


@dataclass
class Worker:
    app: faust.App
    outputs: Outputs
    router: RouterAgent
    shards: ShardAgent
    rollup: RollupAgent
    publisher: Publisher

    @property
    def ready(self) -> bool:
        return self.router.assigned and self.shards.ready and self.rollup.caught_up


def create_worker(settings: Settings) -> Worker:
    app = faust.App(
        settings.app_id,
        **faust_options(settings),
        topic_replication_factor=settings.replication_factor,
        web_port=settings.web_port,
        datadir=str(settings.data_dir),
        broker_session_timeout=settings.session_timeout,
        broker_heartbeat_interval=min(3.0, settings.session_timeout / 5),
        web_enabled=True,
    )
    # Header timeout and connection cap on the web port; before any page, which would create the web server.
    configure_web_server(app, settings)
    config = engine_config(settings)
    rollup = Rollup()
    # The counts come from the shards this worker owns; `shards` is bound below, before any call.
    outputs = Outputs(settings, rollup, lambda: shards.outcomes())
    kwargs = {"beacon": app.beacon, "loop": app.loop}
    producer = ProducerService(settings, **kwargs)

    def skipped(role: str, reason: str) -> None:
        outputs.internal_skipped.labels(role, reason).inc()

    snapshots = SnapshotStore(settings, config, producer, skipped)
    spans = SpanReader(settings, Router(decoder(settings), settings.shards), lambda reason: skipped("shards", reason))
    shards = ShardAgent(settings, config, producer, snapshots, rollup, outputs, spans, **kwargs)
    router = RouterAgent(settings, Router(decoder(settings), settings.shards), producer, outputs, shards, **kwargs)
    rollup_agent = RollupAgent(
        settings,
        rollup,
        lambda shard: shard in shards.shards,
        skipped,
        lambda partition: shards.partials_written.get(partition, 0),
        **kwargs,
    )
    publisher = Publisher(producer, outputs, settings)
    connectors = ConnectorAgent(settings, producer, outputs, **kwargs)
    worker = Worker(app, outputs, router, shards, rollup_agent, publisher)
    register_ingest(app, settings, producer, registry=outputs.registry)
    register_board(app)  # the live board at `/`, behind the read credentials like every page

    @app.task
    async def start_agents() -> None:
        await create_topics(settings)
        # Rollup first: a shard restored on assignment publishes its partials into it.
        for agent in (producer, rollup_agent, shards, router, connectors):
            await app.add_runtime_dependency(agent)

    @app.task
    async def refresh_on_change() -> None:
        # /metrics follows the data within REFRESH_INTERVAL, not the publish interval: a refresh is a no-op
        # unless the rollup changed, and costs a few milliseconds when it did.
        while True:
            await asyncio.sleep(REFRESH_INTERVAL)
            outputs.refresh()

    gc.set_threshold(YOUNG_COLLECTION_THRESHOLD, *gc.get_threshold()[1:])
    heap.keep_large_buffers_apart()  # Kafka's fetch and batch buffers: see `heap`

    collector = Collector(busy=copy_running)

    @app.timer(interval=FREEZE_INTERVAL)
    async def freeze_survivors() -> None:
        collector.tick(time.monotonic())

    @app.timer(interval=settings.publish_interval)
    async def publish() -> None:
        # Every worker refreshes (its /metrics and lag histogram stay current without a scrape); the owner of
        # shard 0 also publishes the metric topic.
        outputs.refresh()
        await publisher.publish(owner=0 in shards.shards)

    @app.page("/metrics")
    async def metrics(web: faust.web.Web, request: faust.web.Request) -> Response:
        return Response(body=generate_latest(outputs.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    @app.page("/api/metrics")
    async def api_metrics(web: faust.web.Web, request: faust.web.Request) -> Response:
        series = outputs.refresh()
        as_of = outputs.as_of_text
        body = orjson.dumps([s.record(as_of) for s in series]) if as_of is not None else b"[]"
        return Response(body=body, content_type="application/json")

    @app.page("/api/history")
    async def api_history(web: faust.web.Web, request: faust.web.Request) -> Response:
        # SPEC §5: one series' value at each kept UTC midnight; a query naming no series or several is a 400
        # that says which labels to add.
        try:
            query = parse_query(dict(request.query))
            await outputs.prepare_history()
            body = orjson.dumps(history_answer(outputs.history(), query))
        except QueryError as exc:
            return Response(body=orjson.dumps({"error": str(exc)}), status=400, content_type="application/json")
        return Response(body=body, content_type="application/json")

    @app.page("/healthz")
    async def healthz(web: faust.web.Web, request: faust.web.Request) -> Response:
        outcomes = shards.outcomes()
        body = {
            "status": "ok",
            "events": sum(outcomes.values()),
            "shards": sorted(shards.shards),
            "standby_events": sum(total_outcomes(shards.standby.values()).values()),
            "as_of": outputs.as_of_text,
        }
        return Response(body=orjson.dumps(body), content_type="application/json")

    @app.page("/readyz")
    async def readyz(web: faust.web.Web, request: faust.web.Request) -> Response:
        ready = worker.ready
        body = {"ready": ready, "catching_up_shards": sorted(shards.catching_up), "rollup": rollup_agent.caught_up}
        return Response(body=orjson.dumps(body), status=200 if ready else 503, content_type="application/json")

    return worker


async def create_topics(settings: Settings) -> None:
    """Create any missing topic: inputs and dead letters plain, the metric topic compacted, internal ones."""
    admin = AIOKafkaAdminClient(**client_options(settings))
    await admin.start()
    compact = {"cleanup.policy": "compact"}
    rf = settings.replication_factor  # replicas of each topic
    try:
        topics = [NewTopic(name, INPUT_PARTITIONS, rf) for name in settings.topics.inputs]
        topics += [
            NewTopic(settings.topics.deadletter, 1, rf),
            NewTopic(settings.topics.metrics, 1, rf, topic_configs=compact),
            # An item carries its input record's bytes, escaped for JSON (up to 6 of them a byte): a record of
            # one large input item can outgrow the broker's default limit, which would hold the router.
            NewTopic(
                shard_topic(settings), settings.shards, rf, topic_configs={"max.message.bytes": SHARD_RECORD_BYTES}
            ),
            NewTopic(partials_topic(settings), PARTIALS_PARTITIONS, rf, topic_configs=compact),
        ]
        if settings.internal_retention == "compact":  # else each snapshot gets a topic of its own
            topics.append(NewTopic(snapshot_topic(settings), 1, rf, topic_configs=compact))
        # Raw provider bodies and Salesforce CDC: one partition each (webhook volume is low, and one partition keeps
        # a provider's order, which the stateful mappers depend on), kept forever: the mappers rebuild their state
        # by reading them from the start.
        forever = {"retention.ms": "-1"}
        raw = raw_topics(settings.topics)
        topics += [NewTopic(name, 1, rf, topic_configs=forever) for name in (*raw, settings.topics.salesforce_cdc)]
        existing = set(await admin.list_topics())
        missing = [topic for topic in topics if topic.name not in existing]
        if missing:
            try:
                await admin.create_topics(missing)
            except TopicAlreadyExistsError:
                log.info("topics were created concurrently")
    finally:
        await admin.close()
