"""History (SPEC §5) end to end: two workers replay a 220-day log with late events; `/api/history` on each and
`revpulse history --format openmetrics` equal the batch reference at past midnights, and so does a real Prometheus
started on the blocks `promtool tsdb create-blocks-from openmetrics` made of that export."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from revpulse.local.broker import free_port
from revpulse.local.processes import WorkerProcess, terminate
from revpulse.synth.config import SynthConfig
from revpulse.synth.delivery import generate
from tests.support.deployment import deployment, replay_events
from tests.support.reference import RefSettings, compute

pytestmark = pytest.mark.integration

DAY_US = 86_400 * 1_000_000
SYNTH = SynthConfig(accounts=150, days=220, seed=11)
EVENTS = 9_000
# Series read at past midnights, each named by its labels as `/api/history` takes them.
CHECKED = (
    {"metric": "mrr", "segment": "all"},
    {"metric": "customers", "segment": "smb"},
    {"metric": "nrr", "segment": "all", "window": "90d"},
    {"metric": "net_new_mrr", "segment": "enterprise", "window": "30d"},
    {"metric": "active_accounts", "segment": "all", "window": "7d"},
    {"metric": "leads_in_stage", "segment": "all", "stage": "mql"},
    {"metric": "stage_conversion_rate", "segment": "all", "window": "30d", "from": "lead", "to": "mql"},
)


def _key(metric: str, labels: dict[str, str]) -> str:
    inner = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    return f"{metric}{{{inner}}}"


def _wait(what: str, check: Any, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while not (result := check()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.5)
    return result


@pytest.fixture(scope="module")
def replayed(broker: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[list[WorkerProcess], list]]:
    """Two workers that consumed the whole log, and the log as (topic, bytes) records."""
    root = tmp_path_factory.mktemp("history")
    events = [event for _, event in generate(SYNTH, events=EVENTS)]
    records = [(topic, orjson.dumps(event)) for topic, event in generate(SYNTH, events=EVENTS)]
    local = deployment(broker, root, REVPULSE_SHARDS="4")
    try:
        workers = [local.start(name, wait=False) for name in ("w1", "w2")]
        for worker in workers:
            worker.wait_ready()
        replay_events(workers[0], root / "log.jsonl", events)
        expected = compute(records, RefSettings(fx_rates={"EUR": 1.08})).series

        def settled() -> bool:
            for worker in workers:
                got = {_key(r["metric"], r["labels"]): r["value"] for r in orjson.loads(worker.get("/api/metrics")[1])}
                if got.keys() != expected.keys() or any(
                    (got[k] is None) != (v is None) or (v is not None and got[k] != pytest.approx(v))
                    for k, v in expected.items()
                ):
                    return False
            return True

        _wait("every worker to equal the reference", settled, 240)
        yield workers, records
    finally:
        local.stop_all()


def _reference_at(records: list, day: int) -> dict[str, float | None]:
    return compute(records, RefSettings(fx_rates={"EUR": 1.08}), as_of_us=day).series


def _history(worker: WorkerProcess, query: dict[str, str]) -> dict[str, Any]:
    status, body = worker.get(f"/api/history?{urllib.parse.urlencode(query)}")
    assert status == 200, body
    return orjson.loads(body)


def test_every_worker_serves_the_reference_at_past_midnights(replayed: tuple[list[WorkerProcess], list]) -> None:
    workers, records = replayed

    def agreed() -> list[list[dict[str, Any]]] | None:
        answers = [[_history(worker, query) for query in CHECKED] for worker in workers]
        return answers if answers[0] == answers[1] else None

    # A worker's live metrics can equal the reference a moment before its points do: the revisions of past
    # points from the last batches of the other worker's shards may still be on their way (seen: 0.8 s).
    answers = _wait("every worker to answer the same history", agreed, 60)
    points = answers[0][0]["points"]
    assert len(points) >= 200, "one point per midnight since the first event"
    days = [point["at"] for point in points if _parse(point["at"]) >= _final_horizon(points)]
    # Every 10th midnight not yet final (SPEC §5: older ones may miss what arrives after them) and the last three:
    # each equals the reference at as_of = that midnight.
    assert len(days) >= 90
    for at in sorted({*days[::10], *days[-3:]}):
        day = round(_parse(at))
        expected = _reference_at(records, day)
        for query, answer in zip(CHECKED, answers[0], strict=True):
            labels = {k: v for k, v in query.items() if k != "metric"}
            want = expected[_key(query["metric"], labels)]
            got = {p["at"]: p["value"] for p in answer["points"]}[at]
            assert (got is None) == (want is None) and (want is None or got == pytest.approx(want)), (
                query,
                at,
                got,
                want,
            )


def test_a_query_naming_several_series_says_which_labels_to_add(replayed: tuple[list[WorkerProcess], list]) -> None:
    status, body = replayed[0][0].get("/api/history?metric=mrr")
    assert status == 400 and b"add labels" in body


def test_openmetrics_backfill_into_a_real_prometheus(
    replayed: tuple[list[WorkerProcess], list], tmp_path: Path
) -> None:
    workers, records = replayed
    export = tmp_path / "history.om"
    subprocess.run(
        [
            *(sys.executable, "-m", "revpulse.cli", "history", "--format", "openmetrics"),
            *("--label", "job=revpulse", "--output", str(export)),
        ],
        env=os.environ | workers[0].env,
        capture_output=True,
        timeout=180,
        check=True,
    )
    text = export.read_text()
    assert text.endswith("# EOF\n") and "# TYPE revpulse_mrr gauge" in text
    promtool, prometheus = shutil.which("promtool"), shutil.which("prometheus")
    assert promtool and prometheus, "Debian's prometheus is not installed: `make tools`"
    blocks = tmp_path / "data"
    subprocess.run([promtool, "tsdb", "create-blocks-from", "openmetrics", str(export), str(blocks)], check=True)
    port = free_port()
    with (tmp_path / "prometheus.log").open("wb") as log:
        process = subprocess.Popen(
            [
                prometheus,
                f"--config.file={_config(tmp_path)}",
                f"--storage.tsdb.path={blocks}",
                "--storage.tsdb.retention.time=20y",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        url = f"http://127.0.0.1:{port}"
        _wait("prometheus", lambda: _ready(url), 30)
        points = _history(workers[0], CHECKED[0])["points"]
        for point in [p for p in points if _parse(p["at"]) >= _final_horizon(points)][::20]:
            day = round(_parse(point["at"]))
            want = _reference_at(records, day)[_key("mrr", {"segment": "all"})]
            query = urllib.parse.urlencode(
                {"query": 'revpulse_mrr{job="revpulse",segment="all"}', "time": str(day // 1_000_000)}
            )
            with urllib.request.urlopen(f"{url}/api/v1/query?{query}", timeout=10) as response:
                result = orjson.loads(response.read())["data"]["result"]
            assert len(result) == 1 and float(result[0]["value"][1]) == pytest.approx(want), point["at"]
    finally:
        terminate(process, 10)


def _config(directory: Path) -> Path:
    path = directory / "prometheus.yml"
    path.write_text("global:\n  scrape_interval: 1m\n")
    return path


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/-/ready", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def _final_horizon(points: list[dict[str, Any]]) -> float:
    """SPEC §5: a point older than watermark − 90 d − allowed lateness (7 d) is final; the last point is the
    watermark's day."""
    return _parse(points[-1]["at"]) - 97 * DAY_US


def _parse(at: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(at.replace("Z", "+00:00")).timestamp() * 1_000_000
