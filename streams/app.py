"""The Faust application: settings, topics, the two agents and the HTTP outputs of SPEC §5."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import faust
import orjson
from aiohttp.web import Response
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from agents.ingest import IngestAgent
from agents.publisher import Publisher
from streams.pipeline import Pipeline
from streams.settings import Settings

log = logging.getLogger(__name__)

INPUT_PARTITIONS = 4


@dataclass
class Worker:
    app: faust.App
    pipeline: Pipeline
    ingest: IngestAgent
    publisher: Publisher


def create_worker(settings: Settings) -> Worker:
    app = faust.App(
        settings.app_id,
        broker=settings.broker,
        web_port=settings.web_port,
        web_host="0.0.0.0",
        datadir=str(settings.data_dir),
        broker_session_timeout=settings.session_timeout,
        broker_heartbeat_interval=min(3.0, settings.session_timeout / 5),
        web_enabled=True,
    )
    pipeline = Pipeline(settings)
    ingest = IngestAgent(app, pipeline, settings, beacon=app.beacon, loop=app.loop)
    publisher = Publisher(app, pipeline, settings)
    worker = Worker(app, pipeline, ingest, publisher)

    @app.task
    async def ensure_topics() -> None:
        await create_topics(settings)
        await app.add_runtime_dependency(ingest)

    @app.timer(interval=settings.publish_interval)
    async def publish() -> None:
        await publisher.publish()

    @app.page("/metrics")
    async def metrics(web: faust.web.Web, request: faust.web.Request) -> Response:
        return Response(body=generate_latest(pipeline.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    @app.page("/api/metrics")
    async def api_metrics(web: faust.web.Web, request: faust.web.Request) -> Response:
        series = pipeline.refresh()
        as_of = pipeline.as_of_text
        body = orjson.dumps([s.record(as_of) for s in series]) if as_of is not None else b"[]"
        return Response(body=body, content_type="application/json")

    @app.page("/healthz")
    async def healthz(web: faust.web.Web, request: faust.web.Request) -> Response:
        body = {"status": "ok", "records": pipeline.records, "as_of": pipeline.as_of_text}
        return Response(body=orjson.dumps(body), content_type="application/json")

    @app.page("/readyz")
    async def readyz(web: faust.web.Web, request: faust.web.Request) -> Response:
        ready = ingest.ready
        return Response(
            body=orjson.dumps({"ready": ready, "replaying_partitions": len(ingest.replay_until)}),
            status=200 if ready else 503,
            content_type="application/json",
        )

    return worker


async def create_topics(settings: Settings) -> None:
    """Create any missing topic: inputs and dead letters plain, the metric topic compacted."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers)
    await admin.start()
    try:
        topics = [NewTopic(name, INPUT_PARTITIONS, 1) for name in settings.topics.inputs]
        topics.append(NewTopic(settings.topics.deadletter, 1, 1))
        topics.append(NewTopic(settings.topics.metrics, 1, 1, topic_configs={"cleanup.policy": "compact"}))
        existing = set(await admin.list_topics())
        missing = [topic for topic in topics if topic.name not in existing]
        if missing:
            try:
                await admin.create_topics(missing)
            except TopicAlreadyExistsError:
                log.info("topics were created concurrently")
    finally:
        await admin.close()
