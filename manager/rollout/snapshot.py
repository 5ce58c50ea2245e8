"""A rollout as the registry had it when the tick began, read for every active rollout at once,
and the one place where the decision core's `RolloutState` is built from it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from manager.registry.tables import Endpoint, EndpointLease, Rollout, RolloutPhase
from manager.registry.vocabulary import ACTIVE_ROLLOUT_STATES
from manager.rollout.pending import PendingChange
from manager.rollout.verdicts import SRM_REASON, RolloutState

PhaseSpan = tuple[int, datetime, datetime | None]  # phase, started, ended (None while it lasts)


@dataclass(frozen=True)
class Snapshot:
    id: int
    endpoint: str
    state: str
    step: int
    phase: int
    weight: float
    created_at: datetime
    step_started_at: datetime
    phase_started_at: datetime
    pending: PendingChange | None
    intent: str | None
    intent_reason: str | None
    policy_yaml: str
    policy_hash: str
    metrics_cursor: datetime | None
    lease_owner: str | None
    lease_expires: datetime | None
    lease_epoch: int | None
    phases: tuple[PhaseSpan, ...]
    shadow_config: str | None
    endpoint_status: str | None
    baseline_variant: str
    candidate_variant: str
    failures: int
    retry_at: datetime | None
    reason: str | None = None

    @property
    def variants(self) -> tuple[str, str]:
        """(baseline, candidate) variant names, fixed when the rollout started."""
        return self.baseline_variant, self.candidate_variant

    def lease_fresh(self, owner: str, now: datetime, half_life: float) -> bool:
        """Held by `owner` with more than `half_life` seconds left: no write is needed to keep it."""
        return (
            self.lease_owner == owner
            and self.lease_expires is not None
            and (self.lease_expires - now).total_seconds() > half_life
        )

    def phase_of(self, start: datetime, end: datetime) -> int | None:
        """The phase a window lies wholly inside (weights were fixed throughout it), if any."""
        return next(
            (p for p, began, ended in self.phases if start >= began and (ended is None or end <= ended)),
            None,
        )

    def decision_state(self, endpoint_busy: bool) -> RolloutState:
        return RolloutState(
            state=self.state,
            step=self.step,
            phase=self.phase,
            weight=self.weight,
            started_at=self.created_at,
            step_started_at=self.step_started_at,
            phase_started_at=self.phase_started_at,
            endpoint_ready=not endpoint_busy and self.pending is None,
            intent=self.intent,
            intent_reason=self.intent_reason,
            shadowing=self.shadow_config is not None,
            ratio_paused=self.state == "paused" and (self.reason or "").startswith(SRM_REASON),
        )


def read(session: Session, rollout_id: int | None = None) -> list[Snapshot]:
    """Every active rollout (or just `rollout_id`), in two queries."""
    stmt = (
        select(
            Rollout,
            Endpoint.name,
            Endpoint.last_status,
            EndpointLease.owner,
            EndpointLease.expires_at,
            EndpointLease.epoch,
        )
        .join(Endpoint, Endpoint.id == Rollout.endpoint_id)
        .outerjoin(EndpointLease, EndpointLease.endpoint == Endpoint.name)
        .where(Rollout.state.in_(ACTIVE_ROLLOUT_STATES))
        .order_by(Rollout.id)
    )
    if rollout_id is not None:
        stmt = stmt.where(Rollout.id == rollout_id)
    rows = session.execute(stmt).all()
    phases: dict[int, list[PhaseSpan]] = {}
    ids = [r[0].id for r in rows]
    if ids:
        for p in session.scalars(
            select(RolloutPhase).where(RolloutPhase.rollout_id.in_(ids)).order_by(RolloutPhase.phase)
        ):
            phases.setdefault(p.rollout_id, []).append((p.phase, p.started_at, p.ended_at))
    return [
        Snapshot(
            id=r.id,
            endpoint=name,
            state=r.state,
            step=r.step,
            phase=r.phase,
            weight=r.weight,
            created_at=r.created_at,
            step_started_at=r.step_started_at or r.created_at,
            phase_started_at=r.phase_started_at or r.created_at,
            pending=PendingChange.from_json(r.pending),
            intent=r.intent,
            intent_reason=r.intent_reason,
            policy_yaml=r.policy_yaml,
            policy_hash=r.policy_hash,
            metrics_cursor=r.metrics_cursor,
            lease_owner=owner,
            lease_expires=expires,
            lease_epoch=epoch,
            phases=tuple(phases.get(r.id, [])),
            shadow_config=r.shadow_config,
            endpoint_status=status,
            baseline_variant=r.baseline_variant,
            candidate_variant=r.candidate_variant,
            failures=r.failures,
            retry_at=r.retry_at,
            reason=r.reason,
        )
        for r, name, status, owner, expires, epoch in rows
    ]
