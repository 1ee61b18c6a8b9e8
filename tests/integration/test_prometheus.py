"""A real Prometheus (Debian's `prometheus` binary) scraping live workers on the embedded broker.

Two workers of one deployment, as in docker-compose.yml, both scraped as job "revpulse" every second. Prometheus
loads the shipped alert rules (`ops/prometheus/rules/*.yml`), and the tests check that PromQL over the HTTP API
returns what the workers' `/api/metrics` says (each worker's series, and the `max without (instance)` form the
dashboards and alerts use), then that a churn spike in the input makes the customer-churn alert go pending/firing
in `/api/v1/alerts`.

The rule files are loaded as shipped except for two timing knobs, rewritten in the temporary copy so the test runs
in seconds: group `interval`s are dropped (the test's 1 s global evaluation interval applies), and the churn
alert's `for:` (minutes as shipped) becomes 5 s. The expressions and thresholds are the shipped ones.
"""

from __future__ import annotations

import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from revpulse.local.broker import free_port
from revpulse.local.processes import WorkerProcess, terminate
from revpulse.synth.config import SynthConfig, topic_for
from revpulse.synth.delivery import generate
from tests.support.deployment import deployment, replay_events
from tests.support.paths import ROOT
from tests.support.reference import RefSettings, compute

pytestmark = pytest.mark.integration

RULES = ROOT / "ops" / "prometheus" / "rules"
CHURN_ALERT = "RevPulseCustomerChurnHigh"
CHURN_FOR = "5s"
# A deterministic synthetic business: ≈ 200 paying customers at the end, 23 of them enterprise, whose 30-day
# customer churn is 0 before the spike.
SYNTH = SynthConfig(accounts=300, days=45)
EVENTS = 4000
SPIKE_SEGMENT = "enterprise"
SEGMENTS = ("smb", "mid_market", "enterprise")
WORKERS = ("w1", "w2")


@dataclass
class Prometheus:
    url: str
    log: Path

    def get(self, path: str, **params: str) -> Any:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        with urllib.request.urlopen(f"{self.url}{path}{query}", timeout=10) as response:
            body = orjson.loads(response.read())
        assert body["status"] == "success", body
        return body["data"]

    def query(self, promql: str) -> dict[frozenset[tuple[str, str]], float]:
        """Instant vector → {labels (without job and instance: one series each, please): value}."""
        data = self.get("/api/v1/query", query=promql)
        assert data["resultType"] == "vector", data
        out: dict[frozenset[tuple[str, str]], float] = {}
        for sample in data["result"]:
            labels = frozenset((k, v) for k, v in sample["metric"].items() if k not in ("job", "instance"))
            assert labels not in out, f"{promql}: duplicate series {sample['metric']}"
            out[labels] = float(sample["value"][1])
        return out

    def alerts(self, name: str) -> list[dict[str, Any]]:
        return [alert for alert in self.get("/api/v1/alerts")["alerts"] if alert["labels"]["alertname"] == name]


@dataclass
class Baseline:
    api: list[dict[str, Any]]  # what every worker serves
    as_of: datetime
    events: list[dict[str, Any]]


def _labels(record: dict[str, Any], **extra: str) -> frozenset[tuple[str, str]]:
    return frozenset({**record["labels"], **extra}.items())


def _api_values(api: list[dict[str, Any]], metric: str) -> dict[frozenset[tuple[str, str]], float | None]:
    return {_labels(record): record["value"] for record in api if record["metric"] == metric}


def _rules_copy(target: Path) -> list[str]:
    """The shipped rule files with the test's timing (see the module docstring); returns the copied names."""
    names = []
    found = False
    for path in sorted(RULES.glob("*.yml")):
        doc = yaml.safe_load(path.read_text())
        for group in doc.get("groups", []):
            group.pop("interval", None)
            for rule in group["rules"]:
                if rule.get("alert") == CHURN_ALERT:
                    rule["for"] = CHURN_FOR
                    found = True
        (target / path.name).write_text(yaml.safe_dump(doc, sort_keys=False))
        names.append(path.name)
    assert found, f"no alert {CHURN_ALERT} in {RULES}/*.yml"
    return names


def _wait(what: str, check: Any, timeout: float, *, every: float = 0.25) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(every)


def _key(record: dict[str, Any]) -> str:
    labels = ",".join(f'{k}="{v}"' for k, v in sorted(record["labels"].items()))
    return f"{record['metric']}{{{labels}}}"


def _settled(worker: WorkerProcess, events: list[dict[str, Any]], timeout: float) -> list[dict[str, Any]]:
    """`/api/metrics` once the worker has consumed `events` (all it was sent) and its global rollup has caught up:
    every series equals the independent batch reference (tests/reference.py) of the same log."""
    expected = compute(
        [(topic_for(event["type"]), orjson.dumps(event)) for event in events], RefSettings(fx_rates={"EUR": 1.08})
    ).series

    def equal() -> list[dict[str, Any]] | None:
        api: list[dict[str, Any]] = orjson.loads(worker.get("/api/metrics")[1])
        got = {_key(record): record["value"] for record in api}
        if got.keys() != expected.keys():
            return None
        for key, value in expected.items():
            if (got[key] is None) != (value is None) or (value is not None and got[key] != pytest.approx(value)):
                return None
        return api

    api: list[dict[str, Any]] = _wait("/api/metrics to equal the batch reference", equal, timeout)
    return api


@pytest.fixture(scope="module")
def workers(broker: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[WorkerProcess]]:
    """Two workers of one deployment: same app id and topics, their own ports and data dirs."""
    local = deployment(broker, tmp_path_factory.mktemp("workers"))
    try:
        started = [local.start(name, wait=False) for name in WORKERS]
        for worker in started:
            worker.wait_ready()
        yield started
    finally:
        local.stop_all()


def _instance(worker: WorkerProcess) -> str:
    return f"127.0.0.1:{worker.settings.web_port}"


@pytest.fixture(scope="module")
def prometheus(workers: list[WorkerProcess], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prometheus]:
    binary = shutil.which("prometheus")
    assert binary is not None, "Debian's prometheus is not installed: `make tools` (apt-get install prometheus)"
    workdir = tmp_path_factory.mktemp("prometheus")
    (workdir / "rules").mkdir()
    rule_files = [f"rules/{name}" for name in _rules_copy(workdir / "rules")]
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "rule_files": rule_files,
        "scrape_configs": [
            {
                "job_name": "revpulse",
                "static_configs": [{"targets": [_instance(worker) for worker in workers]}],
            }
        ],
    }
    (workdir / "prometheus.yml").write_text(yaml.safe_dump(config, sort_keys=False))
    port = free_port()
    log = workdir / "prometheus.log"
    with log.open("wb") as handle:
        process = subprocess.Popen(
            [
                binary,
                f"--config.file={workdir / 'prometheus.yml'}",
                f"--storage.tsdb.path={workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=handle,
            stderr=subprocess.STDOUT,
        )
    server = Prometheus(f"http://127.0.0.1:{port}", log)

    def ready() -> bool:
        if process.poll() is not None:
            raise RuntimeError(f"prometheus exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{server.url}/-/ready", timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    try:
        _wait("prometheus to be ready", ready, 30)
        yield server
    finally:
        terminate(process, 10)


@pytest.fixture(scope="module")
def baseline(
    workers: list[WorkerProcess], prometheus: Prometheus, tmp_path_factory: pytest.TempPathFactory
) -> Baseline:
    events = [event for _, event in generate(SYNTH, events=EVENTS)]
    replay_events(workers[0], tmp_path_factory.mktemp("log") / "events.jsonl", events, timeout=60)
    api, *others = [_settled(worker, events, 60) for worker in workers]
    assert all(other == api for other in others), "the workers serve different series"
    (as_of,) = {record["as_of"] for record in api}
    consumed_at = time.time()

    def scraped_after(promql: str, since: float) -> bool:
        return max(prometheus.query(f"timestamp({promql})").values(), default=0.0) > since

    def every_worker_scraped() -> bool:
        stamps = prometheus.get("/api/v1/query", query='timestamp(up{job="revpulse"} == 1)')["result"]
        return len(stamps) == len(workers) and all(float(stamp["value"][1]) > consumed_at for stamp in stamps)

    # a scrape of every worker after they had consumed everything, then a rule evaluation after those scrapes
    _wait("a scrape of every worker after the replay", every_worker_scraped, 15)
    scraped_at = max(
        float(stamp["value"][1])
        for stamp in prometheus.get("/api/v1/query", query='timestamp(up{job="revpulse"})')["result"]
    )
    _wait("a rule evaluation after it", lambda: scraped_after("revpulse:customer_churn_rate:max", scraped_at), 15)
    return Baseline(api, datetime.fromisoformat(as_of.replace("Z", "+00:00")), events)


@pytest.mark.parametrize("index", range(len(WORKERS)), ids=WORKERS)
def test_promql_returns_every_series_of_the_api(
    workers: list[WorkerProcess], prometheus: Prometheus, baseline: Baseline, index: int
) -> None:
    metrics = {record["metric"] for record in baseline.api}
    scraped = prometheus.query(f'{{job="revpulse", instance="{_instance(workers[index])}", __name__=~"revpulse_.+"}}')
    got: dict[frozenset[tuple[str, str]], float] = {}
    for labels, value in scraped.items():
        name = dict(labels)["__name__"].removeprefix("revpulse_")
        if name in metrics:
            got[frozenset((k, v) for k, v in labels if k != "__name__") | {("metric", name)}] = value
    # undefined values (null in the API) are absent from Prometheus
    expected = {
        _labels(record, metric=record["metric"]): record["value"]
        for record in baseline.api
        if record["value"] is not None
    }
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, rel=1e-12, abs=1e-12), dict(key)


# (metric, label matchers): the `max without (instance)` form that dashboards and alerts use over N workers
SAMPLES: list[tuple[str, dict[str, tuple[str, ...]]]] = [
    ("mrr", {}),
    ("arpa", {"segment": ("all", *SEGMENTS)}),
    ("customers", {"segment": ("all", *SEGMENTS)}),
    ("win_rate", {"window": ("30d",)}),
    ("nrr", {}),
    ("mrr_movement", {"window": ("30d",)}),
    ("mrr_movement", {"segment": ("smb",)}),
    ("stage_conversion_rate", {"window": ("90d",), "segment": ("all", "enterprise")}),
    ("open_pipeline_amount", {}),
]


@pytest.mark.parametrize(("metric", "matchers"), SAMPLES)
def test_aggregated_queries_match_the_api(
    prometheus: Prometheus, baseline: Baseline, metric: str, matchers: dict[str, tuple[str, ...]]
) -> None:
    selector = ", ".join(f'{label}=~"{"|".join(values)}"' for label, values in matchers.items())
    promql = f"max without (instance) (revpulse_{metric}{{{selector}}})"
    got = prometheus.query(promql)
    # every worker serves the same global values: the aggregation only folds identical series
    assert prometheus.query(promql.replace("max without", "min without")) == got
    assert set(prometheus.query(promql.replace("max without", "count without")).values()) == {len(WORKERS)}
    expected = {
        labels: value
        for labels, value in _api_values(baseline.api, metric).items()
        if value is not None and all(dict(labels)[label] in values for label, values in matchers.items())
    }
    assert expected, f"the worker has no defined {metric} for {matchers}"
    assert got.keys() == expected.keys(), promql
    for labels, value in expected.items():
        assert got[labels] == pytest.approx(value, rel=1e-12, abs=1e-12), (promql, dict(labels))
    if metric == "mrr_movement":
        assert {dict(labels)["kind"] for labels in got} == {"new", "expansion", "contraction", "churn", "reactivation"}
    if "segment" not in matchers:
        assert {dict(labels)["segment"] for labels in got} >= {"all", *SEGMENTS}


def test_the_alert_rules_recording_rule_matches_the_api(prometheus: Prometheus, baseline: Baseline) -> None:
    got = {
        frozenset((k, v) for k, v in labels if k != "__name__"): value
        for labels, value in prometheus.query("revpulse:customer_churn_rate:max").items()
    }
    expected = {k: v for k, v in _api_values(baseline.api, "customer_churn_rate").items() if v is not None}
    assert got.keys() == expected.keys()
    for labels, value in expected.items():
        assert got[labels] == pytest.approx(value, rel=1e-12, abs=1e-12), dict(labels)


def test_operational_series(prometheus: Prometheus, baseline: Baseline) -> None:
    # a per-process counter: summed over the workers, one outcome per event read (accepted or duplicate)
    events = prometheus.query('sum without (instance) (revpulse_events_total{job="revpulse"})')
    assert sum(events.values()) == len(baseline.events)
    # the two workers share the work: each counted some of the events
    per_worker = prometheus.get("/api/v1/query", query='sum by (instance) (revpulse_events_total{job="revpulse"})')
    assert len(per_worker["result"]) == len(WORKERS)
    assert all(float(sample["value"][1]) > 0 for sample in per_worker["result"]), per_worker["result"]
    (watermark,) = prometheus.query("max without (instance) (revpulse_watermark_timestamp_seconds)").values()
    assert watermark == pytest.approx(baseline.as_of.timestamp(), abs=1e-3)  # REVPULSE_CLOCK=event
    (info,) = prometheus.query("max without (instance) (revpulse_info)").items()
    assert dict(info[0])["currency"] == "USD" and info[1] == 1


def _subscriptions_of(events: list[dict[str, Any]], segment: str) -> list[tuple[str, str]]:
    """(account_id, subscription_id) of every subscription of the accounts whose latest segment is `segment`."""
    latest: dict[str, tuple[int, str]] = {}
    subscriptions: dict[str, set[str]] = {}
    for event in events:
        account = event.get("account_id")
        if not account:
            continue
        at = event["occurred_at"]
        ms = at if isinstance(at, int) else int(datetime.fromisoformat(at.replace("Z", "+00:00")).timestamp() * 1000)
        if event.get("segment") and ms >= latest.get(account, (-1, ""))[0]:
            latest[account] = (ms, event["segment"])
        if event["type"].startswith("subscription."):
            subscriptions.setdefault(account, set()).add(event["subscription_id"])
    return sorted(
        (account, sub)
        for account, subs in subscriptions.items()
        if latest.get(account, (0, ""))[1] == segment
        for sub in subs
    )


def test_churn_spike_raises_the_churn_alert(
    workers: list[WorkerProcess], prometheus: Prometheus, baseline: Baseline, tmp_path: Path
) -> None:
    rules = [rule for group in prometheus.get("/api/v1/rules")["groups"] for rule in group["rules"]]
    (churn_rule,) = [rule for rule in rules if rule.get("name") == CHURN_ALERT]
    assert churn_rule["health"] == "ok", churn_rule
    assert all(rule["health"] == "ok" for rule in rules), [r for r in rules if r["health"] != "ok"]

    # Before the spike the segment's churn is defined (it has paying customers) and below the threshold.
    before = _api_values(baseline.api, "customer_churn_rate")[
        frozenset({"segment": SPIKE_SEGMENT, "window": "30d"}.items())
    ]
    assert before is not None
    time.sleep(2)  # a couple of rule evaluations on the baseline
    quiet = [a for a in prometheus.alerts(CHURN_ALERT) if a["labels"]["segment"] == SPIKE_SEGMENT]
    assert not quiet, f"{CHURN_ALERT} is already active for {SPIKE_SEGMENT} at churn {before}: {quiet}"

    # The spike: every subscription of the segment's accounts is canceled a minute after the last event.
    at = (baseline.as_of + timedelta(minutes=1)).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    cancels = [
        {
            "event_id": f"spike-{n}",
            "type": "subscription.canceled",
            "occurred_at": at,
            "account_id": account,
            "subscription_id": subscription,
        }
        for n, (account, subscription) in enumerate(_subscriptions_of(baseline.events, SPIKE_SEGMENT))
    ]
    assert len(cancels) >= 10
    replay_events(workers[0], tmp_path / "spike.jsonl", cancels, timeout=60)
    for worker in workers:
        _settled(worker, baseline.events + cancels, 30)

    def churn_alert() -> list[dict[str, Any]]:
        return [
            alert
            for alert in prometheus.alerts(CHURN_ALERT)
            if alert["labels"]["segment"] == SPIKE_SEGMENT and alert["state"] in ("pending", "firing")
        ]

    (alert,) = _wait(f"{CHURN_ALERT} for segment {SPIKE_SEGMENT}", churn_alert, 20)
    assert alert["labels"]["window"] == "30d"
    assert float(alert["value"]) > 0.05
    assert alert["labels"]["severity"]
    assert alert["annotations"]["summary"] and alert["annotations"]["description"]
