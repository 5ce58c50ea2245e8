"""`rollout report`: the decision record of a real demo rollout, as JSON (its numbers equal the
registry's) and as an HTML page opened in headless Chromium (Debian's chromium and chromium-driver,
driven by Selenium): screenshot taken, one chart per statistic with as many points as the report
has looks, no request to the network, and the page's numbers those of the history."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from manager.db import Database
from manager.history import audit

from .browser_support import browser
from .conftest import Cli

pytestmark = pytest.mark.slow  # one demo rollout for the module


@pytest.fixture(scope="module")
def report(demo_promoted: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("json") / "report.json"
    result = Cli(demo_promoted)("rollout", "report", "1", "--format", "json", "-o", str(out))
    assert result.exit_code == 0, result.output
    return json.loads(out.read_text())


def test_the_report_holds_the_registrys_numbers(demo_promoted: Path, report: dict[str, Any]) -> None:
    database = Database(f"sqlite:///{demo_promoted}")
    try:
        events = {e.seq: e for e in audit.history(database, audit.HistoryFilter(limit=None))}
    finally:
        database.dispose()
    assert report["rollout"]["state"] == "promoted" and report["rollout"]["started_by"] == "demo"
    for event in report["events"]:  # every event as the chain has it
        stored = events[event["seq"]]
        assert (event["hash"], event["prev_hash"], event["action"]) == (
            stored.hash,
            stored.prev_hash,
            stored.action,
        )
    decision = report["decision"]
    assert decision["action"] == "rollout.promote"
    assert decision["payload"] == json.loads(events[decision["seq"]].payload)
    assert report["policy"]["check"] == ["the text matches its hash and the history"]
    assert [s["step"] for s in report["steps"]] == list(range(len(report["steps"])))
    assert all(s["reached_at"] for s in report["steps"])  # a promoted rollout went through every step
    by_name = {m["metric"]: m for m in report["metrics"]}
    assert set(by_name) == {"accuracy", "5xx", "latency"}
    errors = [p for p in by_name["5xx"]["points"] if p["source"] == "window"]
    assert len(errors) >= 3 and all(p["threshold"] == 20.0 for p in errors)
    requests = [p["candidate_requests"] for p in errors]
    assert requests == sorted(requests), "samples only grow over time"
    looks = [p for p in by_name["accuracy"]["points"] if p["source"] == "decision"]
    assert looks and looks[-1]["seq"] == decision["seq"]
    assert looks[-1]["improvement_low"] == decision["payload"]["metrics"]["accuracy"]["improvement_low"]


@pytest.fixture(scope="module")
def page(demo_promoted: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, Path]]:
    folder = tmp_path_factory.mktemp("html")
    path = folder / "rollout-1.html"
    assert Cli(demo_promoted)("rollout", "report", "1", "-o", str(path)).exit_code == 0
    driver = browser()
    try:
        driver.get(path.as_uri())
        from selenium.webdriver.support.ui import WebDriverWait

        WebDriverWait(driver, 30).until(
            lambda d: d.find_element("tag name", "body").get_attribute("data-charts")
        )
        yield driver, folder
    finally:
        driver.quit()


def test_the_page_draws_every_chart_with_every_point(page: tuple[Any, Path], report: dict[str, Any]) -> None:
    driver, folder = page
    charts = {c["id"]: c for c in driver.execute_script("return window.reportCharts")}
    # each phase's start and end, and where it ended: the promoted candidate at 100% (issue 31)
    assert charts["weights"]["points"] == 2 * len(report["phases"]) + 1
    for i, metric in enumerate(report["metrics"]):
        if metric["points"]:
            assert charts[f"stat-{i}"]["points"] == len(metric["points"]), metric["metric"]
            assert charts[f"samples-{i}"]["points"] == len(metric["points"])
    drawn = driver.execute_script("return document.querySelectorAll('.uplot canvas').length")
    assert drawn == len(charts)
    shot = folder / "report.png"
    assert driver.save_screenshot(str(shot))
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000


def test_the_page_makes_no_network_request(page: tuple[Any, Path]) -> None:
    driver, _ = page
    resources = driver.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    assert resources == []
    requested = [
        json.loads(entry["message"])["message"]["params"]["request"]["url"]
        for entry in driver.get_log("performance")
        if '"Network.requestWillBeSent"' in entry["message"]
    ]
    assert all(url.startswith("file://") for url in requested), requested


def test_the_pages_numbers_are_the_historys(page: tuple[Any, Path], report: dict[str, Any]) -> None:
    driver, _ = page
    text = driver.find_element("tag name", "body").text
    for event in report["events"]:
        assert event["hash"] in text
    decision = report["decision"]
    assert f"seq {decision['seq']}" in text and decision["hash"] in text
    assert report["policy"]["hash"] in text and "name: demo-canary" in text


def test_a_reason_that_opens_a_comment_in_a_script_leaves_the_charts_drawn(
    demo_promoted: Path, tmp_path: Path
) -> None:
    """Issue 28, finding 4: `<!--<script>` in a reason put the embedded JSON's script element into
    the HTML parser's "double escaped" state, and the page lost its data and its charts."""
    import shutil

    from manager.registry.rollouts import record_event
    from manager.registry.tables import Rollout

    copy = tmp_path / "registry.db"
    shutil.copy(demo_promoted, copy)
    database = Database(f"sqlite:///{copy}")
    reason = "looked fine <!--<script>document.title='pwned'</script> & more"
    try:
        with database.write() as session:
            rollout = session.get(Rollout, 1)
            assert rollout is not None
            record_event(session, rollout, "mallory", "rollout.note", reason, {"why": reason})
    finally:
        database.dispose()
    path = tmp_path / "rollout-1.html"
    assert Cli(copy)("rollout", "report", "1", "-o", str(path)).exit_code == 0
    assert "<!--<script>" not in path.read_text().split('id="report-data"')[1].split("</script>")[0]
    driver = browser()
    try:
        driver.get(path.as_uri())
        from selenium.webdriver.support.ui import WebDriverWait

        WebDriverWait(driver, 30).until(
            lambda d: d.find_element("tag name", "body").get_attribute("data-charts")
        )
        charts = driver.execute_script("return window.reportCharts")
        assert charts and driver.execute_script(
            "return document.querySelectorAll('.uplot canvas').length"
        ) == len(charts)
        assert driver.title != "pwned"
        data = driver.execute_script("return JSON.parse(document.getElementById('report-data').textContent)")
        assert any(e.get("reason") == reason for e in data["events"]), "the reason itself is kept, as written"
    finally:
        driver.quit()
