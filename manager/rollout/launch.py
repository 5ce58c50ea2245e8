"""Starting a rollout from a policy: the policy's target and candidate, as the registry takes them."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Session

from manager import policy as policies
from manager.errors import UserError
from manager.registry import rollouts
from manager.registry.tables import ModelVersion, Rollout


def request(policy: policies.RolloutPolicy, text: str) -> rollouts.StartRequest:
    target = policy.target
    return rollouts.StartRequest(
        endpoint=target.endpoint,
        baseline_variant=target.baseline_variant,
        candidate_variant=target.candidate_variant,
        candidate_model=target.candidate.model,
        candidate_version=target.candidate.version,
        policy_name=policy.name,
        policy_yaml=text,
        policy_hash=policies.digest(text),
    )


def start(session: Session, policy: policies.RolloutPolicy, text: str, actor: str, now: datetime) -> Rollout:
    """Start a rollout under `policy` (whose YAML is `text`); refused with one line when it cannot."""
    return rollouts.start(session, request(policy, text), actor, now)


def pinned(policy: policies.RolloutPolicy, version: ModelVersion) -> policies.RolloutPolicy:
    """`policy` with its candidate pinned to `version` (a retry, an undo)."""
    chosen = policies.Candidate.model_validate({"model": version.name, "version": version.version})
    return policy.model_copy(update={"target": policy.target.model_copy(update={"candidate": chosen})})


def candidate(session: Session, policy: policies.RolloutPolicy) -> ModelVersion:
    """The version `policy` would roll out now."""
    spec = policy.target.candidate
    return rollouts.resolve_candidate(session, spec.model, spec.version)


def approve_gate(session: Session, rollout_id: int, reason: str | None, actor: str) -> Rollout:
    """Release the manual gate (a `pause` step with no duration) the rollout waits at: a `resume`,
    recorded as the gate's approval. Refused when the rollout is not paused at such a step."""
    view = rollouts.view(session, rollout_id)
    plan = policies.parse(view.policy_yaml).plan
    step = plan[view.step] if view.step < len(plan) else None
    manual = step is not None and step.pause is not None and not step.pause.duration
    if view.state != "paused" or not manual:
        raise UserError(f"rollout {rollout_id} is not waiting at a manual gate (it is {view.state})")
    why = f"manual gate approved: {reason or 'no reason given'}"
    return rollouts.set_intent(session, rollout_id, "resume", why, actor)
