"""docker-compose.yml and the Prometheus config it mounts, checked with the real tools (no Docker engine needed).

`docker-compose config` validates the file and resolves anchors and relative paths; the tests read its output, so
they check what Compose would actually run. The topic-creation script of `kafka-init` is run for real, against a
stub `kafka-topics.sh` that records its arguments, and so is the secrets check of `secrets-init`.

The stack's secrets come from an `.env` the user fills in: the tests give Compose their own values (an env file of
the test's, never a `.env` that may lie in the checkout) and check that it refuses to start without them.
"""

from __future__ import annotations

import itertools
import os
import shutil
import stat
import subprocess
import tempfile
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from revpulse.settings import Settings, SettingsError, Topics
from tests.support.paths import ROOT

COMPOSE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
PROMETHEUS_CONFIG = ROOT / "ops" / "prometheus" / "prometheus.yml"
WORKERS = ("worker-1", "worker-2")
NINETY_SEVEN_DAYS_MS = 97 * 86_400_000  # longest window (90 d) + default allowed lateness (7 d)
# What a user puts in .env (test values: not the example ones).
SECRETS = {
    "REVPULSE_READ_TOKEN": "3f1c9a0d2b7e4c6f8a1d3e5b7c9f0a2d",
    "GRAFANA_ADMIN_PASSWORD": "a-grafana-password-of-the-test",
}
REQUIRED = ("REVPULSE_READ_TOKEN", "GRAFANA_ADMIN_PASSWORD")
# Compose variables that may carry a value of the user's own into the files (and so must come from .env).
COMPOSE_VARIABLES = {*REQUIRED, "GRAFANA_ADMIN_USER", "GRAFANA_ANONYMOUS_VIEWERS"}


def _env_file(directory: Path, values: dict[str, str]) -> Path:
    path = directory / "compose.env"
    path.write_text("".join(f"{name}={value}\n" for name, value in values.items()))
    return path


def _compose(*args: str, env_file: Path | None = None) -> subprocess.CompletedProcess[str]:
    """`docker-compose` on the repo's file, with `env_file` in place of a `.env` (none: an empty one)."""
    assert shutil.which("docker-compose"), "docker-compose is not installed: `make tools`"
    environment = {k: v for k, v in os.environ.items() if k not in COMPOSE_VARIABLES}
    with tempfile.TemporaryDirectory() as scratch:
        if env_file is None:
            env_file = Path(scratch) / "empty.env"
            env_file.write_text("")
        return subprocess.run(
            ["docker-compose", "-f", str(COMPOSE), "--env-file", str(env_file), *args],
            cwd=ROOT,
            env=environment,
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )


@pytest.fixture(scope="module")
def services(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """The services of `docker-compose config`: anchors merged, paths absolute, ports and depends_on long form."""
    done = _compose("config", env_file=_env_file(tmp_path_factory.mktemp("compose"), SECRETS))
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


def _ports(service: dict[str, Any]) -> list[tuple[str | None, int, int]]:
    """(host address or None, host port, container port) of each published port, from the short form
    (`[ip:]published:target[/proto]`, what docker-compose 1.x prints when an address is given) or the long one."""
    ports: list[tuple[str | None, int, int]] = []
    for port in service.get("ports", []):
        if isinstance(port, dict):
            ports.append((port.get("host_ip"), int(port["published"]), int(port["target"])))
            continue
        *address, published, target = str(port).split("/")[0].split(":")
        ports.append((":".join(address) or None, int(published), int(target)))
    return ports


def _host_ports(service: dict[str, Any]) -> dict[int, int]:
    """Host port → container port."""
    return {published: target for _, published, target in _ports(service)}


def _read_only_mounts(service: dict[str, Any]) -> set[str]:
    """Container paths mounted read-only."""
    targets = set()
    for volume in service.get("volumes", []):
        if isinstance(volume, str):
            _, target, *mode = volume.split(":")
            if mode and "ro" in mode[0].split(","):
                targets.add(target)
        elif volume.get("read_only"):
            targets.add(volume["target"])
    return targets


def test_compose_file_is_valid(tmp_path: Path) -> None:
    done = _compose("config", "-q", env_file=_env_file(tmp_path, SECRETS))
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("missing", REQUIRED)
def test_compose_refuses_to_start_without_the_secrets(tmp_path: Path, missing: str) -> None:
    values = {name: value for name, value in SECRETS.items() if name != missing}
    for env_file in (_env_file(tmp_path, values), _env_file(tmp_path, {**values, missing: ""})):
        done = _compose("config", "-q", env_file=env_file)
        assert done.returncode != 0
        assert f"set {missing} in .env (cp .env.example .env)" in done.stderr, done.stderr


def test_env_example_names_every_secret_with_an_example_value() -> None:
    example = _parse_env(ENV_EXAMPLE)
    assert set(REQUIRED) <= set(example)
    for name in REQUIRED:
        assert "change-me" in example[name], f"{name}: the example value must be recognisable as one"
    assert example["GRAFANA_ANONYMOUS_VIEWERS"] == "false"
    assert ".env" in (ROOT / ".gitignore").read_text().splitlines(), ".env must stay out of git"


def _parse_env(path: Path) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if line.strip() and line[0] != "#")
    return {name.strip(): value.strip() for name, value in pairs}


def _run_secrets_init(services: dict[str, dict[str, Any]], tmp_path: Path, env: dict[str, str]) -> tuple[int, str]:
    """Run secrets-init's script as the container would, writing to `tmp_path/secrets`, with a `chown` stub that
    logs its arguments (the test does not run as root)."""
    init = services["secrets-init"]
    (tmp_path / "secrets").mkdir(exist_ok=True)
    stubs = tmp_path / "bin"
    stubs.mkdir(exist_ok=True)
    chown = stubs / "chown"
    chown.write_text(f'#!/bin/sh\nprintf "%s\\n" "$*" >> {tmp_path / "chown.log"}\n')
    chown.chmod(0o755)
    script = init["command"][0].replace("$$", "$").replace("/secrets/", f"{tmp_path}/secrets/")
    shell = shutil.which("sh") or "/bin/sh"
    done = subprocess.run(
        [shell, *init["entrypoint"][1:], script],
        env={"PATH": f"{stubs}:{os.environ['PATH']}", **env},
        capture_output=True,
        text=True,
        check=False,
    )
    return done.returncode, done.stderr


def test_secrets_init_checks_the_secrets_and_writes_the_token_for_prometheus(
    services: dict[str, dict[str, Any]], tmp_path: Path
) -> None:
    init = services["secrets-init"]
    assert init["image"] == services["prometheus"]["image"], "no other image to pull"
    assert init["entrypoint"][:1] == ["/bin/sh"]
    assert init.get("restart") == "no"
    # Compose itself hands it the .env values.
    assert {name: init["environment"][name] for name in REQUIRED} == SECRETS
    status, stderr = _run_secrets_init(services, tmp_path, SECRETS)
    assert status == 0, stderr
    token = tmp_path / "secrets" / "read_token"
    assert token.read_text() == SECRETS["REVPULSE_READ_TOKEN"]  # no newline: sent as is
    assert stat.S_IMODE(token.stat().st_mode) == 0o400
    assert (tmp_path / "chown.log").read_text() == f"65534:65534 {tmp_path}/secrets/read_token\n"


@pytest.mark.parametrize(
    ("override", "reason"),
    [
        ("example", "is still the example value"),
        ({"REVPULSE_READ_TOKEN": "CHANGEME-0123456789abcdef"}, "REVPULSE_READ_TOKEN is still the example value"),
        ({"REVPULSE_READ_TOKEN": "short-token"}, "REVPULSE_READ_TOKEN must be at least 16 characters"),
        ({"GRAFANA_ADMIN_PASSWORD": "admin"}, "GRAFANA_ADMIN_PASSWORD must be at least 12 characters"),
        ({"GRAFANA_ADMIN_PASSWORD": "please change me now"}, "GRAFANA_ADMIN_PASSWORD is still the example value"),
    ],
)
def test_secrets_init_refuses_the_example_or_weak_secrets(
    services: dict[str, dict[str, Any]], tmp_path: Path, override: str | dict[str, str], reason: str
) -> None:
    env = _parse_env(ENV_EXAMPLE) if override == "example" else {**SECRETS, **override}  # type: ignore[dict-item]
    status, stderr = _run_secrets_init(services, tmp_path, env)
    assert status == 1
    assert reason in stderr and "refusing to start" in stderr, stderr
    assert not (tmp_path / "secrets" / "read_token").exists()


def test_the_workers_refuse_the_example_token_too() -> None:
    """Started without secrets-init (another orchestrator, `docker run`), a worker still refuses it."""
    example = _parse_env(ENV_EXAMPLE)["REVPULSE_READ_TOKEN"]
    with pytest.raises(SettingsError, match=r"^REVPULSE_READ_TOKEN: still the example value"):
        Settings.from_env({"REVPULSE_READ_TOKEN": example})


def test_every_service_waits_for_secrets_init(services: dict[str, dict[str, Any]]) -> None:
    for name in (*WORKERS, "prometheus", "grafana"):
        condition = services[name]["depends_on"]["secrets-init"]["condition"]
        assert condition == "service_completed_successfully", name


def test_every_port_is_published_on_loopback_only(services: dict[str, dict[str, Any]]) -> None:
    published = 0
    for name, service in services.items():
        for address, port, _ in _ports(service):
            assert address == "127.0.0.1", f"{name}: port {port} is published on every interface"
            published += 1
        assert service.get("network_mode") != "host", name
    assert published >= 6
    assert "ports" not in services["kafka"], "the broker stays inside the compose network"


def test_the_read_token_is_wired_between_the_workers_and_prometheus(
    services: dict[str, dict[str, Any]], prometheus_config: dict[str, Any]
) -> None:
    for name in WORKERS:
        env = services[name]["environment"]
        assert env["REVPULSE_READ_TOKEN"] == SECRETS["REVPULSE_READ_TOKEN"], name
        assert env["REVPULSE_WEB_HOST"] == "0.0.0.0", f"{name}: Prometheus reaches it over the compose network"
        Settings.from_env({k: str(v) for k, v in env.items()})  # the worker accepts its settings
    job = next(job for job in prometheus_config["scrape_configs"] if job["job_name"] == "revpulse")
    authorization = job["authorization"]
    assert authorization.get("type", "Bearer") == "Bearer"
    token_in_container = PurePosixPath("/etc/prometheus") / authorization["credentials_file"]
    # Prometheus mounts the volume secrets-init writes, read-only, where the config points.
    prometheus = services["prometheus"]
    volume = _named_volumes(prometheus)[str(token_in_container.parent)]
    assert str(token_in_container.parent) in _read_only_mounts(prometheus)
    init = services["secrets-init"]
    (init_target,) = [target for target, name in _named_volumes(init).items() if name == volume]
    assert f"> {init_target}/{token_in_container.name}" in init["command"][0]


def test_grafana_has_no_anonymous_viewers_and_no_default_password(services: dict[str, dict[str, Any]]) -> None:
    env = services["grafana"]["environment"]
    assert env["GF_AUTH_ANONYMOUS_ENABLED"] == "false"
    assert env["GF_SECURITY_ADMIN_PASSWORD"] == SECRETS["GRAFANA_ADMIN_PASSWORD"]
    assert env["GF_USERS_ALLOW_SIGN_UP"] == "false"


def test_prometheus_lifecycle_api_is_off(services: dict[str, dict[str, Any]]) -> None:
    assert not [arg for arg in services["prometheus"]["command"] if "enable-lifecycle" in arg]
    assert not [arg for arg in services["prometheus"]["command"] if "enable-admin-api" in arg]


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
    for worker in (one, two):
        assert worker["depends_on"]["secrets-init"]["condition"] == "service_completed_successfully"


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


def test_prometheus_config_passes_promtool(tmp_path: Path) -> None:
    assert shutil.which("promtool"), "promtool is not installed: `make tools` (apt-get install prometheus)"
    # rule_files and the token file are relative to the config's directory: the full check runs on the layout
    # of the container (config, rules, and the token secrets-init writes), built from the repo's files.
    shutil.copy(PROMETHEUS_CONFIG, tmp_path / "prometheus.yml")
    shutil.copytree(PROMETHEUS_CONFIG.parent / "rules", tmp_path / "rules")
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "read_token").write_text(SECRETS["REVPULSE_READ_TOKEN"])
    for args in (["--syntax-only", str(PROMETHEUS_CONFIG)], [str(tmp_path / "prometheus.yml")]):
        done = subprocess.run(["promtool", "check", "config", *args], capture_output=True, text=True, check=False)
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
        listening = {target for _, _, target in _ports(service)} | {
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
