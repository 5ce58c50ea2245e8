"""Full rollouts against the local SageMaker: promote, regression, error spike, manual gate,
pause and abort, a forced promotion, and two reconcilers racing for one endpoint."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import select

from manager.db import Database
from manager.demo import scenarios as demo
from manager.history import audit
from manager.registry import rollouts
from manager.registry.tables import ModelVersion

from .rollout_support import CANARY, ENDPOINT, GATED, make_world, platform_matches_registry, policy_text

pytestmark = pytest.mark.backends  # the reconciler on SQLite and on PostgreSQL


@pytest.mark.slow
@pytest.mark.parametrize(
    "scenario,outcome,reason",
    [
        ("promote", "promoted", "non-inferiority shown"),
        ("regression", "rolled_back", "accuracy: the candidate is worse"),
        ("error-spike", "rolled_back", "guardrail 5xx shows harm"),
        ("slow-candidate", "rolled_back", "guardrail p90-latency shows harm"),
    ],
)
def test_demo_scenarios(tmp_path: Path, scenario: str, outcome: str, reason: str) -> None:
    result = demo.run(tmp_path, scenario, timeout=110, say=lambda _: None)
    assert result["outcome"] == outcome and reason in result["reason"]
    assert result["evidence"]["metrics"], "the decision carries its evidence"
    if scenario == "slow-candidate":  # the report's quantile evidence: requests over the threshold
        p90 = result["evidence"]["metrics"]["p90-latency"]
        assert p90["status"] == "fail" and p90["counts"] == "requests over the threshold of p90"
        assert (
            p90["candidate_errors"] / p90["candidate_requests"]
            > p90["baseline_errors"] / p90["baseline_requests"]
        )


@pytest.mark.slow
def test_the_demo_with_xgboost_trained_tuned_and_gated_by_local_sagemaker_jobs(tmp_path: Path) -> None:
    """`variantctl demo --trainer sagemaker --scenario error-spike`: the baseline from a training job,
    the candidate from a tuning job, gated by batch transform jobs, then deployed with the local
    SageMaker's fault knob on its container and caught by the 5xx guardrail."""
    pytest.importorskip("xgboost")
    pytest.importorskip("sagemaker")
    said: list[str] = []
    result = demo.run(tmp_path, "error-spike", timeout=110, say=said.append, trainer="sagemaker")
    assert result["outcome"] == "rolled_back" and "guardrail 5xx shows harm" in result["reason"]
    assert any("training job churn-" in line for line in said)
    assert any("tuning job churn-" in line and "offline gate passed" in line for line in said)
    database = Database(f"sqlite:///{tmp_path / 'registry.db'}")
    try:
        with database.read() as session:
            versions = {v.version: v for v in session.scalars(select(ModelVersion))}
    finally:
        database.dispose()
    assert versions[2].artifact_uri.startswith("s3://variantctl-demo/training/churn/")
    assert versions[2].artifact_uri.endswith("/output/model.tar.gz")
    assert versions[2].image_uri.endswith("/sagemaker-xgboost:1.7-1")


def test_manual_gate_waits_for_resume(tmp_path: Path, artifacts: dict[str, Path], db_url: str) -> None:
    with make_world(tmp_path, artifacts, url=db_url) as world:
        rollout_id = world.start(policy_text(GATED))
        paused = world.tick_until(rollout_id, ("paused",))
        assert (paused.step, paused.weight) == (1, 20.0)
        reconciler = world.reconciler()
        for _ in range(3):
            reconciler.tick()
        assert world.rollout(rollout_id).state == "paused"
        with world.database.write() as session:
            rollouts.set_intent(session, rollout_id, "resume", "looked fine", "alice")
        done = world.tick_until(rollout_id, ("promoted",))
        assert done.weight == 50.0
        assert platform_matches_registry(world) == {"baseline": "churn:2"}
        actions = [
            e.action for e in audit.history(world.database, audit.HistoryFilter(endpoint=ENDPOINT, limit=50))
        ]
        assert "operator.resume" in actions and "rollout.resume" in actions
        assert audit.verify(world.database).ok


def test_operator_pause_then_abort_rolls_back(
    tmp_path: Path, artifacts: dict[str, Path], db_url: str
) -> None:
    with make_world(tmp_path, artifacts, url=db_url) as world:
        rollout_id = world.start(policy_text(CANARY, min_samples=10_000))
        world.tick_until(rollout_id, ("running",))
        with world.database.write() as session:
            rollouts.set_intent(session, rollout_id, "pause", "investigating", "bob")
        world.tick_until(rollout_id, ("paused",))
        with world.database.write() as session:
            rollouts.set_intent(session, rollout_id, "abort", "pager went off", "bob")
        done = world.tick_until(rollout_id, ("aborted",))
        assert "pager went off" in (done.reason or "")
        assert platform_matches_registry(world) == {"baseline": "churn:1"}
        with world.database.read() as session:
            statuses = {v.ref: v.status for v in session.scalars(select(ModelVersion))}
        assert statuses == {"churn:1": "serving", "churn:2": "approved"}  # an abort keeps the candidate


def test_forced_promotion_is_recorded_loudly(tmp_path: Path, artifacts: dict[str, Path], db_url: str) -> None:
    with make_world(tmp_path, artifacts, url=db_url) as world:
        rollout_id = world.start(policy_text(CANARY, min_samples=10_000))
        world.tick_until(rollout_id, ("running",))
        with world.database.write() as session:
            rollouts.set_intent(session, rollout_id, "promote", "hotfix for incident 42", "carol")
        world.tick_until(rollout_id, ("promoted",))
        [event] = audit.history(world.database, audit.HistoryFilter(action="rollout.promote"))
        assert "skipping the analysis: hotfix for incident 42" in (event.reason or "")
        assert json.loads(event.payload)["forced"] is True


def test_two_reconcilers_never_act_on_the_same_rollout(
    tmp_path: Path, artifacts: dict[str, Path], db_url: str
) -> None:
    with make_world(tmp_path, artifacts, url=db_url) as world:
        rollout_id = world.start(policy_text(CANARY))
        first, second = world.reconciler("daemon-a"), world.reconciler("daemon-b")
        skipped: list[str] = []

        def race(reconciler: object) -> None:
            for _ in range(200):
                for outcome in reconciler.tick():  # type: ignore[attr-defined]
                    if outcome.did == "skip":
                        skipped.append(outcome.detail)
                if world.rollout(rollout_id).state == "promoted":
                    return

        threads = [threading.Thread(target=race, args=(r,)) for r in (first, second)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert world.rollout(rollout_id).state == "promoted"
        assert skipped and all("another daemon holds the lease" in s for s in skipped)
        actions = [
            e.action for e in audit.history(world.database, audit.HistoryFilter(endpoint=ENDPOINT, limit=100))
        ]
        assert actions.count("rollout.promote") == 1 and actions.count("rollout.promoted") == 1
        assert actions.count("rollout.deploy") == 1
        assert platform_matches_registry(world) == {"baseline": "churn:2"}
        assert audit.verify(world.database).ok


def test_promotion_with_sagemaker_blue_green_guardrails(
    tmp_path: Path, artifacts: dict[str, Path], db_url: str
) -> None:
    text = policy_text(CANARY) + (
        "  promotion: {mode: blueGreen, blueGreen: {routing: CANARY, sizePercent: 10, waitSeconds: 1}}\n"
    )
    text = text.replace("decisions: {maxDuration: 5m}\n", "decisions:\n  maxDuration: 5m\n")
    with make_world(tmp_path, artifacts, url=db_url) as world:
        rollout_id = world.start(text)
        world.tick_until(rollout_id, ("promoted",))
        described = world.host.client("sagemaker").describe_endpoint(EndpointName=ENDPOINT)
        routing = described["LastDeploymentConfig"]["BlueGreenUpdatePolicy"]["TrafficRoutingConfiguration"]
        assert routing == {
            "Type": "CANARY",
            "WaitIntervalInSeconds": 1,
            "CanarySize": {"Type": "CAPACITY_PERCENT", "Value": 10},
        }
        assert platform_matches_registry(world) == {"baseline": "churn:2"}


def test_a_shadow_step_copies_traffic_to_the_candidate_then_continues(
    tmp_path: Path, artifacts: dict[str, Path], db_url: str
) -> None:
    steps = "[{shadow: {percent: 50, duration: 2s}}, {setWeight: {percent: 50}}, {analysis: {}}]"
    with make_world(tmp_path, artifacts, url=db_url) as world:
        rollout_id = world.start(policy_text(steps))
        shadowing = world.tick_until(rollout_id, ("running",))
        reconciler = world.reconciler()
        seen_shadow = False
        with world.traffic():
            for _ in range(200):
                reconciler.tick()
                described = world.host.client("sagemaker").describe_endpoint(EndpointName=ENDPOINT)
                if described.get("ShadowProductionVariants"):
                    seen_shadow = True
                    shares = {v["VariantName"]: v["CurrentWeight"] for v in described["ProductionVariants"]}
                    # the shadow beside the baseline alone: SageMaker takes one production variant
                    assert shares == {"baseline": 100.0}
                if world.rollout(rollout_id).state == "promoted":
                    break
        assert shadowing is not None and seen_shadow
        points = world.host.metrics.datapoints(
            (ENDPOINT, "candidate-shadow", "Invocations"),
            datetime.fromtimestamp(0, UTC),
            datetime.now(UTC),
            60,
            "Sum",
        )
        assert sum(v for _, v in points) > 0, "the shadow variant answered copies of the requests"
        assert world.rollout(rollout_id).state == "promoted"
        actions = [
            e.action for e in audit.history(world.database, audit.HistoryFilter(endpoint=ENDPOINT, limit=60))
        ]
        assert (
            actions.index("rollout.shadow_ended")
            < actions.index("rollout.shadowing")
            < actions.index("rollout.shadow")
        )  # newest first
        assert platform_matches_registry(world) == {"baseline": "churn:2"}
