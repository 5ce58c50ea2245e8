"""What `rollout status`, `rollout watch` and the demo show: the rollout, the step it is on, and each
metric's verdict on the current phase, judged exactly as `decide` judges it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from manager import policy as policies
from manager.registry import observations, rollouts
from manager.rollout.decide import judge


@dataclass(frozen=True)
class RolloutStatus:
    view: rollouts.RolloutView
    next: str  # what the current step does, or "promote" at the end of the plan
    metrics: dict[str, dict[str, Any]]  # by metric name: status and evidence

    def record(self) -> dict[str, Any]:
        return {**self.view.record(), "next": self.next, "metrics": self.metrics}


def status(session: Session, rollout_id: int) -> RolloutStatus:
    view = rollouts.view(session, rollout_id)
    policy = policies.parse(view.policy_yaml)
    data = observations.phase_data(
        session,
        rollout_id,
        [m.measure for m in policy.metrics],
        view.baseline_variant,
        view.candidate_variant,
    )
    plan = policies.describe_plan(policy)
    metrics = {}
    for metric in policy.metrics:
        verdict = judge(metric, data.get(metric.measure, []), view.phase, policy, harm_only=False)
        metrics[metric.name] = {"status": verdict.status, **verdict.evidence}
    return RolloutStatus(view, plan[view.step]["what"] if view.step < len(plan) else "promote", metrics)
