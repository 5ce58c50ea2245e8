"""Rollouts in the registry: starting one, operator intents, their history events, and the typed
view every surface shows (the CLI's tables, `rollout status`, the demo)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from manager import audit
from manager.errors import NotFound, UserError
from manager.registry import models
from manager.registry.tables import Endpoint, ModelVersion, Rollout
from manager.registry.vocabulary import ACTIVE_ROLLOUT_STATES, RolloutIntent


def serving_version(session: Session, endpoint: Endpoint, variant: str) -> ModelVersion:
    config = endpoint.current_config
    if config is None:
        raise UserError(
            f"endpoint {endpoint.name} has no config in the registry; create it with "
            "`variantctl endpoints create`"
        )
    found = next((v for v in config.variants if v.variant_name == variant), None)
    if found is None:
        names = ", ".join(v.variant_name for v in config.variants)
        raise UserError(f"endpoint {endpoint.name} has no variant {variant!r} (it has {names})")
    return found.model_version


def resolve_candidate(session: Session, model: str, version: int | None) -> ModelVersion:
    """`model:version`, or the newest approved version of `model` when no version is given."""
    if version is not None:
        return models.get(session, f"{model}:{version}")
    approved = models.list_versions(session, model, "approved")
    if not approved:
        raise NotFound(f"model {model} has no approved candidate to roll out")
    return approved[0]


@dataclass(frozen=True)
class StartRequest:
    """What starting a rollout needs from its policy, as plain values."""

    endpoint: str
    baseline_variant: str
    candidate_model: str
    candidate_version: int | None  # None: the newest approved version
    policy_name: str
    policy_yaml: str
    policy_hash: str


def start(session: Session, request: StartRequest, actor: str, now: datetime) -> Rollout:
    endpoint = session.scalar(select(Endpoint).where(Endpoint.name == request.endpoint))
    if endpoint is None:
        raise NotFound(
            f"no endpoint {request.endpoint!r} in the registry; create it with `variantctl endpoints create`"
        )
    active = session.scalar(
        select(Rollout).where(Rollout.endpoint_id == endpoint.id, Rollout.state.in_(ACTIVE_ROLLOUT_STATES))
    )
    if active is not None:
        raise UserError(
            f"endpoint {endpoint.name} already has rollout {active.id} ({active.state}); "
            "abort it or wait for it to end"
        )
    baseline = serving_version(session, endpoint, request.baseline_variant)
    candidate = resolve_candidate(session, request.candidate_model, request.candidate_version)
    if candidate.id == baseline.id:
        raise UserError(f"{candidate.ref} is already serving on {endpoint.name}")
    if candidate.status == "rejected":
        raise UserError(f"{candidate.ref} was rejected by its offline gate; it cannot be rolled out")
    rollout = Rollout(
        endpoint_id=endpoint.id,
        baseline_version_id=baseline.id,
        candidate_version_id=candidate.id,
        policy_yaml=request.policy_yaml,
        policy_hash=request.policy_hash,
        state="pending",
        created_at=now,
        updated_at=now,
        step_started_at=now,
    )
    session.add(rollout)
    session.flush()
    record_event(
        session,
        rollout,
        actor,
        "rollout.start",
        f"policy {request.policy_name}",
        {
            "baseline": baseline.ref,
            "candidate": candidate.ref,
            "policy": request.policy_name,
            "policy_hash": rollout.policy_hash,
        },
        at=now,
    )
    return rollout


INTENTS: dict[RolloutIntent, tuple[str, ...]] = {
    "pause": ("running",),
    "resume": ("paused",),
    "abort": ("pending", "running", "paused"),
    "promote": ("running", "paused"),
}


def set_intent(
    session: Session, rollout_id: int, intent: RolloutIntent, reason: str | None, actor: str
) -> Rollout:
    """Write what the operator wants; the daemon acts on it within a tick."""
    rollout = session.get(Rollout, rollout_id)
    if rollout is None:
        raise NotFound(f"no rollout {rollout_id}")
    if rollout.state not in INTENTS[intent]:
        raise UserError(
            f"rollout {rollout_id} is {rollout.state}; {intent} applies to a rollout that is "
            f"{' or '.join(INTENTS[intent])}"
        )
    rollout.intent, rollout.intent_reason = intent, reason
    record_event(
        session,
        rollout,
        actor,
        f"operator.{intent}",
        reason,
        {"state": rollout.state, "step": rollout.step},
    )
    return rollout


def record_event(
    session: Session,
    rollout: Rollout,
    actor: str,
    action: str,
    reason: str | None,
    payload: Mapping[str, Any],
    at: datetime | None = None,
) -> None:
    """One history event about `rollout`, in the caller's transaction."""
    names = (rollout.endpoint.name, rollout.candidate.name)
    audit.append(
        session, actor, audit.Event(action, "rollout", str(rollout.id), reason, payload, *names), at=at
    )


@dataclass(frozen=True)
class RolloutView:
    """A rollout as every surface shows it."""

    rollout: int
    endpoint: str
    baseline: str
    candidate: str
    state: str
    step: int
    phase: int
    weight: float
    intent: str | None
    reason: str | None
    created_at: datetime
    finished_at: datetime | None
    policy_hash: str
    policy_yaml: str

    @classmethod
    def of(cls, row: Rollout) -> RolloutView:
        return cls(
            rollout=row.id,
            endpoint=row.endpoint.name,
            baseline=row.baseline.ref,
            candidate=row.candidate.ref,
            state=row.state,
            step=row.step,
            phase=row.phase,
            weight=row.weight,
            intent=row.intent,
            reason=row.reason,
            created_at=row.created_at,
            finished_at=row.finished_at,
            policy_hash=row.policy_hash,
            policy_yaml=row.policy_yaml,
        )

    def record(self) -> dict[str, Any]:
        """For output: every field but the policy's text (its hash names it)."""
        return {k: v for k, v in vars(self).items() if k != "policy_yaml"}


def view(session: Session, rollout_id: int) -> RolloutView:
    row = session.get(Rollout, rollout_id)
    if row is None:
        raise NotFound(f"no rollout {rollout_id}")
    return RolloutView.of(row)


def views(session: Session, everything: bool = False) -> list[RolloutView]:
    """Rollouts, newest first: the active ones, or all of them."""
    stmt = select(Rollout).order_by(Rollout.id.desc())
    if not everything:
        stmt = stmt.where(Rollout.state.in_(ACTIVE_ROLLOUT_STATES))
    return [RolloutView.of(r) for r in session.scalars(stmt)]
