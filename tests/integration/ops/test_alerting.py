"""The alert rules and the Alertmanager config, checked with the real tools and read back in Python.

`promtool check rules` / `promtool test rules` (Debian `prometheus`) and `amtool check-config` (Debian
`prometheus-alertmanager`) must pass; `make test` installs both. The Python checks pin what the tools do not:
every alert is labelled and annotated, unit-tested firing and not firing, routed by its severity, and reads only
metric names that the worker really exposes.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from revpulse.settings import Settings
from revpulse.streams.catalogue import HELP
from revpulse.streams.pipeline import Pipeline
from tests.support.paths import ROOT

RULES = ROOT / "ops" / "prometheus" / "rules" / "revpulse-alerts.yml"
RULE_TESTS = ROOT / "ops" / "prometheus" / "tests" / "revpulse-alerts.test.yml"
ALERTMANAGER = ROOT / "ops" / "alertmanager" / "alertmanager.yml"
PROMETHEUS_CONFIG = ROOT / "ops" / "prometheus" / "prometheus.yml"

SEVERITIES = ("page", "ticket", "info")
JOB = "revpulse"
# The operational series of SPEC §5 (and the consumer lag gauge), as the worker names them.
OPERATIONAL = {
    "revpulse_events_total",
    "revpulse_watermark_timestamp_seconds",
    "revpulse_processing_lag_seconds_bucket",
    "revpulse_processing_lag_seconds_sum",
    "revpulse_processing_lag_seconds_count",
    "revpulse_consumer_lag_records",
    "revpulse_info",
}
METRIC_NAME = re.compile(r"(?<![\w:])revpulse_[A-Za-z0-9_]+")
RECORDED_NAME = re.compile(r"(?<![\w:])revpulse:[A-Za-z0-9_:]+")
# Sample names a prometheus_client family of each type exposes.
SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "info": ("_info",),
}


def _tool(name: str, package: str, *args: str) -> subprocess.CompletedProcess[str]:
    if shutil.which(name) is None:
        pytest.fail(f"{name} is not installed: apt-get install {package} (make test does it)")
    return subprocess.run([name, *args], cwd=ROOT, capture_output=True, text=True, check=False, timeout=300)


@cache
def _load(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def _rules() -> list[dict[str, Any]]:
    return [rule for group in _load(RULES)["groups"] for rule in group["rules"]]


def _alerts() -> list[dict[str, Any]]:
    return [rule for rule in _rules() if "alert" in rule]


def _texts(rule: dict[str, Any]) -> list[str]:
    """The PromQL and the templates of a rule: every place a metric name can appear."""
    return [str(rule["expr"]), *map(str, rule.get("annotations", {}).values())]


def _exposed_names() -> set[str]:
    """Every sample name of the worker's real registry, plus the `revpulse_<metric>` gauges of the catalogue."""
    pipeline = Pipeline(Settings(clock="event"))
    names = {f"revpulse_{metric}" for metric in HELP}
    for family in pipeline.registry.collect():
        names |= {family.name + suffix for suffix in SUFFIXES[family.type]}
    return names


# -- the real tools --------------------------------------------------------------------------------------------


def test_promtool_check_rules() -> None:
    done = _tool("promtool", "prometheus", "check", "rules", str(RULES))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_promtool_unit_tests_pass() -> None:
    done = _tool("promtool", "prometheus", "test", "rules", str(RULE_TESTS))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_amtool_check_config() -> None:
    done = _tool("amtool", "prometheus-alertmanager", "check-config", str(ALERTMANAGER))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


@pytest.mark.parametrize("severity", SEVERITIES)
def test_each_severity_reaches_its_receiver(severity: str) -> None:
    done = _tool(
        "amtool",
        "prometheus-alertmanager",
        "config",
        "routes",
        "test",
        f"--config.file={ALERTMANAGER}",
        f"--verify.receivers=revpulse-{severity}",
        f"severity={severity}",
        "alertname=RevPulseExample",
        "segment=smb",
    )
    assert done.returncode == 0, done.stdout + done.stderr


# -- the rule file, read back ----------------------------------------------------------------------------------


def test_the_rules_cover_every_alert_of_issue_4() -> None:
    assert {rule["alert"] for rule in _alerts()} >= {
        "RevPulseCustomerChurnHigh",
        "RevPulseNRRLow",
        "RevPulsePipelineVelocityDropped",
        "RevPulseWinRateDropped",
        "RevPulseNoEventsAccepted",
        "RevPulseDeadLetterRateHigh",
        "RevPulseWatermarkLagging",
        "RevPulseWorkerDown",
    }


def test_every_alert_has_a_severity_a_summary_and_a_description() -> None:
    names = [rule["alert"] for rule in _alerts()]
    assert len(names) == len(set(names)), "alert names are unique"
    for rule in _alerts():
        name = rule["alert"]
        assert rule.get("labels", {}).get("severity") in SEVERITIES, name
        annotations = rule.get("annotations", {})
        for key in ("summary", "description"):
            assert str(annotations.get(key, "")).strip(), f"{name}: no {key}"
        assert "{{" in annotations["summary"] + annotations["description"], f"{name}: annotations show no value"


def test_rules_use_only_metric_names_the_worker_exposes() -> None:
    exposed = _exposed_names()
    assert exposed >= OPERATIONAL, "the worker's registry has every operational series"
    used = {name for rule in _rules() for text in _texts(rule) for name in METRIC_NAME.findall(text)}
    assert used, "the rules read revpulse_* series"
    assert used <= exposed, f"not exposed by the worker: {sorted(used - exposed)}"


def test_recorded_series_are_defined_before_use() -> None:
    recorded = {rule["record"] for rule in _rules() if "record" in rule}
    assert all(RECORDED_NAME.fullmatch(name) for name in recorded), "recording rules are named revpulse:<...>"
    used = {name for rule in _rules() for text in _texts(rule) for name in RECORDED_NAME.findall(text)}
    assert used <= recorded, f"never recorded: {sorted(used - recorded)}"


def test_worker_alerts_match_the_scrape_job() -> None:
    jobs = {job["job_name"] for job in _load(PROMETHEUS_CONFIG)["scrape_configs"]}
    assert JOB in jobs
    for rule in _alerts():
        for job in re.findall(r'up\{job="([^"]+)"\}', str(rule["expr"])):
            assert job == JOB, rule["alert"]


def test_every_alert_is_unit_tested_firing_and_not_firing() -> None:
    firing: set[str] = set()
    silent: set[str] = set()
    for case in _load(RULE_TESTS)["tests"]:
        for check in case.get("alert_rule_test", []):
            (firing if check.get("exp_alerts") else silent).add(check["alertname"])
    alerts = {rule["alert"] for rule in _alerts()}
    assert alerts <= firing, f"never shown firing: {sorted(alerts - firing)}"
    assert alerts <= silent, f"never shown not firing: {sorted(alerts - silent)}"


def test_unit_tests_pin_every_label_and_annotation_of_a_firing_alert() -> None:
    alerts = {rule["alert"]: rule for rule in _alerts()}
    for case in _load(RULE_TESTS)["tests"]:
        for check in case.get("alert_rule_test", []):
            rule = alerts[check["alertname"]]
            for expected in check.get("exp_alerts") or []:
                assert expected["exp_labels"]["severity"] == rule["labels"]["severity"], case["name"]
                assert set(expected["exp_annotations"]) == set(rule["annotations"]), case["name"]
