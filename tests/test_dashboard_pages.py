"""Issue 31's dashboard, in headless Chromium at 1280 px against a real daemon (`--http`) and the local
SageMaker: the rollouts list updates live while a rollout runs to its end; the finished rollout's page
draws the final weight, y axes as wide as their labels (a minus sign included), x labels that do not
overlap, and nothing wider than the window; the endpoint's page shows each variant's hosting and
scaling, its traffic from CloudWatch per variant, and its past rollouts. Screenshots are kept."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from .browser_support import browser, screenshot
from .daemon_support import log_file, start_daemon
from .rollout_support import CANARY, ENDPOINT, make_world, policy_text
from .test_dashboard import _up, free_port, until

LATENCY = """  - {name: latency, source: cloudwatch, measure: model_latency_ms, kind: mean,
     higherIsBetter: false, role: guardrail, test: {type: sequential, margin: 50}, minSamples: 0,
     onNoData: pass}
"""


def _fits(driver: Any) -> None:
    """Nothing on the page is wider than the window (no sideways scrolling at 1280 px)."""
    wide = driver.execute_script("return document.documentElement.scrollWidth")
    assert wide <= driver.execute_script("return window.innerWidth"), wide


def _axes_hold(charts: list[dict[str, Any]]) -> None:
    for chart in charts:
        assert chart["yAxis"] >= chart["yLabel"] + 4, chart  # the whole label, sign and all
        assert chart["xClearance"] > 0, chart  # x labels never touch


@pytest.mark.slow
def test_lists_update_live_and_finished_pages_draw_whole(tmp_path: Path, artifacts: dict[str, Path]) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with make_world(tmp_path, artifacts) as world, world.traffic():
        daemon = start_daemon(
            world.host.url, world.db, "--http", f"127.0.0.1:{port}", stderr=log_file(tmp_path, "daemon")
        )
        driver = None
        try:
            until(lambda: _up(base), what="the daemon's dashboard")
            driver = browser()
            driver.set_window_size(1280, 1800)
            wait = WebDriverWait(driver, 120)
            driver.get(f"{base}/rollouts")
            assert "No rollouts yet." in driver.page_source
            rollout_id = world.start(
                policy_text(CANARY, min_samples=200).replace("decisions:", LATENCY + "decisions:")
            )

            def listed(d: Any) -> str:  # read in one script: the live list may be swapped meanwhile
                return str(
                    d.execute_script("return document.querySelector('#list tr[data-row]')?.innerText || ''")
                )

            wait.until(lambda d: "churn:2" in listed(d))  # it appeared without a reload
            wait.until(lambda d: "promoted" in listed(d))  # and followed the rollout to its end
            assert driver.execute_script("return window.dashboardUpdates") >= 1
            assert driver.execute_script("return performance.getEntriesByType('navigation').length") == 1
            assert world.rollout(rollout_id).state == "promoted"
            _fits(driver)
            screenshot(driver, "dashboard-rollouts-live")

            driver.get(f"{base}/rollouts/{rollout_id}")
            drawn = (
                "return (window.reportCharts || []).length > 0 && window.reportCharts.every((c) => c.yAxis)"
            )
            wait.until(lambda d: d.execute_script(drawn))
            charts = {c["id"]: c for c in driver.execute_script("return window.reportCharts")}
            assert charts["weights"]["last"] == [100]  # where it ended: all traffic on the candidate
            _axes_hold(list(charts.values()))
            minus = [c for c in charts.values() if c["yLongest"].startswith(("-", "−"))]
            assert minus, [c["yLongest"] for c in charts.values()]  # -margin: a label with its sign
            assert "None: no one paused" in driver.page_source
            _fits(driver)
            screenshot(driver, "dashboard-rollout-finished")

            driver.get(f"{base}/endpoints/{ENDPOINT}?window=15m")
            ready = "const c = window.endpointCharts || []; return c.length === 3 && c.every((x) => x.yAxis);"
            wait.until(lambda d: d.execute_script(ready))
            text = driver.execute_script("return document.querySelector('main').innerText")
            assert "ml.m5.large" in text and "not registered (a fixed instance count)" in text
            assert f"{rollout_id}" in text and "promoted" in text  # its past rollouts
            drawn = driver.execute_script("return window.endpointCharts")
            assert {c["id"] for c in drawn} == {"ep-invocations", "ep-errors", "ep-model_latency_ms"}
            assert all(c["points"] > 0 for c in drawn)
            _axes_hold(drawn)
            _fits(driver)
            screenshot(driver, "dashboard-endpoint")

            driver.get(f"{base}/")
            text = driver.execute_script("return document.querySelector('main').innerText")
            assert f"{rollout_id}: promoted (churn:2)" in text  # the endpoints list keeps the last rollout
            driver.get(f"{base}/rollouts/999")
            nav = driver.find_element("tag name", "nav").text
            assert "no rollout 999" in driver.page_source and "endpoints" in nav
            assert driver.find_element("id", "back")
        finally:
            if driver is not None:
                driver.quit()
            daemon.terminate()
            daemon.wait(timeout=60)
