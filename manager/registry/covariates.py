"""The pre-period models of rollouts with `adjust: prePeriodModel`: stored once, with a history event
(`rollout.covariate`) naming the model's sha256, its training window and rows, or why there is none;
loaded for ingestion only when the stored bytes still hash to that fingerprint."""

from __future__ import annotations

import hashlib
import json
import pickle
from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from manager.metrics.covariate import Covariate
from manager.registry import rollouts
from manager.registry.tables import AuditEvent, Rollout
from manager.registry.work_tables import CovariateModel

EVENT = "rollout.covariate"


def decided(session: Session, rollout_ids: Iterable[int]) -> set[int]:
    """The rollouts whose covariate is fitted, or known to be impossible."""
    ids = list(rollout_ids)
    if not ids:
        return set()
    return set(session.scalars(select(CovariateModel.rollout_id).where(CovariateModel.rollout_id.in_(ids))))


def save(session: Session, rollout: Rollout, covariate: Covariate | None, reason: str, now: datetime) -> None:
    """The covariate (or None, and why), with its history event, in the caller's transaction."""
    if session.get(CovariateModel, rollout.id) is not None:
        return  # fitted once, never again during the rollout
    if covariate is None:
        session.add(CovariateModel(rollout_id=rollout.id, state="none", reason=reason[:2000], fitted_at=now))
        payload: dict[str, object] = {"adjusted": False}
    else:
        session.add(
            CovariateModel(
                rollout_id=rollout.id,
                state="fitted",
                reason=reason,
                fingerprint=covariate.fingerprint,
                model=covariate.pickled,
                rows=covariate.rows,
                first_served=covariate.first_served,
                last_served=covariate.last_served,
                outcome=covariate.outcome,
                fallback=covariate.fallback,
                fitted_at=now,
            )
        )
        payload = {"adjusted": True, **covariate.record()}
    rollouts.record_event(session, rollout, "daemon", EVENT, reason, payload, at=now)


def load(session: Session, rollout_ids: Iterable[int]) -> dict[int, Covariate]:
    """The fitted covariates of these rollouts whose bytes match their fingerprint."""
    ids = list(rollout_ids)
    if not ids:
        return {}
    recorded = {
        int(subject): json.loads(payload).get("fingerprint")
        for subject, payload in session.execute(
            select(AuditEvent.subject_id, AuditEvent.payload).where(
                AuditEvent.action == EVENT, AuditEvent.subject_id.in_([str(i) for i in ids])
            )
        )
    }
    out = {}
    for row in session.scalars(
        select(CovariateModel).where(CovariateModel.rollout_id.in_(ids), CovariateModel.state == "fitted")
    ):
        # Unpickled only when the bytes hash to the fingerprint the hash-chained history recorded:
        # altered since, they are not loaded, and the rollout is judged unadjusted.
        if row.model is None or hashlib.sha256(row.model).hexdigest() != recorded.get(row.rollout_id):
            continue
        assert row.first_served is not None and row.last_served is not None and row.fingerprint
        out[row.rollout_id] = Covariate(
            pickle.loads(row.model),
            row.model,
            row.fingerprint,
            row.first_served,
            row.last_served,
            row.rows,
            row.outcome or "",
            row.fallback,
        )
    return out


def for_endpoint(session: Session, endpoint: str, cached: dict[int, Covariate]) -> dict[int, Covariate]:
    """The fitted covariates of the endpoint's active rollouts (those in `cached` kept as they are:
    a rollout's covariate never changes)."""
    from manager.registry.tables import Endpoint
    from manager.registry.vocabulary import ACTIVE_ROLLOUT_STATES

    ids = set(
        session.scalars(
            select(CovariateModel.rollout_id)
            .join(Rollout, Rollout.id == CovariateModel.rollout_id)
            .join(Endpoint, Endpoint.id == Rollout.endpoint_id)
            .where(Endpoint.name == endpoint, Rollout.state.in_(ACTIVE_ROLLOUT_STATES))
            .where(CovariateModel.state == "fitted")
        )
    )
    kept = {rid: model for rid, model in cached.items() if rid in ids}
    return {**kept, **load(session, ids - set(kept))}
