"""`variantctl rollout undo ENDPOINT [--to-version N]` (Argo's `undo`): back to a previous version as
a rollout under a policy, never a silent swap. The version is the one the last promotion replaced, or
the one named; the policy is the endpoint's last rollout's, or the one given. The rollout's start is
recorded with an `rollout.undo` event saying from what to what, and why."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from manager import policy as policies
from manager.errors import UserError
from manager.registry import models
from manager.registry.rollouts import record_event, serving_baseline, without_rollout
from manager.registry.tables import Endpoint, ModelVersion, Rollout
from manager.rollout import launch


def target(session: Session, endpoint: str, to_version: int | None) -> tuple[ModelVersion, ModelVersion, str]:
    """(the version serving now, the version to go back to, how it was chosen)."""
    row = without_rollout(session, endpoint, "abort it to go back now")
    current = serving_baseline(row, None).model_version
    if to_version is not None:
        chosen = models.get(session, f"{current.name}:{to_version}")
        if chosen.id == current.id:
            raise UserError(f"{chosen.ref} is already serving on {endpoint}")
        return current, chosen, f"named (--to-version {to_version})"
    promoted = session.scalar(
        select(Rollout)
        .where(
            Rollout.endpoint_id == row.id,
            Rollout.state == "promoted",
            Rollout.candidate_version_id == current.id,
        )
        .order_by(Rollout.id.desc())
        .limit(1)
    )
    if promoted is None:
        raise UserError(
            f"nothing to undo: no rollout put {current.ref} on {endpoint}; name the version (--to-version N)"
        )
    return current, promoted.baseline, f"what rollout {promoted.id} replaced"


def policy_for(session: Session, endpoint: str, text: str | None) -> tuple[policies.RolloutPolicy, str]:
    """The policy given, or the endpoint's last rollout's; its endpoint must be this one."""
    if text is None:
        last = session.scalar(
            select(Rollout)
            .join(Endpoint, Endpoint.id == Rollout.endpoint_id)
            .where(Endpoint.name == endpoint)
            .order_by(Rollout.id.desc())
            .limit(1)
        )
        if last is None:
            raise UserError(
                f"no rollout has run on {endpoint}: give the policy to undo under (--policy FILE)"
            )
        text = last.policy_yaml
    policy = policies.parse(text, f"{endpoint}'s policy")
    if policy.target.endpoint != endpoint:
        raise UserError(f"the policy is for endpoint {policy.target.endpoint}, not {endpoint}")
    return policy, text


def start(
    session: Session,
    endpoint: str,
    to_version: int | None,
    text: str | None,
    reason: str,
    actor: str,
    now: datetime,
) -> Rollout:
    current, chosen, how = target(session, endpoint, to_version)
    policy, text = policy_for(session, endpoint, text)
    rollout = launch.start(session, launch.pinned(policy, chosen), text, actor, now)
    why = f"undo: back to {chosen.ref} ({how}) from {current.ref}: {reason}"
    record_event(session, rollout, actor, "rollout.undo", why, {"from": current.ref, "to": chosen.ref}, now)
    return rollout
