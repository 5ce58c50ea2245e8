"""What `rollout status`, `rollout watch` and the demo show: the rollout, the step it is on, and each
metric's verdict on the current phase, judged exactly as `decide` judges it."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy.orm import Session

from manager import policy as policies
from manager.registry import endpoints, liveness, observations, pairs, rollouts
from manager.registry.packages import package_summary
from manager.registry.tables import Rollout
from manager.registry.vocabulary import is_final
from manager.rollout.judge import judge, paired_evidence, paired_verdict

# `rollout watch` and `rollout status --wait` end with these (README: Rolling out).
EXIT_BY_OUTCOME = {"promoted": 0, "rolled_back": 3, "aborted": 3, "failed": 4}


@dataclass(frozen=True)
class RolloutStatus:
    view: rollouts.RolloutView
    next: str  # what the current step does, or "promote" at the end of the plan
    metrics: dict[str, dict[str, Any]]  # by metric name: status, evidence, minimum sample, dry run
    policy: str = ""
    steps: tuple[dict[str, Any], ...] = ()  # each with `state`: done, current or next
    ingest: dict[str, Any] | None = None  # ground-truth ingestion for the endpoint
    paired: dict[str, Any] | None = None  # a replay's progress and label-free evidence
    package: dict[str, Any] | None = None  # the candidate's model package and the outcome's write-back
    daemon: dict[str, Any] | None = None  # while it runs: is a daemon ticking its endpoint (liveness)
    desired_weight: float = 0.0  # the candidate's share its current step asks for (`weight`: in force)

    def record(self) -> dict[str, Any]:
        total = len(self.steps)
        return {
            **self.view.record(),
            "policy": self.policy,
            # Argo's counter: the step it is on, 1-based, of how many (all of them once it is promoted)
            "step_of": f"{min(self.view.step + 1, total)}/{total}",
            "desired_weight": self.desired_weight,
            "daemon": self.daemon,
            "next": self.next,
            "steps": list(self.steps),
            "metrics": self.metrics,
            "ingest": self.ingest,
            "paired": self.paired,
            "model_package": self.package,
        }


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
    paired = pairs.read_many(session, [rollout_id]).get(rollout_id)
    # At weight 0 after a replay, the metrics are judged on the pairs, as `decide` judges them.
    on_pairs = paired is not None and view.weight <= 0 and policy.labels_independent_of_serving
    metrics = {}
    for metric in policy.metrics:
        if on_pairs and paired is not None and metric.source == "quality":
            verdict = paired_verdict(metric, paired.sums.get(metric.measure), policy, harm_only=False)
        else:
            verdict = judge(metric, data.get(metric.measure, []), view.phase, policy, harm_only=False)
        metrics[metric.name] = {
            "status": verdict.status,
            "min_samples": metric.min_samples,
            "dry_run": metric.dry_run,
            "role": metric.role,
            **verdict.evidence,
        }
    steps = tuple({**row, "state": _step_state(view, i)} for i, row in enumerate(plan))
    quality = any(m.source == "quality" for m in policy.metrics)
    upcoming = plan[view.step]["what"] if view.step < len(plan) else "promote"
    return RolloutStatus(
        view,
        f"nothing: the rollout is {view.state}" if is_final(view.state) else upcoming,
        metrics,
        policy.name,
        steps,
        endpoints.ingest_status(session, view.endpoint) if quality else None,
        paired_evidence(paired, policy) if paired is not None else None,
        package_summary(session, rollout_id, view.candidate),
        None if is_final(view.state) else asdict(liveness.check(session, view.endpoint)),
        _desired(session, view, policy),
    )


def _desired(session: Session, view: rollouts.RolloutView, policy: policies.RolloutPolicy) -> float:
    """The weight the rollout is moving to (a change under way), or its current step's, or its end's."""
    if view.state in rollouts.FINAL_WEIGHT:
        return rollouts.FINAL_WEIGHT[view.state]
    row = session.get(Rollout, view.rollout)
    pending = row.pending if row is not None else None
    if pending and pending.get("op") == "set_weight" and pending.get("weight") is not None:
        return float(pending["weight"])
    if view.state in ("rolling_back",):
        return 0.0
    if view.state == "promoting":
        return 100.0
    weight = 0.0
    for step in policy.plan[: view.step + 1]:
        if step.set_weight is not None:
            weight = step.set_weight.percent
    return weight


def _step_state(view: rollouts.RolloutView, i: int) -> str:
    """done, current or next while it runs; once it ends, the steps it never reached say so (a rollout
    rolled back at step 1 has not done steps 2 to 5: issue 31)."""
    promoted = view.state in ("promoted", "promoting")
    if promoted or i < view.step:
        return "done"
    if is_final(view.state) or view.state == "rolling_back":
        return f"ended here ({view.state})" if i == view.step else "not reached"
    return "current" if i == view.step else "next"
