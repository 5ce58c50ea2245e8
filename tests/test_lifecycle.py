"""One lifecycle vocabulary and one writer of a model's status: every move checked and in the history;
the typed pending change; the endpoint status the reconciler observes; one retrain pipeline for the
CLI and the daemon; the daemon's start without Alembic's chatter."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from manager import daemon
from manager.cli.main import cli
from manager.cli.simulate import SCENARIO_NAMES
from manager.db import Database
from manager.history import audit
from manager.registry import models
from manager.registry.vocabulary import (
    ACTIVE_ROLLOUT_STATES,
    FINAL_ROLLOUT_STATES,
    MODEL_STATUSES,
    MODEL_TRANSITIONS,
    ROLLOUT_STATES,
    is_final,
)
from manager.rollout.pending import PendingChange
from manager.rollout.simulate import SCENARIOS

from .rollout_support import CANARY, ENDPOINT, make_world, policy_text


def test_final_and_active_states_split_the_rollout_states() -> None:
    assert set(FINAL_ROLLOUT_STATES) | set(ACTIVE_ROLLOUT_STATES) == set(ROLLOUT_STATES)
    assert not set(FINAL_ROLLOUT_STATES) & set(ACTIVE_ROLLOUT_STATES)
    assert [s for s in ROLLOUT_STATES if is_final(s)] == ["promoted", "rolled_back", "aborted", "failed"]


def test_every_status_has_its_moves_and_nothing_returns_to_candidate() -> None:
    assert set(MODEL_TRANSITIONS) == set(MODEL_STATUSES)
    assert all("candidate" not in moves for moves in MODEL_TRANSITIONS.values())


def test_a_transition_is_checked_and_recorded(database: Database, artifact: Path) -> None:
    with database.write() as session:
        version = models.register(session, models.NewVersion("churn", str(artifact), "sklearn"), "alice")
        models.transition(session, version, "approved", "bob", reason="looked at the numbers")
        with pytest.raises(ValueError, match="cannot move from approved to candidate"):
            models.transition(session, version, "candidate", "bob")  # type: ignore[arg-type]
        assert version.status == "approved"
    [event] = audit.history(database, audit.HistoryFilter(action="model.status"))
    assert (event.actor, event.subject_id, event.reason) == ("bob", "churn:1", "looked at the numbers")
    assert json.loads(event.payload) == {"from": "candidate", "status": "approved"}


@pytest.mark.parametrize(
    "change",
    [
        PendingChange("deploy", "ep-ab-1"),
        PendingChange("set_weight", weight=20.0),
        PendingChange("shadow", "ep-shadow-1", 50.0),
        PendingChange("unshadow", "ep-ab-2"),
        PendingChange("promote", "ep-promoted-1"),
        PendingChange("rollback", "ep-rolledback-1", aborted=True),
    ],
)
def test_a_pending_change_round_trips_through_json(change: PendingChange) -> None:
    stored = json.loads(json.dumps(change.to_json()))
    assert PendingChange.from_json(stored) == change


def test_pending_changes_keep_the_stored_shape() -> None:
    """Rows written by earlier releases read back, and new rows look like them."""
    assert PendingChange("deploy", "c").to_json() == {"op": "deploy", "config": "c"}
    assert PendingChange.from_json({"op": "set_weight", "weight": 5}) == PendingChange(
        "set_weight", weight=5.0
    )
    assert PendingChange.from_json({"op": "rollback", "config": "c", "aborted": False}) == PendingChange(
        "rollback", "c"
    )
    assert PendingChange.from_json(None) is None
    with pytest.raises(ValueError, match="needs its weight"):
        PendingChange("set_weight")
    with pytest.raises(ValueError, match="unknown pending operation"):
        PendingChange.from_json({"op": "explode", "config": "c"})


def test_the_simulate_command_offers_exactly_the_simulators_scenarios() -> None:
    assert list(SCENARIO_NAMES) == list(SCENARIOS)
    shown = CliRunner().invoke(cli, ["simulate", "--help"]).stdout
    assert all(name in shown for name in SCENARIOS)


def test_a_promotion_moves_both_versions_with_events(tmp_path: Path, artifacts: dict[str, Path]) -> None:
    with make_world(tmp_path, artifacts) as world:
        rollout_id = world.start(policy_text(CANARY))
        world.tick_until(rollout_id, ("promoted",))
        with world.database.read() as session:
            assert models.get(session, "churn:2").status == "serving"
            assert models.get(session, "churn:1").status == "retired"
        moves = {
            e.subject_id: json.loads(e.payload)
            for e in audit.history(world.database, audit.HistoryFilter(action="model.status"))
            if e.reason and f"rollout {rollout_id}" in e.reason
        }
        assert moves == {
            "churn:2": {"from": "approved", "status": "serving"},
            "churn:1": {"from": "serving", "status": "retired"},
        }


def test_the_reconciler_writes_what_it_observes_of_the_endpoint(
    tmp_path: Path, artifacts: dict[str, Path]
) -> None:
    with make_world(tmp_path, artifacts) as world:
        world.tick_until(world.start(policy_text(CANARY, min_samples=10_000)), ("running",))
        listed = CliRunner().invoke(cli, ["--db", str(world.db_path), "endpoints", "list", "-o", "json"])
        assert listed.exit_code == 0, listed.output
        [row] = json.loads(listed.stdout)
        assert row["endpoint"] == ENDPOINT and row["status"] in ("InService", "Updating")
        assert row["region"] == "us-east-1" and row["observed_at"]


def test_endpoints_status_records_what_it_sees_in_the_registry(
    tmp_path: Path, artifacts: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    with make_world(tmp_path, artifacts) as world:
        monkeypatch.setenv("AWS_ENDPOINT_URL", world.host.url)
        monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "x")
        seen = CliRunner().invoke(cli, ["--db", str(world.db_path), "endpoints", "status", ENDPOINT])
        assert seen.exit_code == 0, seen.output
        shown = CliRunner().invoke(
            cli, ["--db", str(world.db_path), "endpoints", "show", ENDPOINT, "-o", "json"]
        )
        record = json.loads(shown.stdout)
        assert record["status"] == "InService" and record["observed_at"]


def _cron_policy(tmp_path: Path, gate: str) -> Path:
    train = tmp_path / "train.yaml"
    train.write_text(
        f"model: churn\nestimator: logistic_regression\nobjective: {{metric: roc_auc}}\n"
        f"output: {tmp_path / 'artifacts'}\n{gate}"
    )
    text = policy_text(CANARY).replace("{model: churn, version: 2}", "{model: churn, newestApproved: true}")
    policy = tmp_path / "nightly.yaml"
    policy.write_text(
        text + f"trigger:\n  type: cron\n  cron: '0 3 * * *'\n"
        f"  retrain: {{data: 'sklearn:breast_cancer', config: '{train}'}}\n"
    )
    return policy


def test_a_retrain_with_no_gate_ends_the_same_from_the_cli_and_the_daemon(
    tmp_path: Path, artifacts: dict[str, Path]
) -> None:
    """No `gate:` in train.yaml: both paths approve the version with a `model.gate` event saying so."""
    with make_world(tmp_path, artifacts) as world:
        policy = _cron_policy(tmp_path, gate="")
        world.set_aside_waiting_candidate()
        daemon.RUNTIMES[world.database.url] = daemon.runtime.Runtime(world.database, world.reconciler(), None)
        try:
            daemon.retrain_job(world.database.url, str(policy), "retrain:test-policy")
        finally:
            del daemon.RUNTIMES[world.database.url]
        result = CliRunner().invoke(
            cli,
            [
                *("--db", str(world.db_path), "train", "--data", "sklearn:breast_cancer"),
                *("--config", str(tmp_path / "train.yaml"), "-o", "json"),
            ],
        )
        assert result.exit_code == 0, result.output
        gates = {
            e.subject_id: (e.actor, json.loads(e.payload))
            for e in audit.history(world.database, audit.HistoryFilter(action="model.gate"))
        }
        by_daemon, by_cli = gates["churn:3"], gates["churn:4"]
        assert by_daemon[0] == "scheduler:retrain:test-policy"
        for _, payload in (by_daemon, by_cli):
            assert payload["status"] == "approved" and payload["reason"] == "no gate in train.yaml"
        with world.database.read() as session:
            assert models.get(session, "churn:3").status == "approved"
            assert models.get(session, "churn:4").status == "approved"


def test_the_daemon_starts_without_alembic_chatter(tmp_path: Path, database: Database, db_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "manager", "--db", str(db_path), "daemon", "--once"],
        capture_output=True,
        text=True,
        timeout=60,
        env={
            **os.environ,
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ACCESS_KEY_ID": "x",
            "AWS_SECRET_ACCESS_KEY": "x",
        },
    )
    assert result.returncode == 0, result.stderr
    assert "alembic" not in result.stderr.lower() and "Context impl" not in result.stderr


def test_a_bad_daemon_knob_is_one_line_and_exit_2(database: Database, db_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "manager", "--db", str(db_path), "daemon", "--once"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "AWS_DEFAULT_REGION": "us-east-1", "VARIANTCTL_METRICS_LAG_SECONDS": "soon"},
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        "error: VARIANTCTL_METRICS_LAG_SECONDS='soon': give a number of seconds above 0"
    )
    assert "Traceback" not in result.stderr
