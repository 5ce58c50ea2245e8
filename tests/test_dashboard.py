"""The dashboard and /metrics, served by a real daemon (`variantctl daemon --http`) during a real
rollout on the local SageMaker, opened in headless Chromium: the rollout page follows the rollout
live, an operator signed in with the token file pauses it from the page (the daemon acts, the history
names them and their reason), nobody else can, and a page on another site cannot make the browser
act. Plus the read-only dashboard, the history's CSV and the token file's errors over real HTTP."""

from __future__ import annotations

import json
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from manager.history import audit
from manager.registry import rollouts

from .browser_support import browser, page_elsewhere, screenshot
from .conftest import Cli
from .daemon_support import log_file, start_daemon
from .rollout_support import CANARY, World, make_world, policy_text
from .webhook_support import receiver

TOKEN = "alice-token-0123456789abcdef"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def until(predicate: Callable[[], Any], timeout: float = 60, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what or predicate}")


def http(
    method: str, url: str, data: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, str]:
    request = urllib.request.Request(url, data=data, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def metrics(base: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    status, text = http("GET", f"{base}/metrics")
    assert status == 200
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def total(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= set(ls))


@contextmanager
def other_site(target: str) -> Iterator[str]:
    """A page on another origin whose form posts an abort to the dashboard as soon as it loads."""
    page = (
        "<!doctype html><html><body><form id=f method=post action='" + target + "'>"
        "<input name=intent value=abort><input name=reason value='cross-site abort'>"
        "<input name=csrf value=guessed></form>"
        "<script>document.getElementById('f').submit()</script></body></html>"
    ).encode()

    # another origin: a different host name for the same machine
    with page_elsewhere(page) as url:
        yield url


@pytest.mark.slow
def test_the_dashboard_follows_a_rollout_and_an_operator_pauses_it_from_the_page(
    tmp_path: Path, artifacts: dict[str, Path]
) -> None:
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    tokens = tmp_path / "tokens"
    tokens.write_text(f"# operators\nalice {TOKEN}\n")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with make_world(tmp_path, artifacts) as world, world.traffic(), receiver() as told:
        added = Cli(world.db_path)("webhooks", "add", "ops", "--url", told.url, "--event", "paused")
        assert added.exit_code == 0, added.output
        rollout_id = world.start(policy_text(CANARY, min_samples=1_000_000))
        daemon = start_daemon(
            world.host.url,
            world.db,
            "--http",
            f"127.0.0.1:{port}",
            "--token-file",
            str(tokens),
            stderr=log_file(tmp_path, "daemon"),
        )
        driver = None
        try:
            until(lambda: _up(base), what="the daemon's dashboard")
            first = metrics(base)
            until(lambda: world.rollout(rollout_id).weight == 20.0, what="the candidate at 20%")
            driver = browser()
            # the live page swaps its sections while the test reads them: a stale element is read again
            wait = WebDriverWait(driver, 60, ignored_exceptions=(StaleElementReferenceException,))
            driver.get(f"{base}/rollouts/{rollout_id}")
            wait.until(lambda d: d.execute_script("return window.dashboardUpdates >= 1"))

            def current_step(d: Any) -> str:
                rows = d.find_elements(By.XPATH, "//h2[text()='Steps']/following-sibling::table[1]//tr[td]")
                return next((r.text for r in rows if " current " in f" {r.text} "), "")

            assert "analyse at 20%" in wait.until(current_step)
            assert not driver.find_elements(By.ID, "actions")  # not signed in: no buttons
            assert driver.find_element(By.LINK_TEXT, "Sign in")

            def points(d: Any) -> int:
                charts = d.execute_script("return window.reportCharts") or []
                return max((c["points"] for c in charts if c["id"] == "stat-0"), default=0)

            seen = wait.until(points)
            updates = driver.execute_script("return window.dashboardUpdates")
            wait.until(lambda d: points(d) > seen)  # the chart grows without a reload
            assert driver.execute_script("return window.dashboardUpdates") > updates
            assert driver.execute_script("return performance.getEntriesByType('navigation').length") == 1
            screenshot(driver, "dashboard-rollout-live")

            # Without a token nothing can act; a wrong one neither.
            anonymous = http("POST", f"{base}/rollouts/{rollout_id}/actions", b"intent=pause&reason=nobody")
            assert anonymous[0] == 401
            wrong = http(
                "POST",
                f"{base}/rollouts/{rollout_id}/actions",
                b"intent=pause&reason=guess",
                {"Authorization": "Bearer not-a-token-of-anyone"},
            )
            assert wrong[0] == 401

            # Alice signs in and pauses from the page.
            driver.get(f"{base}/login")
            driver.find_element(By.NAME, "token").send_keys(TOKEN)
            driver.find_element(By.TAG_NAME, "form").submit()
            wait.until(lambda d: "signed in as alice" in d.find_element(By.TAG_NAME, "nav").text)
            driver.get(f"{base}/rollouts/{rollout_id}")
            form = wait.until(lambda d: d.find_element(By.ID, "actions"))
            form.find_element(By.NAME, "reason").send_keys("checking the latency dashboard")
            form.find_element(By.CSS_SELECTOR, "button[value=pause]").click()
            wait.until(lambda d: "pause requested" in d.find_element(By.CLASS_NAME, "notice").text)
            until(lambda: world.rollout(rollout_id).state == "paused", what="the daemon to pause it")
            [asked] = audit.history(world.database, audit.HistoryFilter(action="operator.pause"))
            assert (asked.actor, asked.reason) == ("alice", "checking the latency dashboard")
            [paused] = audit.history(world.database, audit.HistoryFilter(action="rollout.pause"))
            assert json.loads(paused.payload)["requested_by"]["actor"] == "alice"
            wait.until(lambda d: "paused" in d.find_element(By.TAG_NAME, "h1").text)
            screenshot(driver, "dashboard-rollout-paused")
            told.wait_for(lambda: bool(told.accepted), what="the daemon's webhook job to tell of the pause")
            [[message]] = told.accepted.values()
            assert message.json["kind"] == "paused" and "alice" in json.dumps(message.json["decision"])

            # A page on another site, opened in Alice's signed-in browser, cannot abort it.
            with other_site(f"{base}/rollouts/{rollout_id}/actions") as evil:
                driver.get(evil)
                wait.until(lambda d: d.current_url.startswith(base))
                assert "refused" in driver.page_source or "sign in first" in driver.page_source
            cookie = driver.get_cookie(f"variantctl_session_{port}")["value"]
            csrf = driver.execute_script("return 1") and _csrf(driver, base, rollout_id)
            spoofed = http(
                "POST",
                f"{base}/rollouts/{rollout_id}/actions",
                f"intent=abort&reason=spoofed&csrf={csrf}".encode(),
                {"Cookie": f"variantctl_session_{port}={cookie}", "Origin": "http://localhost:1"},
            )
            assert spoofed[0] == 403 and "did not come from this dashboard" in spoofed[1]
            assert world.rollout(rollout_id).state == "paused"
            assert not audit.history(world.database, audit.HistoryFilter(action="operator.abort"))

            # /metrics: the counters moved while the rollout ran.
            now = metrics(base)
            assert total(now, "variantctl_reconcile_tick_seconds_count") > total(
                first, "variantctl_reconcile_tick_seconds_count"
            )
            assert total(now, "variantctl_decisions_total", action="set_weight") >= 1
            assert total(now, "variantctl_decisions_total", action="pause") == 1
            assert total(now, "variantctl_platform_call_seconds_count", operation="describe") > 0
            assert total(now, "variantctl_platform_call_seconds_count", operation="set_weights") >= 1
            assert total(now, "variantctl_rollouts", state="paused") == 1
            assert total(now, "variantctl_endpoint_leases") == 1
            assert total(now, "variantctl_registry_up") == 1
        finally:
            if driver is not None:
                driver.quit()
            daemon.terminate()
            daemon.wait(timeout=30)


def _up(base: str) -> bool:
    try:
        return http("GET", f"{base}/healthz")[0] == 200
    except OSError:
        return False


def _csrf(driver: Any, base: str, rollout_id: int) -> str:
    from selenium.webdriver.common.by import By

    driver.get(f"{base}/rollouts/{rollout_id}")
    return str(driver.find_element(By.NAME, "csrf").get_attribute("value"))


@contextmanager
def served(world: World, token_file: Path | None = None) -> Iterator[str]:
    from manager.web import auth, serve

    port = free_port()
    operators = auth.Operators.from_file(token_file) if token_file is not None else None
    server = serve.start_in_thread(world.database.url, "127.0.0.1", port, operators)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True


def test_a_dashboard_without_a_token_file_is_read_only(tmp_path: Path, artifacts: dict[str, Path]) -> None:
    with make_world(tmp_path, artifacts) as world, served(world) as base:
        rollout_id = world.start(policy_text(CANARY))
        status, page = http("GET", f"{base}/rollouts/{rollout_id}")
        assert status == 200 and "id='actions'" not in page and "read-only" in page
        refused = http(
            "POST",
            f"{base}/rollouts/{rollout_id}/actions",
            b"intent=abort&reason=please",
            {"Authorization": f"Bearer {TOKEN}"},
        )
        assert refused[0] == 403 and "read-only" in refused[1]
        assert world.rollout(rollout_id).intent is None
        status, front = http("GET", f"{base}/")
        assert status == 200 and "churn-prod" in front and f"/rollouts/{rollout_id}" in front
        status, listing = http("GET", f"{base}/models")
        assert status == 200 and "churn:2" in listing


def test_an_operator_token_acts_from_a_pipeline_and_a_reason_is_required(
    tmp_path: Path, artifacts: dict[str, Path]
) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text(f"alice {TOKEN}\nci-pipeline pipeline-token-0123456789\n")
    with make_world(tmp_path, artifacts) as world, served(world, tokens) as base:
        rollout_id = world.start(policy_text(CANARY, min_samples=1_000_000))
        world.tick_until(rollout_id, ("running",))
        bearer = {"Authorization": "Bearer pipeline-token-0123456789", "Accept": "application/json"}
        no_reason = http("POST", f"{base}/rollouts/{rollout_id}/actions", b"intent=pause&reason=", bearer)
        assert no_reason[0] == 400 and "reason" in no_reason[1]
        not_now = http(
            "POST", f"{base}/rollouts/{rollout_id}/actions", b"intent=approve&reason=ship it", bearer
        )
        assert not_now[0] == 409 and "not waiting at a manual gate" in not_now[1]
        done = http(
            "POST", f"{base}/rollouts/{rollout_id}/actions", b"intent=pause&reason=load test failed", bearer
        )
        assert done[0] == 200 and json.loads(done[1])["actor"] == "ci-pipeline"
        assert world.rollout(rollout_id).intent == "pause"
        [event] = audit.history(world.database, audit.HistoryFilter(action="operator.pause"))
        assert (event.actor, event.reason) == ("ci-pipeline", "load test failed")


def test_the_history_page_filters_as_the_cli_does_and_its_csv_is_audit_exports(
    tmp_path: Path, artifacts: dict[str, Path]
) -> None:
    with make_world(tmp_path, artifacts) as world, served(world) as base:
        rollout_id = world.start(policy_text(CANARY))
        formula = '=HYPERLINK("http://evil.example","click")'
        with world.database.write() as session:
            rollouts.set_intent(session, rollout_id, "abort", formula, "=mallory")
            rollouts.set_intent(session, rollout_id, "abort", "wrong candidate", "bob")
        status, page = http("GET", f"{base}/history?actor=bob")
        assert status == 200 and "operator.abort" in page and "rollout.start" not in page
        status, text = http("GET", f"{base}/history.csv?rollout={rollout_id}")
        cli = Cli(world.db_path)("history", "--rollout", str(rollout_id), "--output", "csv")
        assert status == 200 and cli.exit_code == 0
        lines = text.strip().splitlines()
        assert lines[0].startswith("seq,") and len(lines) - 1 == len(cli.output.strip().splitlines()) - 1
        # Issue 28, finding 5: what people open in a spreadsheet runs no formula (OWASP: a leading ');
        # the verifiable export keeps every byte.
        import csv
        import io

        for table in (text, cli.output):
            cells = [c for row in csv.reader(io.StringIO(table)) for c in row]
            assert "'=mallory" in cells and "'" + formula in cells and "=mallory" not in cells
        export = Cli(world.db_path)("audit", "export", "--format", "csv")
        assert export.exit_code == 0
        cells = [c for row in csv.reader(io.StringIO(export.output)) for c in row]
        assert "=mallory" in cells and formula in cells
        bad = http("GET", f"{base}/history?since=yesterday-ish")
        assert bad[0] == 409 and "yesterday-ish" in bad[1]


def test_a_bad_token_file_or_address_is_one_line_and_exit_2(tmp_path: Path, db_path: Path) -> None:
    run = Cli(db_path)
    assert run("db", "upgrade").exit_code == 0
    short = tmp_path / "short"
    short.write_text("alice tooshort\n")
    for args, message in [
        (("dashboard", "--token-file", str(short)), "shorter than 16 characters"),
        (("dashboard", "--token-file", str(tmp_path / "missing")), "No such file"),
        (("daemon", "--http", "nowhere", "--once"), "HOST:PORT"),
        (("daemon", "--token-file", str(short)), "serves no dashboard without --http"),
    ]:
        result = run(*args)
        assert result.exit_code == 2, (args, result.output)
        assert message in result.output and "Traceback" not in result.output
