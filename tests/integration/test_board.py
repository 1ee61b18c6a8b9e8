"""The board at `/` (issue 15, item 4) in a real browser: Debian's headless Chromium, driven by Selenium, opens the
board of a worker that replayed a known log, behind a read token given once as `?token=`. The numbers shown are
those of `/api/metrics`, each chart has the points of `/api/history`, the segment and window selectors change
them, and the browser logs no error (a refused inline script, a failed request). A screenshot is saved under the
test's temporary directory."""

from __future__ import annotations

import shutil
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select

from revpulse.local.processes import WorkerProcess
from revpulse.synth.config import SynthConfig
from revpulse.synth.delivery import generate
from tests.support.deployment import deployment, replay_events

pytestmark = pytest.mark.integration

TOKEN = "board-read-token-0123456789"
BEARER = {"Authorization": f"Bearer {TOKEN}"}
SYNTH = SynthConfig(accounts=150, days=150, seed=5)
EVENTS = 7_000
CHROMIUM, CHROMEDRIVER = "chromium", "chromedriver"
# The board's headline cards: metric -> windowed (as board.js has them).
HEADLINES = {
    "mrr": False,
    "arr": False,
    "nrr": True,
    "grr": True,
    "customer_churn_rate": True,
    "net_new_mrr": True,
    "pipeline_velocity": True,
    "win_rate": True,
    "cac": True,
}
RATIOS = {"nrr", "grr", "customer_churn_rate", "win_rate"}
KINDS = ("new", "expansion", "reactivation", "contraction", "churn")

# Everything the page shows, read in one call.
READ_PAGE = """
const count = (d) => (d ? (d.match(/[ML]/g) || []).length : 0);
const cards = [...document.querySelectorAll(".card")].map((card) => {
  const value = card.querySelector(".value");
  const svg = card.querySelector("svg.trend");
  return {
    metric: card.dataset.metric,
    value: value.dataset.value,
    text: value.firstChild ? value.firstChild.textContent : "",
    points: svg ? Number(svg.dataset.points) : null,
    defined: svg ? Number(svg.dataset.defined) : null,
    vertices: svg ? count(svg.querySelector("path.line").getAttribute("d")) : null,
  };
});
const stacked = document.querySelector("#movements-chart svg");
const kinds = {};
for (const kind of ["new", "expansion", "reactivation", "contraction", "churn"]) {
  kinds[kind] = stacked ? Number(stacked.dataset["points" + kind[0].toUpperCase() + kind.slice(1)]) : null;
}
const legend = {};
for (const item of document.querySelectorAll("#movements-legend li")) {
  legend[item.dataset.kind] = item.querySelector(".amount").textContent;
}
return {
  cards, kinds, legend,
  bars: document.querySelectorAll("#movements-chart rect").length,
  segments: [...document.querySelectorAll("#segment option")].map((o) => o.value),
  rendered: document.body.dataset.rendered,
  status: document.getElementById("status").textContent,
};
"""


def _wait(what: str, check: Any, timeout: float, interval: float = 0.25) -> Any:
    deadline = time.monotonic() + timeout
    while not (result := check()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)
    return result


def _api(worker: WorkerProcess, path: str) -> Any:
    status, body = worker.get(path, BEARER)
    assert status == 200, (path, body)
    return orjson.loads(body)


@pytest.fixture(scope="module")
def worker(broker: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerProcess]:
    """A worker behind a read token that consumed the whole log and settled."""
    root = tmp_path_factory.mktemp("board")
    events = [event for _, event in generate(SYNTH, events=EVENTS)]
    local = deployment(broker, root, REVPULSE_READ_TOKEN=TOKEN)
    try:
        worker = local.start("w1")
        replay_events(worker, root / "log.jsonl", events)
        _wait("every event to be consumed", lambda: _api(worker, "/healthz")["events"] == len(events), 60)
        previous: list[bytes] = []

        def settled() -> bool:
            # Published twice alike, a second apart: the rollup holds every shard's last partials.
            previous.append(worker.get("/api/metrics", BEARER)[1])
            return len(previous) > 1 and previous[-1] == previous[-2]

        _wait("the metrics to settle", settled, 30, interval=1.0)
        yield worker
    finally:
        local.stop_all()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    chromium, chromedriver = shutil.which(CHROMIUM), shutil.which(CHROMEDRIVER)
    assert chromium and chromedriver, "Debian's chromium and chromium-driver are not installed: `make tools`"
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(chromedriver), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def _record(records: list[dict[str, Any]], metric: str, labels: dict[str, str]) -> dict[str, Any]:
    (record,) = [r for r in records if r["metric"] == metric and r["labels"] == labels]
    return record


def _shown_number(text: str) -> float:
    return float(text.replace(",", "").replace("%", ""))


def _check_text(metric: str, text: str, value: float | None) -> None:
    if value is None:
        assert text == "—", (metric, text)
    elif metric in RATIOS:
        assert text.endswith("%") and _shown_number(text) / 100 == pytest.approx(value, abs=0.0006), (metric, text)
    else:
        assert _shown_number(text) == pytest.approx(value, abs=0.006 if abs(value) < 100 else 0.51), (metric, text)


def _show(driver: Any, segment: str, window: str) -> dict[str, Any]:
    """Pick the segment and window in the page's selectors; what the page shows once it has drawn them."""
    for element, value in (("segment", segment), ("window", window)):
        menu = Select(driver.find_element(By.ID, element))
        if menu.first_selected_option.get_attribute("value") != value:
            menu.select_by_value(value)
    wanted = f"{segment}|{window}"
    return _wait(
        f"the board to draw {wanted}",
        lambda: (page := driver.execute_script(READ_PAGE))["rendered"] == wanted and page,
        20,
    )


def _check_page(worker: WorkerProcess, page: dict[str, Any], segment: str, window: str) -> dict[str, float | None]:
    """The page against /api/metrics and /api/history; the values shown, by metric."""
    records = _api(worker, "/api/metrics")
    shown: dict[str, float | None] = {}
    assert [card["metric"] for card in page["cards"]] == list(HEADLINES)
    for card in page["cards"]:
        metric = card["metric"]
        labels = {"segment": segment} | ({"window": window} if HEADLINES[metric] else {})
        value = _record(records, metric, labels)["value"]
        assert orjson.loads(card["value"]) == value, (metric, labels, card)
        _check_text(metric, card["text"], value)
        history = _api(worker, f"/api/history?{urllib.parse.urlencode({'metric': metric, **labels})}")["points"]
        defined = sum(point["value"] is not None for point in history)
        assert (card["points"], card["defined"], card["vertices"]) == (len(history), defined, defined), (metric, card)
        shown[metric] = value
    bars = 0
    for kind in KINDS:
        labels = {"segment": segment, "window": window, "kind": kind}
        history = _api(worker, f"/api/history?{urllib.parse.urlencode({'metric': 'mrr_movement', **labels})}")
        assert page["kinds"][kind] == len(history["points"]), kind
        bars += sum(1 for point in history["points"] if point["value"])
        _check_text(kind, page["legend"][kind], _record(records, "mrr_movement", labels)["value"])
    assert page["bars"] == bars, "one bar piece per nonzero movement amount"
    assert page["status"].startswith("as of "), page["status"]
    return shown


def test_the_board_is_behind_the_read_token_given_once_in_its_address(worker: WorkerProcess) -> None:
    assert worker.get("/")[0] == 401
    assert worker.get("/?token=wrong-token-0123456789")[0] == 401
    # The query token opens the board's page only: every other path still wants the header.
    assert worker.get(f"/api/metrics?token={TOKEN}")[0] == 401
    status, body = worker.get(f"/?token={TOKEN}")
    assert status == 200 and b"<title>RevPulse board</title>" in body
    assert worker.get("/", BEARER)[0] == 200


def test_the_board_shows_the_api_numbers_and_history_per_segment(
    worker: WorkerProcess, browser: Any, tmp_path: Path
) -> None:
    browser.get(f"{worker.base_url}/?token={TOKEN}")
    records = _api(worker, "/api/metrics")
    page = _show(browser, "all", "30d")
    assert page["segments"][0] == "all"
    assert set(page["segments"]) == {r["labels"]["segment"] for r in records}
    everyone = _check_page(worker, page, "all", "30d")
    assert min(card["points"] for card in page["cards"]) >= 100, "a trend of months, not a dot"

    smb = _check_page(worker, _show(browser, "smb", "30d"), "smb", "30d")
    assert smb["mrr"] != everyone["mrr"] and smb["arr"] != everyone["arr"], "the segment selector changes them"
    weekly = _check_page(worker, _show(browser, "smb", "7d"), "smb", "7d")
    assert weekly["mrr"] == smb["mrr"] and weekly["net_new_mrr"] != smb["net_new_mrr"], "the window selector too"
    # The token was given once: the page keeps it for this tab and sends it as a bearer header.
    assert browser.execute_script("return sessionStorage.getItem('revpulse.read_token')") == TOKEN

    _show(browser, "all", "30d")
    # The whole page in one picture: a viewport as tall as the page (a window is capped by the screen's size).
    height = browser.execute_script("return document.documentElement.scrollHeight")
    metrics = {"width": 1400, "height": height, "deviceScaleFactor": 1, "mobile": False}
    browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)
    _wait("the page to draw again", lambda: browser.execute_script(READ_PAGE)["rendered"] == "all|30d", 10)
    screenshot = tmp_path / "board.png"
    assert browser.save_screenshot(str(screenshot))
    print(f"board screenshot: {screenshot}")
    logged = browser.get_log("browser")
    assert [entry for entry in logged if entry["level"] in ("SEVERE", "ERROR")] == [], logged
