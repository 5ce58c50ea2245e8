"""The sample-ratio-mismatch guardrail on a live 50/50 phase of the local SageMaker: an endpoint whose
routing is skewed on purpose (a share of the candidate's requests goes to the baseline, as a broken
router would) pauses the rollout with the counts in the reason; a fair one is left alone."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import pytest

from manager.names import model_name
from manager.platforms.base import ModelSpec
from manager.platforms.sagemaker import SageMakerPlatform
from manager.registry import observations, rollouts
from manager.rollout.verdicts import SRM_REASON

from .rollout_support import World, make_world

POLICY = """
name: srm
target:
  endpoint: churn-prod
  candidateVariant: candidate
  candidate: {model: churn, version: 2}
steps: [{setWeight: {percent: 50}}, {analysis: {}}]
metrics:
  - {name: 5xx, role: primary, source: cloudwatch, measure: errors_5xx, kind: errors, higherIsBetter: false,
     minSamples: 1000000, onNoData: pass}
decisions: {maxDuration: 10m, maxSamples: 1000000}
"""


def _skewed(world: World, away: float) -> None:
    """The candidate's SageMaker model sends `away` of its requests elsewhere (the local host's knob)."""
    candidate = model_name("churn", 2)

    class Skewed(SageMakerPlatform):
        def ensure_model(self, spec: ModelSpec) -> None:
            if spec.name == candidate:
                spec = replace(
                    spec, environment={**spec.environment, "LOCAL_SAGEMAKER_FAULT_ROUTE_AWAY_RATE": str(away)}
                )
            super().ensure_model(spec)

    world.platform = Skewed(world.host.client("sagemaker"))


def _requests(world: World, rollout_id: int) -> tuple[float, float]:
    with world.database.read() as session:
        view = rollouts.view(session, rollout_id)
        data = observations.phase_data(session, rollout_id, ["invocations"], "baseline", "candidate")
    current = [p for p in data.get("invocations", []) if p.phase == view.phase]
    return (current[0].baseline.n, current[0].candidate.n) if current else (0.0, 0.0)


@pytest.mark.parametrize("away", [0.3, 0.0], ids=["skewed", "fair"])
def test_a_skewed_split_pauses_the_rollout_and_a_fair_one_does_not(
    tmp_path: Path, artifacts: dict[str, Path], away: float
) -> None:
    with make_world(tmp_path, artifacts) as world:
        _skewed(world, away)
        rollout_id = world.start(POLICY)
        reconciler = world.reconciler()
        with world.traffic():
            deadline = time.monotonic() + 90
            while True:
                assert time.monotonic() < deadline, (
                    world.rollout(rollout_id).state,
                    _requests(world, rollout_id),
                )
                reconciler.tick()
                row = world.rollout(rollout_id)
                if row.state == "paused" or sum(_requests(world, rollout_id)) >= 3000:
                    break
                time.sleep(0.2)
        row = world.rollout(rollout_id)
        baseline, candidate = _requests(world, rollout_id)
        if away:
            assert row.state == "paused", (row.state, baseline, candidate)
            assert (row.reason or "").startswith(SRM_REASON)
            assert "expected 50.0%" in (row.reason or "")
            # the way out: an operator resumes once the router is fixed, and the phase starts afresh
            with world.database.write() as session:
                rollouts.set_intent(session, rollout_id, "resume", "router fixed", "oncall")
            reconciler.tick()
            after = world.rollout(rollout_id)
            assert after.state == "running" and after.phase == row.phase + 1 and after.weight == 50
        else:
            assert row.state == "running", row.reason
            assert baseline + candidate >= 3000 and abs(candidate / (baseline + candidate) - 0.5) < 0.05
