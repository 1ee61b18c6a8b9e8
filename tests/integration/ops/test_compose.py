"""docker-compose.yml and the Prometheus config it mounts, checked with the real tools (no Docker engine needed).

`docker-compose config` validates the file and resolves anchors and relative paths; the tests read its output, so
they check what Compose would actually run. The topic-creation script of `kafka-init` is run for real, against a
stub `kafka-topics.sh` that records its arguments.
"""

from __future__ import annotations

import itertools
import shutil
import stat
import subprocess
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from revpulse.settings import Topics
from tests.support.paths import ROOT

COMPOSE = ROOT / "docker-compose.yml"
PROMETHEUS_CONFIG = ROOT / "ops" / "prometheus" / "prometheus.yml"
WORKERS = ("worker-1", "worker-2")
NINETY_SEVEN_DAYS_MS = 97 * 86_400_000  # longest window (90 d) + default allowed lateness (7 d)


def _compose(*args: str) -> subprocess.CompletedProcess[str]:
    assert shutil.which("docker-compose"), "docker-compose is not installed: `make tools`"
    return subprocess.run(
        ["docker-compose", "-f", str(COMPOSE), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


@pytest.fixture(scope="module")
def services() -> dict[str, dict[str, Any]]:
    """The services of `docker-compose config`: anchors merged, paths absolute, ports and depends_on long form."""
    done = _compose("config")
    assert done.returncode == 0, done.stderr
    return yaml.safe_load(done.stdout)["services"]  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def prometheus_config() -> dict[str, Any]:
    return yaml.safe_load(PROMETHEUS_CONFIG.read_text())  # type: ignore[no-any-return]


def _bind_mounts(service: dict[str, Any]) -> dict[str, Path]:
    """Container path → host path of the service's bind mounts (named volumes left out)."""
    mounts: dict[str, Path] = {}
    for volume in service.get("volumes", []):
        source, target, *_ = volume.split(":") if isinstance(volume, str) else (volume["source"], volume["target"])
        if source.startswith("/"):
            mounts[target] = Path(source)
    return mounts


def _named_volumes(service: dict[str, Any]) -> dict[str, str]:
    """Container path → volume name of the service's named volumes."""
    named: dict[str, str] = {}
    for volume in service.get("volumes", []):
        source, target, *_ = volume.split(":") if isinstance(volume, str) else (volume["source"], volume["target"])
        if not source.startswith("/"):
            named[target] = source
    return named


def _host_ports(service: dict[str, Any]) -> dict[int, int]:
    """Host port → container port."""
    return {int(port["published"]): int(port["target"]) for port in service.get("ports", [])}


def test_compose_file_is_valid() -> None:
    done = _compose("config", "-q")
    assert done.returncode == 0, done.stderr


def test_every_image_is_pinned(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        if "build" in service:
            continue  # built here from the repo's Dockerfile
        image = service["image"]
        assert ":" in image and not image.endswith(":latest"), f"{name}: pin the image version ({image})"


def test_kafka_is_apache_kafka_single_node_kraft_with_a_healthcheck(services: dict[str, dict[str, Any]]) -> None:
    kafka = services["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    env = {key: str(value) for key, value in kafka["environment"].items()}
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    node = env["KAFKA_NODE_ID"]
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == f"{node}@kafka:9093"  # a single voter: itself
    assert "ZOOKEEPER" not in " ".join(env)
    assert env["CLUSTER_ID"]
    for key in (
        "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR",
        "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR",
        "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR",
        "KAFKA_DEFAULT_REPLICATION_FACTOR",
    ):
        assert env[key] == "1", key
    assert "PLAINTEXT://kafka:9092" in env["KAFKA_ADVERTISED_LISTENERS"]
    assert env["KAFKA_LOG_DIRS"] in _named_volumes(kafka), "the broker's data must be on a volume"
    test = kafka["healthcheck"]["test"]
    assert test[0] in ("CMD", "CMD-SHELL") and "kafka-broker-api-versions.sh" in " ".join(test)


def test_kafka_init_creates_the_topics(services: dict[str, dict[str, Any]], tmp_path: Path) -> None:
    init = services["kafka-init"]
    assert init["image"] == services["kafka"]["image"]
    assert init["depends_on"]["kafka"]["condition"] == "service_healthy"
    assert init["entrypoint"][0].endswith("bash")
    # Run the script as the container would, with a stub kafka-topics.sh that logs its arguments.
    log = tmp_path / "calls"
    stub = tmp_path / "kafka-topics.sh"
    stub.write_text(f'#!/bin/bash\nprintf "%s\\n" "$*" >> {log}\n')
    stub.chmod(stub.stat().st_mode | stat.S_IXUSR)
    script = init["command"][0].replace("$$", "$").replace("/opt/kafka/bin/kafka-topics.sh", str(stub))
    done = subprocess.run(
        [shutil.which("bash") or "/bin/bash", *init["entrypoint"][1:], script], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    created: dict[str, dict[str, str]] = {}
    for call in log.read_text().splitlines():
        if "--create" not in call:
            continue
        args = call.split()
        options: dict[str, str] = {"--bootstrap-server": "", "--replication-factor": "", "--partitions": ""}
        configs: dict[str, str] = {}
        for flag, value in itertools.pairwise(args):
            if flag == "--config":
                key, _, config_value = value.partition("=")
                configs[key] = config_value
            elif flag.startswith("--"):
                options[flag] = value
        assert options["--bootstrap-server"] == "kafka:9092"
        assert options["--replication-factor"] == "1"
        assert "--if-not-exists" in args, "kafka-init must be re-runnable"
        created[options["--topic"]] = {"partitions": options["--partitions"], **configs}
    topics = Topics()
    assert set(created) == {*topics.inputs, topics.metrics, topics.deadletter}
    assert created[topics.metrics]["cleanup.policy"] == "compact"
    for topic in topics.inputs:
        assert int(created[topic]["partitions"]) >= len(WORKERS), "every worker should own input partitions"
        # a worker rebuilds its state from the input topics: they must keep 90 days + lateness (or forever)
        retention = int(created[topic].get("retention.ms", 7 * 86_400_000))
        assert retention == -1 or retention >= NINETY_SEVEN_DAYS_MS, topic
        assert created[topic].get("cleanup.policy", "delete") == "delete", topic


def test_two_workers_of_one_deployment(services: dict[str, dict[str, Any]]) -> None:
    one, two = (services[name] for name in WORKERS)
    for worker in (one, two):
        assert Path(worker["build"]["context"]) == ROOT
        assert (ROOT / worker["build"].get("dockerfile", "Dockerfile")).is_file()
        assert worker["command"] == ["worker"]
        assert worker["environment"]["REVPULSE_BROKER"] == "kafka://kafka:9092"
        assert worker["depends_on"]["kafka"]["condition"] == "service_healthy"
        assert worker["depends_on"]["kafka-init"]["condition"] == "service_completed_successfully"
        assert "healthcheck" in worker
    assert one["image"] == two["image"]
    assert one["build"] == two["build"]
    # same app id = same consumer group: the two split the partitions of one deployment
    assert one["environment"]["REVPULSE_APP_ID"] == two["environment"]["REVPULSE_APP_ID"]
    data = [_named_volumes(w)[w["environment"]["REVPULSE_DATA_DIR"]] for w in (one, two)]
    assert data[0] != data[1], "each worker needs its own data volume"
    web = [int(w["environment"]["REVPULSE_WEB_PORT"]) for w in (one, two)]
    assert _host_ports(one) == {6066: web[0]}
    assert _host_ports(two) == {6067: web[1]}


def test_bind_mounts_exist_in_the_repo(services: dict[str, dict[str, Any]]) -> None:
    expected = {
        "prometheus": {"/etc/prometheus/prometheus.yml": "file", "/etc/prometheus/rules": "dir"},
        "alertmanager": {"/etc/alertmanager/alertmanager.yml": "file"},
        "grafana": {"/etc/grafana/provisioning": "dir", "/var/lib/grafana/dashboards": "dir"},
    }
    for name, targets in expected.items():
        mounts = _bind_mounts(services[name])
        assert set(targets) <= set(mounts), name
        for target, kind in targets.items():
            source = mounts[target]
            assert source.is_relative_to(ROOT), f"{name}: {source} is outside the repo"
            assert source.is_file() if kind == "file" else source.is_dir(), f"{name}: {source} missing"
    for name, service in services.items():
        for target, source in _bind_mounts(service).items():
            assert source.exists(), f"{name}: bind mount {source} -> {target} does not exist"


def test_prometheus_config_passes_promtool() -> None:
    assert shutil.which("promtool"), "promtool is not installed: `make tools` (apt-get install prometheus)"
    # rule_files are relative to the config's directory, so the repo layout is checked as it is mounted
    done = subprocess.run(
        ["promtool", "check", "config", str(PROMETHEUS_CONFIG)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_prometheus_scrapes_every_worker_and_loads_the_rules(
    services: dict[str, dict[str, Any]], prometheus_config: dict[str, Any]
) -> None:
    prometheus = services["prometheus"]
    mounts = _bind_mounts(prometheus)
    config_in_container = PurePosixPath(
        next(arg.split("=", 1)[1] for arg in prometheus["command"] if arg.startswith("--config.file="))
    )
    assert mounts[str(config_in_container)] == PROMETHEUS_CONFIG

    jobs = {job["job_name"]: job for job in prometheus_config["scrape_configs"]}
    revpulse = jobs["revpulse"]
    assert revpulse.get("metrics_path", "/metrics") == "/metrics"
    targets = {target for static in revpulse["static_configs"] for target in static["targets"]}
    workers = {name for name, service in services.items() if service.get("command") == ["worker"]}
    assert workers == set(WORKERS)
    assert targets == {f"{name}:{services[name]['environment']['REVPULSE_WEB_PORT']}" for name in workers}

    # every rule glob, resolved in the container, lies in a mounted repo directory that has rule files
    assert prometheus_config["rule_files"]
    for pattern in prometheus_config["rule_files"]:
        in_container = config_in_container.parent / pattern
        mounted = next(
            (source for target, source in mounts.items() if in_container.is_relative_to(target)),
            None,
        )
        assert mounted is not None, f"{pattern}: not mounted into the container"
        in_repo = PROMETHEUS_CONFIG.parent / pattern
        assert mounted == in_repo.parent, pattern
        assert list(in_repo.parent.glob(in_repo.name)), f"no rule file matches {pattern}"

    alertmanagers = [
        target
        for manager in prometheus_config["alerting"]["alertmanagers"]
        for static in manager["static_configs"]
        for target in static["targets"]
    ]
    assert alertmanagers == ["alertmanager:9093"]
    assert 9093 in _host_ports(services["alertmanager"]).values()


def test_alertmanager_webhooks_reach_a_compose_service(services: dict[str, dict[str, Any]]) -> None:
    config = yaml.safe_load((ROOT / "ops" / "alertmanager" / "alertmanager.yml").read_text())
    urls = [hook["url"] for receiver in config["receivers"] for hook in receiver.get("webhook_configs", [])]
    assert urls, "the example route has a webhook receiver"
    for url in urls:
        parts = urlsplit(url)
        assert parts.hostname in services, f"{url}: no such compose service"
        service = services[parts.hostname]
        port = parts.port or 80
        listening = {int(p["target"]) for p in service.get("ports", [])} | {
            int(value) for key, value in service.get("environment", {}).items() if key.endswith("PORT")
        }
        assert port in listening, f"{url}: {parts.hostname} does not listen on {port}"


def test_grafana_is_provisioned_from_the_repo(
    services: dict[str, dict[str, Any]], prometheus_config: dict[str, Any]
) -> None:
    grafana = services["grafana"]
    assert 3000 in _host_ports(grafana)
    provisioning = _bind_mounts(grafana)["/etc/grafana/provisioning"]
    datasources = [
        source
        for path in sorted((provisioning / "datasources").glob("*.y*ml"))
        for source in (yaml.safe_load(path.read_text()) or {}).get("datasources", [])
    ]
    prometheus_sources = [source for source in datasources if source.get("type") == "prometheus"]
    assert prometheus_sources, "a Prometheus datasource is provisioned"
    for source in prometheus_sources:
        url = urlsplit(source["url"])
        assert (url.hostname, url.port) == ("prometheus", 9090), source["url"]
        # Grafana derives $__rate_interval from the datasource's scrape interval
        time_interval = source.get("jsonData", {}).get("timeInterval")
        assert time_interval in (None, prometheus_config["global"]["scrape_interval"]), time_interval
    providers = [
        provider
        for path in sorted((provisioning / "dashboards").glob("*.y*ml"))
        for provider in (yaml.safe_load(path.read_text()) or {}).get("providers", [])
    ]
    assert providers, "a dashboard provider is provisioned"
    mounted = set(_bind_mounts(grafana))
    for provider in providers:
        path = provider["options"]["path"]
        assert any(PurePosixPath(path).is_relative_to(target) for target in mounted), path
    dashboards = _bind_mounts(grafana)["/var/lib/grafana/dashboards"]
    assert list(dashboards.rglob("*.json")), "the dashboards directory has boards"
