"""Issue 31, item 6: every command that leaves work to the daemon says so when no daemon has ticked the
rollout's endpoint lately, and `rollout status`/`watch` show it; with a real daemon (a lone SQLite one)
they say which daemon works it."""

from __future__ import annotations

import json
import socket
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from click.testing import CliRunner
from rich.console import Console
from sqlalchemy import update

from manager.cli.main import cli
from manager.cli.rollout_views import watch_view
from manager.clock import utcnow
from manager.registry.tables import DaemonInstance, EndpointLease
from manager.rollout.status import status

from .daemon_support import log_file, start_daemon
from .rollout_support import GATED, World, make_world, policy_text


def _status(world: World, rollout_id: int) -> dict[str, Any]:
    result = CliRunner().invoke(cli, ["--db", world.db, "rollout", "status", str(rollout_id), "-o", "json"])
    assert result.exit_code == 0, result.output
    return dict(json.loads(result.stdout))


def _until(world: World, rollout_id: int, check: Any, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        record = _status(world, rollout_id)
        if check(record):
            return record
        time.sleep(0.1)
    raise AssertionError(f"never true: {record}")


def _age_ticks(world: World, seconds: float, expire_leases: bool = False) -> None:
    """As if the daemon's last tick were `seconds` ago (the daemon is gone: nothing ticks any more)."""
    with world.database.write() as session:
        session.execute(update(DaemonInstance).values(ticked_at=utcnow() - timedelta(seconds=seconds)))
        if expire_leases:
            session.execute(update(EndpointLease).values(expires_at=utcnow() - timedelta(seconds=1)))


def _render(world: World, rollout_id: int) -> str:
    """What `rollout watch` draws now."""
    with world.database.read() as session:
        record = status(session, rollout_id).record()
    console = Console(record=True, width=160)
    console.print(watch_view(record))
    return console.export_text()


def test_commands_say_when_no_daemon_works_the_rollout(tmp_path: Path, artifacts: dict[str, Path]) -> None:
    with make_world(tmp_path, artifacts) as world:
        rollout_id = world.start(policy_text(GATED))
        aborted = CliRunner().invoke(
            cli, ["--db", world.db, "rollout", "abort", str(rollout_id), "--reason", "x"]
        )
        assert aborted.exit_code == 0, aborted.output
        assert aborted.stderr.startswith(
            "warning: no daemon has run on this registry: start `variantctl daemon`"
        )
        assert "abort requested; no daemon is running to act on it yet" in aborted.stdout
        record = _status(world, rollout_id)
        assert record["daemon"]["alive"] is False
        assert "DOWN: no daemon has run on this registry" in _render(world, rollout_id)
        assert record["state"] == "pending" and record["intent"] == "abort"  # written; nobody acted
        # the dashboard's rollout page says it too, with Argo's step counter
        from manager.history import report, report_html
        from manager.web.dashboard import Dashboard

        with world.database.read() as session:
            built = report.build(session, rollout_id)
        page = report_html.sections(Dashboard(world.database, None, 2.0, "c", False)._with_daemon(built))
        assert "step 1/4, candidate at 0%" in page
        assert "<p class='error' id='daemon-down'>DOWN: no daemon has run on this registry" in page


def test_a_real_daemon_is_named_and_a_dead_one_is_reported(
    tmp_path: Path, artifacts: dict[str, Path]
) -> None:
    with make_world(tmp_path, artifacts) as world:
        rollout_id = world.start(policy_text(GATED))  # it waits at the manual gate once at 20%
        daemon = start_daemon(world.host.url, world.db, stderr=log_file(tmp_path, "daemon"))
        try:
            record = _until(world, rollout_id, lambda r: r["state"] == "paused" and r["daemon"]["alive"])
            assert record["daemon"]["said"].startswith(f"pid {daemon.pid} on ")
            assert (record["step_of"], record["weight"], record["desired_weight"]) == ("2/4", 20.0, 20.0)
            view = _render(world, rollout_id)
            assert "step 2/4, candidate at 20%" in view and "DOWN" not in view
            resumed = CliRunner().invoke(cli, ["--db", world.db, "rollout", "resume", str(rollout_id)])
            assert resumed.exit_code == 0 and resumed.stderr == ""
            assert "resume requested; the daemon acts within one tick" in resumed.stdout
            _until(world, rollout_id, lambda r: r["step"] >= 2)
        finally:
            daemon.kill()
            daemon.wait(timeout=30)
        _age_ticks(world, 60)  # its lease on churn-prod is still held: the holder is named as silent
        record = _status(world, rollout_id)
        assert record["daemon"]["alive"] is False
        assert record["daemon"]["said"] == (
            f"the daemon working churn-prod (pid {daemon.pid} on {socket.gethostname()}) "
            "last ticked 60 s ago, every 0.2 s: is it running?"
        )
        _age_ticks(world, 180, expire_leases=True)
        aborted = CliRunner().invoke(cli, ["--db", world.db, "rollout", "abort", str(rollout_id)])
        assert aborted.exit_code == 0
        assert aborted.stderr.startswith("warning: no daemon has ticked for 3 min (the last: pid ")
        assert aborted.stderr.rstrip().endswith(
            "start `variantctl daemon`; nothing acts on this until it runs"
        )
        waited = CliRunner().invoke(
            cli, ["--db", world.db, "rollout", "status", str(rollout_id), "--wait", "--timeout", "0"]
        )
        assert waited.exit_code == 1 and "waiting all the same" in waited.stderr
        listed = CliRunner().invoke(cli, ["--db", world.db, "daemon", "status", "-o", "json"])
        assert [d["pid"] for d in json.loads(listed.stdout)["daemons"]] == [daemon.pid]  # the lone one too
