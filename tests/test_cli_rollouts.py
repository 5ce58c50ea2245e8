"""The operator's and the scheduler's side: policy validation, rollout commands through the CLI, the
daemon's lock, --once, JSON logs, triggers and time windows."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner

from manager import daemon
from manager.cli.main import cli
from manager.history import audit
from manager.policy.windows import within
from manager.registry.tables import Rollout

from .rollout_support import CANARY, ENDPOINT, GATED, make_world, policy_text

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "policies"


def test_policy_validate_prints_the_plan() -> None:
    result = CliRunner().invoke(cli, ["policy", "validate", str(EXAMPLES / "canary.yaml"), "-o", "json"])
    assert result.exit_code == 0, result.output
    plan = json.loads(result.stdout)
    assert [row["what"] for row in plan] == [
        "set candidate weight to 5%",
        "analyse at 5% (harm tests only)",
        "set candidate weight to 50%",
        "analyse at 50% (all metrics)",
    ]
    table = CliRunner().invoke(cli, ["policy", "validate", str(EXAMPLES / "canary.yaml")]).stdout
    assert "longest possible duration: 2:00:00" in table


def test_an_invalid_policy_lists_every_error_with_its_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "name: x\ntarget:\n  endpoint: bad_name\n  candidate: {model: m}\nstepWeights: [5, 150]\n"
        "metrics:\n  - {name: a, source: elsewhere, measure: m, kind: mean, higherIsBetter: true}\n"
    )
    result = CliRunner().invoke(cli, ["policy", "validate", str(bad)])
    assert result.exit_code == 2 and "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert any(":3: target.endpoint:" in line for line in lines)
    assert any(":4: target.candidate:" in line for line in lines)
    assert any(":7: metrics.0.source:" in line for line in lines)
    assert any(":5: stepWeights.1: Input should be less than or equal to 100" in line for line in lines)


def test_rollout_commands_write_intents_the_reconciler_follows(
    tmp_path: Path, artifacts: dict[str, Path]
) -> None:
    with make_world(tmp_path, artifacts) as world:
        policy = tmp_path / "policy.yaml"
        policy.write_text(policy_text(CANARY, min_samples=10_000))
        args = ["--db", str(world.db_path), "--actor", "alice"]
        run = CliRunner()
        started = run.invoke(cli, [*args, "rollout", "start", "--policy", str(policy), "-o", "json"])
        assert started.exit_code == 0, started.output
        rollout_id = json.loads(started.stdout)["rollout"]
        again = run.invoke(cli, [*args, "rollout", "start", "--policy", str(policy)])
        assert again.exit_code == 2 and "already has rollout" in again.stderr
        world.tick_until(rollout_id, ("running",))
        assert (
            run.invoke(cli, [*args, "rollout", "pause", str(rollout_id), "--reason", "lunch"]).exit_code == 0
        )
        world.tick_until(rollout_id, ("paused",))
        listed = json.loads(run.invoke(cli, [*args, "rollout", "list", "-o", "json"]).stdout)
        assert [(r["rollout"], r["state"]) for r in listed] == [(rollout_id, "paused")]
        status = json.loads(
            run.invoke(cli, [*args, "rollout", "status", str(rollout_id), "-o", "json"]).stdout
        )
        assert status["state"] == "paused" and "5xx" in status["metrics"]
        wrong = run.invoke(cli, [*args, "rollout", "pause", str(rollout_id)])
        assert (
            wrong.exit_code == 2 and "is paused; pause applies to a rollout that is running" in wrong.stderr
        )
        no_gate = run.invoke(cli, [*args, "rollout", "approve", str(rollout_id), "--reason", "ok"])
        assert no_gate.exit_code == 2 and "is not waiting at a manual gate (it is paused)" in no_gate.stderr
        forced = run.invoke(
            cli, [*args, "rollout", "promote", str(rollout_id), "--full", "--reason", "incident 7"]
        )
        assert forced.exit_code == 0 and "WITHOUT its analysis" in forced.stderr
        world.tick_until(rollout_id, ("promoted",))
        actors = {e.action: e.actor for e in audit.history(world.database, audit.HistoryFilter(limit=100))}
        assert actors["operator.pause"] == "alice" and actors["operator.promote"] == "alice"
        assert actors["rollout.promoted"] == "daemon"
        missing = run.invoke(cli, [*args, "rollout", "status", "999"])
        assert missing.exit_code == 2 and "no rollout 999" in missing.stderr


def test_rollout_approve_releases_a_manual_gate_as_the_dashboard_does(
    tmp_path: Path, artifacts: dict[str, Path]
) -> None:
    with make_world(tmp_path, artifacts) as world:
        rollout_id = world.start(policy_text(GATED))
        args = ["--db", str(world.db_path), "--actor", "alice"]
        early = CliRunner().invoke(cli, [*args, "rollout", "approve", str(rollout_id), "--reason", "ok"])
        assert early.exit_code == 2 and "not waiting at a manual gate" in early.stderr
        assert world.tick_until(rollout_id, ("paused",)).step == 1  # at the `pause: {}` step
        approved = CliRunner().invoke(
            cli, [*args, "rollout", "approve", str(rollout_id), "--reason", "checked"]
        )
        assert approved.exit_code == 0, approved.output
        assert world.rollout(rollout_id).intent == "resume"
        [event] = audit.history(world.database, audit.HistoryFilter(action="operator.resume"))
        assert (event.actor, event.reason) == ("alice", "manual gate approved: checked")
        assert world.tick_until(rollout_id, ("promoted",)).weight == 50.0


def _daemon(
    db_path: Path, *extra: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "manager", "--db", str(db_path), "daemon", *extra],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


def test_a_second_daemon_exits_with_a_clear_message(database: object, db_path: Path) -> None:
    with daemon.scheduler.scheduler_lock(Path(f"{db_path}.daemon.lock")):
        result = _daemon(db_path, "--once")
    assert result.returncode == 2
    assert "holds the scheduler lock" in result.stderr and "Traceback" not in result.stderr


def test_daemon_once_reconciles_and_logs_json(tmp_path: Path, artifacts: dict[str, Path]) -> None:
    with make_world(tmp_path, artifacts) as world:
        rollout_id = world.start(policy_text(CANARY))
        env = {
            "AWS_ENDPOINT_URL": world.host.url,
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ACCESS_KEY_ID": "x",
            "AWS_SECRET_ACCESS_KEY": "x",
        }
        result = _daemon(world.db_path, "--once", "--log-format", "json", env=env)
        assert result.returncode == 0, result.stderr
        logs = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
        assert any(
            entry.get("action") == "deploying" and entry.get("rollout") == rollout_id for entry in logs
        )
        with world.database.read() as session:
            row = session.get(Rollout, rollout_id)
            assert row is not None and row.pending == {"op": "deploy", "config": row.pending["config"]}


def test_daemon_refuses_an_old_registry(tmp_path: Path) -> None:
    result = _daemon(tmp_path / "none.db", "--once")
    assert result.returncode == 2 and "no registry at" in result.stderr


def test_a_new_approved_candidate_triggers_a_rollout(tmp_path: Path, artifacts: dict[str, Path]) -> None:
    with make_world(tmp_path, artifacts) as world:
        folder = tmp_path / "policies"
        folder.mkdir()
        text = policy_text(CANARY).replace(
            "{model: churn, version: 2}", "{model: churn, newestApproved: true}"
        )
        (folder / "auto.yaml").write_text(text + "trigger: {type: newApprovedCandidate}\n")
        daemon.RUNTIMES[world.database.url] = daemon.runtime.Runtime(world.database, world.reconciler(), None)
        try:
            daemon.trigger_job(world.database.url, str(folder))
            daemon.trigger_job(world.database.url, str(folder))  # once per candidate
        finally:
            del daemon.RUNTIMES[world.database.url]
        events = audit.history(world.database, audit.HistoryFilter(action="rollout.start"))
        assert len(events) == 1 and events[0].actor == "scheduler:trigger:test-policy"
        assert events[0].endpoint == ENDPOINT


@pytest.mark.parametrize(
    "windows,when,inside",
    [
        ([], datetime(2026, 11, 28, 3, 0, tzinfo=UTC), True),
        (["Mon-Fri 09:00-17:00"], datetime(2026, 11, 27, 10, 0, tzinfo=UTC), True),  # a Friday
        (["Mon-Fri 09:00-17:00"], datetime(2026, 11, 28, 10, 0, tzinfo=UTC), False),  # a Saturday
        (["Mon-Fri 09:00-17:00"], datetime(2026, 11, 27, 17, 0, tzinfo=UTC), False),
        (["Sat-Sun 00:00-06:00"], datetime(2026, 11, 29, 5, 59, tzinfo=UTC), True),
    ],
)
def test_allowed_time_windows(windows: list[str], when: datetime, inside: bool) -> None:
    assert within(windows, when) is inside


def test_a_cron_retrain_trains_gates_and_starts_a_rollout(tmp_path: Path, artifacts: dict[str, Path]) -> None:
    with make_world(tmp_path, artifacts) as world:
        train = tmp_path / "train.yaml"
        train.write_text(
            f"model: churn\nestimator: logistic_regression\nobjective: {{metric: roc_auc}}\n"
            f"output: {tmp_path / 'artifacts'}\ngate: {{metric: roc_auc, margin: 0.05}}\n"
        )
        text = policy_text(CANARY).replace(
            "{model: churn, version: 2}", "{model: churn, newestApproved: true}"
        )
        policy = tmp_path / "nightly.yaml"
        policy.write_text(
            text + f"trigger:\n  type: cron\n  cron: '0 3 * * *'\n"
            f"  retrain: {{data: 'sklearn:breast_cancer', config: '{train}', shift: 'noise:0.05'}}\n"
        )
        world.set_aside_waiting_candidate()
        daemon.RUNTIMES[world.database.url] = daemon.runtime.Runtime(world.database, world.reconciler(), None)
        try:
            daemon.retrain_job(world.database.url, str(policy), "retrain:test-policy")
        finally:
            del daemon.RUNTIMES[world.database.url]
        history = audit.history(world.database, audit.HistoryFilter(limit=20))
        by_action = {e.action: e for e in history}
        assert by_action["model.train"].actor == "scheduler:retrain:test-policy"
        assert json.loads(by_action["model.gate"].payload)["status"] == "approved"
        started = by_action["rollout.start"]
        assert started.actor == "scheduler:retrain:test-policy"
        assert json.loads(started.payload)["candidate"] == "churn:3"


def test_endpoints_show_the_weights_a_rollout_has_in_force(
    tmp_path: Path, artifacts: dict[str, Path]
) -> None:
    """Issue 31, item 5: the endpoints page listed the candidate at its config's 0% while the rollout
    page showed it at 10%: a rollout moves weights in place, without a new config."""
    from manager.registry import endpoints as registry_endpoints
    from manager.registry import rollouts
    from manager.views.rows import endpoint_row
    from manager.web import pages

    with make_world(tmp_path, artifacts) as world:
        rollout_id = world.start(policy_text(CANARY))
        reconciler, deadline = world.reconciler(), time.monotonic() + 60
        while world.rollout(rollout_id).weight < 20:  # deployed at 0%, then CANARY's 20%
            assert time.monotonic() < deadline, world.rollout(rollout_id).state
            reconciler.tick()
        shown = CliRunner().invoke(cli, ["--db", world.db, "endpoints", "show", ENDPOINT, "-o", "json"])
        assert shown.exit_code == 0, shown.output
        variants = {v["variant"]: v for v in json.loads(shown.stdout)["variant_details"]}
        assert (variants["baseline"]["share"], variants["candidate"]["share"]) == (80.0, 20.0)
        listed = CliRunner().invoke(cli, ["--db", world.db, "endpoints", "list", "-o", "json"])
        [listed_row] = json.loads(listed.stdout)
        assert listed_row["variants"]["candidate"] == "churn:2 w=20 (20%)"
        with world.database.read() as session:
            views = {v.endpoint: v for v in rollouts.views(session)}
            page_rows = [
                endpoint_row(r, views.get(r.name)) for r in registry_endpoints.list_endpoints(session)
            ]
        page = pages.endpoints(page_rows, {k: v.record() for k, v in views.items()}, {})
        assert "candidate: churn:2 (20%, weight 20)" in page and "candidate at 20%" in page


def test_promote_without_full_ends_one_step_as_argo_does(tmp_path: Path, artifacts: dict[str, Path]) -> None:
    """Issue 31: `rollout promote ID` ends the current step and goes on with the next (Argo's promote);
    at the last step it promotes, recorded as forced; both name the operator."""
    with make_world(tmp_path, artifacts) as world:
        rollout_id = world.start(policy_text(CANARY, min_samples=1_000_000))  # no analysis ever ends
        reconciler, deadline = world.reconciler(), time.monotonic() + 60
        while world.rollout(rollout_id).step < 1:  # at step 1: analyse at 20%
            assert time.monotonic() < deadline
            reconciler.tick()
        args = ["--db", world.db, "--actor", "alice", "rollout", "promote", str(rollout_id)]
        skipped = CliRunner().invoke(cli, [*args, "--reason", "the canary looks fine"])
        assert skipped.exit_code == 0, skipped.output
        assert f"rollout {rollout_id}: skip requested" in skipped.stdout and "WITHOUT" not in skipped.stderr
        while world.rollout(rollout_id).step < 3:  # step 2 sets 50%, step 3 analyses at 50%
            assert time.monotonic() < deadline
            reconciler.tick()
        row = world.rollout(rollout_id)
        assert (row.state, row.weight, row.intent) == ("running", 50.0, None)
        status = json.loads(
            CliRunner()
            .invoke(cli, ["--db", world.db, "rollout", "status", str(rollout_id), "-o", "json"])
            .stdout
        )
        assert status["step_of"] == "4/4"
        [advanced] = [
            e
            for e in audit.history(world.database, audit.HistoryFilter(action="rollout.advance"))
            if "skipped" in (e.reason or "")
        ]
        assert advanced.reason == "step 1 skipped by the operator: the canary looks fine"
        assert json.loads(advanced.payload)["requested_by"]["actor"] == "alice"

        last = CliRunner().invoke(cli, [*args, "--reason", "ship it"])  # at the last step: promote
        assert last.exit_code == 0, last.output
        world.tick_until(rollout_id, ("promoted",), reconciler)
        [promote] = audit.history(world.database, audit.HistoryFilter(action="rollout.promote"))
        payload = json.loads(promote.payload)
        assert payload["forced"] is True and payload["requested_by"]["actor"] == "alice"
        assert promote.reason == "promoted by the operator, skipping the last step (3): ship it"
