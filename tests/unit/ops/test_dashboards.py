"""Grafana dashboards (ops/grafana/dashboards/*.json) and their provisioning, checked statically.

Every query must parse as PromQL once Grafana's variables are substituted, and every `revpulse_*` series it selects
must exist, with the labels it matches on, in the exposition of a real pipeline fed by the synthetic business.
The business variables are substituted with sentinels, so a selector can be seen to use `$segment` / `$window`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from typing import Any

import orjson
import promql_parser
import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from revpulse.settings import Settings
from revpulse.streams.catalogue import HELP
from revpulse.streams.pipeline import InputRecord, Pipeline
from revpulse.streams.windows import WINDOWS
from revpulse.synth.config import SynthConfig
from revpulse.synth.delivery import generate
from tests.support.paths import ROOT

GRAFANA = ROOT / "ops" / "grafana"
DASHBOARDS = GRAFANA / "dashboards"
DATASOURCE_UID = "revpulse-prometheus"
DATASOURCE = {"type": "prometheus", "uid": DATASOURCE_UID}
BUSINESS = ("revenue", "sales", "marketing", "product")
BOARDS = (*BUSINESS, "operations")
SEGMENTS = ["all", *Settings().segments, "other", "unknown"]
SEGMENT_VALUE = "__segment_variable__"
WINDOW_VALUE = "__window_variable__"
# Grafana's own variables, substituted with values of their kind; a board's variables come from its templating.
BUILTIN_VARIABLES = {"__rate_interval": "1m", "__interval": "15s", "__range": "1h"}
BUSINESS_VARIABLES = {"segment": SEGMENT_VALUE, "window": WINDOW_VALUE}
# `$var`, `${var}`, `${var:format}` and the deprecated `[[var]]`.
VARIABLE = re.compile(r"\$\{(\w+)(?::[^}]*)?\}|\$(\w+)|\[\[(\w+)\]\]")
NOT_REVPULSE = {"up"}  # Prometheus' own per-target series, the only other name a board may use
TARGET_LABELS = {"job", "instance"}  # attached by the scrape, not in the exposition


@dataclass(frozen=True)
class Selector:
    name: str
    matchers: dict[str, str]  # label -> matched value (any operator)


@dataclass(frozen=True)
class Query:
    board: str
    panel: dict[str, Any]
    expr: str  # as written in the board

    @property
    def where(self) -> str:
        return f"{self.board} / {self.panel.get('title')!r}: {self.expr}"


@cache
def load(board: str) -> dict[str, Any]:
    data = json.loads((DASHBOARDS / f"revpulse-{board}.json").read_text())
    assert isinstance(data, dict)
    return data


def panels(board: str) -> Iterator[dict[str, Any]]:
    """Every panel, including those nested in a collapsed row."""
    for panel in load(board)["panels"]:
        yield panel
        yield from panel.get("panels", [])


def queries(board: str) -> Iterator[Query]:
    for panel in panels(board):
        for target in panel.get("targets", []):
            yield Query(board, panel, target["expr"])


def variables(board: str) -> dict[str, str]:
    own = {var["name"] for var in load(board).get("templating", {}).get("list", [])}
    return BUILTIN_VARIABLES | {name: value for name, value in BUSINESS_VARIABLES.items() if name in own}


def substitute(board: str, expr: str) -> str:
    known = variables(board)

    def value(match: re.Match[str]) -> str:
        name = next(group for group in match.groups() if group)
        assert name in known, f"{board}: unknown variable ${name} in {expr}"
        return known[name]

    return VARIABLE.sub(value, expr)


def selectors(board: str, expr: str) -> list[Selector]:
    found: list[Selector] = []

    def visit(node: object) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            matchers = {m.name: m.value for m in node.matchers.matchers}
            found.append(Selector(node.name or matchers.get("__name__", ""), matchers))

    promql_parser.walk(promql_parser.parse(substitute(board, expr)), pre_visit=visit)
    return found


def metric_of(name: str) -> str:
    """`revpulse_win_rate` -> `win_rate` (the catalogue's key)."""
    return name.removeprefix("revpulse_")


@pytest.fixture(scope="module")
def exposition() -> dict[str, set[str]]:
    """Series name -> label names, from a real pipeline's /metrics text after 5,000 synthetic events.

    A labelled family with no child yet (the consumer lag, set by the ingest agent) still exposes its name.
    """
    pipeline = Pipeline(Settings(clock="event", fx_rates={"EUR": 1.08}))
    events = generate(SynthConfig(accounts=200, days=40), events=5000)
    pipeline.process([InputRecord(t, 0, i, orjson.dumps(e), 0.0) for i, (t, e) in enumerate(events)])
    text = generate_latest(pipeline.registry).decode()
    names: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        if not family.samples and family.type == "gauge":
            names[family.name] = set()
        for sample in family.samples:
            names.setdefault(sample.name, set()).update(sample.labels)
    assert {"revpulse_mrr", "revpulse_events_total", "revpulse_processing_lag_seconds_bucket"} <= names.keys()
    return names


def test_every_board_is_valid_json_with_a_stable_uid_title_and_panels() -> None:
    assert sorted(path.name for path in DASHBOARDS.glob("*.json")) == sorted(f"revpulse-{b}.json" for b in BOARDS)
    for board in BOARDS:
        data = load(board)
        assert data["uid"] == f"revpulse-{board}"
        assert data["title"].strip()
        assert data["schemaVersion"] >= 36, "Grafana 10.x/11.x schema"
        assert isinstance(data["panels"], list) and data["panels"]
        ids = [panel["id"] for panel in panels(board)]
        assert len(ids) == len(set(ids)), f"{board}: duplicate panel ids"
        for panel in panels(board):
            assert panel["title"].strip() and set(panel["gridPos"]) == {"h", "w", "x", "y"}


@pytest.mark.parametrize("board", BOARDS)
def test_every_query_parses_as_promql(board: str) -> None:
    found = list(queries(board))
    assert found
    errors = []
    for query in found:
        try:
            promql_parser.parse(substitute(board, query.expr))
        except ValueError as exc:
            errors.append(f"{query.where}: {exc}")
    assert not errors, "\n".join(errors)


@pytest.mark.parametrize("board", BOARDS)
def test_every_series_and_matched_label_exists_in_the_real_exposition(
    board: str, exposition: dict[str, set[str]]
) -> None:
    errors = []
    for query in queries(board):
        for selector in selectors(board, query.expr):
            if selector.name in NOT_REVPULSE:
                continue
            if selector.name not in exposition:
                errors.append(f"{query.where}: no series {selector.name!r} in the exposition")
                continue
            unknown = set(selector.matchers) - exposition[selector.name] - TARGET_LABELS
            if unknown:
                errors.append(f"{query.where}: {selector.name} has no label {sorted(unknown)}")
    assert not errors, "\n".join(errors)


@pytest.mark.parametrize("board", BOARDS)
def test_every_panel_has_a_unit_and_a_description(board: str) -> None:
    for panel in panels(board):
        if panel["type"] == "row":  # layout only: a row holds no query
            assert not panel.get("targets")
            continue
        assert panel["fieldConfig"]["defaults"].get("unit"), f"{board} / {panel['title']!r}: no unit"
        assert panel.get("description", "").strip(), f"{board} / {panel['title']!r}: no description"
        assert panel["targets"], f"{board} / {panel['title']!r}: no query"


@pytest.mark.parametrize("board", BOARDS)
def test_every_datasource_is_the_provisioned_prometheus(board: str) -> None:
    def references(node: object) -> Iterator[object]:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "datasource":
                    yield value
                else:
                    yield from references(value)
        elif isinstance(node, list):
            for item in node:
                yield from references(item)

    assert all(ref == DATASOURCE for ref in references(load(board)))
    for panel in panels(board):
        if panel["type"] != "row":
            assert panel["datasource"] == DATASOURCE
            assert all(target["datasource"] == DATASOURCE for target in panel["targets"])


@pytest.mark.parametrize("board", BUSINESS)
def test_business_boards_have_the_segment_and_window_variables(board: str) -> None:
    found = {var["name"]: var for var in load(board)["templating"]["list"]}
    for name, values, default in (("segment", SEGMENTS, "all"), ("window", list(WINDOWS), "30d")):
        var = found[name]
        assert var["type"] == "custom" and not var.get("multi") and not var.get("includeAll")
        assert [v.strip() for v in var["query"].split(",")] == values
        assert [option["value"] for option in var["options"]] == values
        assert var["current"]["value"] == default


@pytest.mark.parametrize("board", BUSINESS)
def test_business_queries_select_the_chosen_segment_and_window(board: str, exposition: dict[str, set[str]]) -> None:
    errors = []
    for query in queries(board):
        chosen = selectors(board, query.expr)
        assert chosen, query.where
        for selector in chosen:
            if selector.matchers.get("segment") != SEGMENT_VALUE:
                errors.append(f"{query.where}: {selector.name} does not select segment=$segment")
            windowed = "window" in exposition.get(selector.name, set())
            if windowed and selector.matchers.get("window") != WINDOW_VALUE:
                errors.append(f"{query.where}: {selector.name} does not select window=$window")
    assert not errors, "\n".join(errors)


@pytest.mark.parametrize("board", BOARDS)
def test_descriptions_define_every_metric_they_show(board: str) -> None:
    """A panel's description names each series it queries; for business metrics, with the catalogue's definition."""
    errors = []
    for query in queries(board):
        description = query.panel["description"]
        for selector in selectors(board, query.expr):
            if selector.name in NOT_REVPULSE:
                continue
            family = re.sub(r"_(bucket|sum|count)$", "", selector.name)
            if family not in description:
                errors.append(f"{query.where}: description does not name {family}")
            metric = metric_of(selector.name)
            if metric in HELP and HELP[metric] not in description:
                errors.append(f"{query.where}: description lacks the definition of {metric}")
    assert not errors, "\n".join(errors)


def test_the_business_boards_show_every_catalogue_metric() -> None:
    shown = {
        metric_of(selector.name)
        for board in BUSINESS
        for query in queries(board)
        for selector in selectors(board, query.expr)
    }
    assert set(HELP) - shown == set()


def test_provisioning_points_grafana_at_the_prometheus_and_the_boards() -> None:
    datasource = (GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text()
    for line in ("type: prometheus", f"uid: {DATASOURCE_UID}", "url: http://prometheus:9090", "isDefault: true"):
        assert re.search(rf"^\s*-?\s*{re.escape(line)}\s*$", datasource, re.MULTILINE), line
    provider = (GRAFANA / "provisioning" / "dashboards" / "revpulse.yml").read_text()
    for line in ("type: file", "folder: RevPulse", "path: /var/lib/grafana/dashboards"):
        assert re.search(rf"^\s*-?\s*{re.escape(line)}\s*$", provider, re.MULTILINE), line
