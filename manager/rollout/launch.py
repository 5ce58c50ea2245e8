"""Starting a rollout from a policy: the policy's target and candidate, as the registry takes them."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Session

from manager import policy as policies
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


def candidate(session: Session, policy: policies.RolloutPolicy) -> ModelVersion:
    """The version `policy` would roll out now."""
    spec = policy.target.candidate
    return rollouts.resolve_candidate(session, spec.model, spec.version)
