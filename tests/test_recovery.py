"""Mistakes can be undone, and say what they did: a failed `endpoints create` exits 1 with SageMaker's
reason and records the failure (not "serving"), `endpoints forget` then lets it be created again,
`endpoints adopt` manages an endpoint made elsewhere, an operator's abort keeps the candidate approved
(`--reject-candidate` rejects it), `models approve` brings a rejected one back, `rollout retry` starts
again; global options work after the subcommand. Through the CLI, against the local SageMaker."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from manager.cli.main import cli
from manager.db import Database
from manager.history import audit
from manager.local_sagemaker import LocalSageMaker
from manager.registry import rollouts
from manager.rollout.reconcile import Reconciler

from .local_sagemaker_support import create_model, until, variant, wait_status
from .rollout_support import CANARY, policy_text


class Run:
    def __init__(self, db: Path) -> None:
        self.db = db

    def __call__(self, *args: str) -> Result:
        return CliRunner().invoke(cli, [*args, "--db", str(self.db), "--actor", "ops"])  # globals last


@pytest.fixture
def run(tmp_path: Path) -> Run:
    runner = Run(tmp_path / "registry.db")
    assert runner("db", "upgrade").exit_code == 0
    return runner


def _statuses(run: Run) -> dict[str, str]:
    return {m["model"]: m["status"] for m in json.loads(run("models", "list", "-o", "json").stdout)}


def test_a_failed_create_exits_1_with_the_reason_and_can_be_forgotten(
    aws_env: LocalSageMaker, run: Run, tmp_path: Path, artifacts: dict[str, Path]
) -> None:
    broken = tmp_path / "broken.joblib"
    broken.write_bytes(b"not a model")
    assert (
        run("models", "register", "churn", "--artifact", str(broken), "--framework", "sklearn").exit_code == 0
    )
    failed = run("endpoints", "create", "ep", "--model", "churn:1")
    assert failed.exit_code == 1 and "endpoint ep Failed: Failed to load model artifacts" in failed.stderr
    assert _statuses(run) == {"churn:1": "candidate"}, "a failed endpoint serves nothing"
    actions = [e["action"] for e in json.loads(run("history", "--endpoint", "ep", "-o", "json").stdout)]
    assert "endpoint.failed" in actions and "endpoint.serves" not in actions
    again = run("endpoints", "create", "ep", "--model", "churn:1")
    assert again.exit_code == 2 and "forget ep --delete-endpoint" in again.stderr
    forgot = run("endpoints", "forget", "ep", "--reason", "bad artifact", "--delete-endpoint")
    assert forgot.exit_code == 0, forgot.output
    good = run(
        "models", "register", "churn", "--artifact", str(artifacts["logistic"]), "--framework", "sklearn"
    )
    assert good.exit_code == 0
    created = run("endpoints", "create", "ep", "--model", "churn:2")
    assert created.exit_code == 0, created.output
    assert _statuses(run)["churn:2"] == "serving"
    assert run("audit", "verify").exit_code == 0


def test_an_endpoint_made_elsewhere_is_adopted(
    aws_env: LocalSageMaker, run: Run, artifacts: dict[str, Path]
) -> None:
    sm = aws_env.client("sagemaker")
    create_model(sm, "churn-v7", artifacts["logistic"])
    sm.create_endpoint_config(EndpointConfigName="c", ProductionVariants=[variant("main", "churn-v7")])
    sm.create_endpoint(EndpointName="legacy", EndpointConfigName="c")
    wait_status(sm, "legacy")
    adopted = run("endpoints", "adopt", "legacy")
    assert adopted.exit_code == 0 and "serving churn:1" in adopted.stdout, adopted.output
    shown = json.loads(run("endpoints", "show", "legacy", "-o", "json").stdout)
    assert shown["config"] == "c"
    assert _statuses(run) == {"churn:1": "serving"}
    assert run("audit", "verify").exit_code == 0


def _rollout_world(
    aws_env: LocalSageMaker, run: Run, artifacts: dict[str, Path], tmp_path: Path
) -> tuple[Database, Path, Callable[[int, str], None]]:
    """churn:1 serving on churn-prod, churn:2 approved, a canary policy; ticks a reconciler until a state."""
    for name in ("logistic", "prior"):
        registered = run(
            "models", "register", "churn", "--artifact", str(artifacts[name]), "--framework", "sklearn"
        )
        assert registered.exit_code == 0, registered.output
    assert run("models", "approve", "churn:2", "--reason", "offline gate passed").exit_code == 0
    assert run("endpoints", "create", "churn-prod", "--model", "churn:1").exit_code == 0
    policy = tmp_path / "p.yaml"
    policy.write_text(policy_text(CANARY, min_samples=10_000))
    database = Database(f"sqlite:///{run.db}")
    from manager.platforms.sagemaker import SageMakerPlatform

    reconciler = Reconciler(database, SageMakerPlatform(aws_env.client("sagemaker")), None, owner="t")

    def tick_until(rollout_id: int, state: str) -> None:
        def reached() -> bool | None:
            reconciler.tick()
            with database.read() as session:
                return session.get(rollouts.Rollout, rollout_id).state == state or None  # type: ignore[union-attr]

        until(reached, f"rollout {rollout_id} {state}", timeout=60)

    return database, policy, tick_until


def test_abort_keeps_the_candidate_then_retry_and_approve(
    aws_env: LocalSageMaker, run: Run, artifacts: dict[str, Path], tmp_path: Path
) -> None:
    database, policy, tick_until = _rollout_world(aws_env, run, artifacts, tmp_path)

    first = json.loads(run("rollout", "start", "--policy", str(policy), "-o", "json").stdout)["rollout"]
    tick_until(first, "running")
    assert run("rollout", "abort", str(first), "--reason", "pager").exit_code == 0
    tick_until(first, "aborted")
    assert _statuses(run)["churn:2"] == "approved", "an abort says nothing about the model"

    second = json.loads(run("rollout", "retry", str(first), "-o", "json").stdout)["rollout"]
    tick_until(second, "running")
    aborted = run("rollout", "abort", str(second), "--reason", "really bad", "--reject-candidate")
    assert aborted.exit_code == 0, aborted.output
    tick_until(second, "aborted")
    assert _statuses(run)["churn:2"] == "rejected"
    refused = run("rollout", "retry", str(second))
    assert refused.exit_code == 2 and "models approve churn:2" in refused.stderr
    assert run("models", "approve", "churn:2", "--reason", "false alarm").exit_code == 0
    third = run("rollout", "retry", str(second), "-o", "json")
    assert third.exit_code == 0, third.output
    events = audit.history(database, audit.HistoryFilter(model="churn", limit=500))
    assert {"model.approved", "model.rejected", "operator.abort"} <= {e.action for e in events}
    assert run("audit", "verify").exit_code == 0
    database.dispose()


def test_global_options_work_after_the_subcommand_and_history_keeps_its_own_actor(
    run: Run, artifact: Path
) -> Any:
    assert (
        run("models", "register", "m", "--artifact", str(artifact), "--framework", "sklearn").exit_code == 0
    )
    mine = CliRunner().invoke(cli, ["history", "--actor", "ops", "--db", str(run.db), "-o", "json"])
    assert mine.exit_code == 0 and {e["actor"] for e in json.loads(mine.stdout)} == {"ops"}
    nobody = CliRunner().invoke(cli, ["history", "--db", str(run.db), "--actor", "nobody", "-o", "json"])
    assert json.loads(nobody.stdout) == [], "history --actor filters; it is not the global --actor"


def test_watch_and_status_exit_by_outcome(
    aws_env: LocalSageMaker, run: Run, artifacts: dict[str, Path], tmp_path: Path
) -> None:
    database, policy, tick_until = _rollout_world(aws_env, run, artifacts, tmp_path)

    first = json.loads(run("rollout", "start", "--policy", str(policy), "-o", "json").stdout)["rollout"]
    tick_until(first, "running")
    waited = run("rollout", "status", str(first), "--wait", "--timeout", "0.3", "--every", "0.1")
    assert waited.exit_code == 1 and "still running after 0.3 s" in waited.stderr
    assert run("rollout", "status", str(first)).exit_code == 0, "running: 0"
    run("rollout", "abort", str(first), "--reason", "test")
    tick_until(first, "aborted")
    assert run("rollout", "status", str(first), "--wait").exit_code == 3
    watched = run("rollout", "watch", str(first), "--every", "0.2")
    assert watched.exit_code == 3 and f"rollout {first}: aborted" in watched.stdout

    second = json.loads(run("rollout", "retry", str(first), "-o", "json").stdout)["rollout"]
    tick_until(second, "running")
    run("rollout", "promote", str(second), "--full", "--reason", "ship")
    tick_until(second, "promoted")
    assert run("rollout", "status", str(second), "--wait", "-o", "json").exit_code == 0
    assert run("rollout", "watch", str(second), "--every", "0.2").exit_code == 0
    shown = json.loads(run("rollout", "status", str(second), "-o", "json").stdout)
    assert [s["state"] for s in shown["steps"]] == ["done"] * len(shown["steps"])
    assert shown["metrics"]["5xx"]["min_samples"] == 10_000

    with database.write() as session:  # no code path fails a rollout today; the exit code is still kept
        session.get(rollouts.Rollout, second).state = "failed"  # type: ignore[union-attr]
    assert run("rollout", "status", str(second)).exit_code == 4
    database.dispose()
