"""`variantctl endpoints history NAME`: what an endpoint has served, from its history: each config it
served (its `endpoint.serves` events), from when until when, the models in it, who put it there and
under which rollout (Argo's `rollout history`, per endpoint, with the auditor's seq to check)."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from manager.clock import utcnow
from manager.errors import NotFound
from manager.history.attest import SERVES_EVENT
from manager.registry.rollouts import span
from manager.registry.tables import AuditEvent, Endpoint, Rollout

COLUMNS = ("from", "until", "for", "models", "config", "rollout", "actor", "seq")


def served(session: Session, endpoint: str) -> list[dict[str, Any]]:
    """Oldest first: one row per config the endpoint served, ending where the next began."""
    events = list(
        session.scalars(
            select(AuditEvent)
            .where(
                AuditEvent.subject_type == "endpoint",
                AuditEvent.subject_id == endpoint,
                AuditEvent.action == SERVES_EVENT,
            )
            .order_by(AuditEvent.seq)
        )
    )
    if not events and session.scalar(select(Endpoint.id).where(Endpoint.name == endpoint)) is None:
        raise NotFound(f"the history knows no endpoint {endpoint!r}")
    rollouts = list(
        session.scalars(
            select(Rollout)
            .join(Endpoint, Endpoint.id == Rollout.endpoint_id)
            .where(Endpoint.name == endpoint)
        )
    )
    rows = []
    for i, event in enumerate(events):
        payload = json.loads(event.payload)
        if payload.get("config") is None:  # forgotten: the previous row ended here
            continue
        until = events[i + 1].at if i + 1 < len(events) else None
        variants = payload.get("variants") or {}
        rows.append(
            {
                "from": event.at,
                "until": until,
                "for": span((until or utcnow()) - event.at) + ("" if until else " (serving)"),
                "models": ", ".join(f"{variant}: {model}" for variant, model in sorted(variants.items())),
                "config": payload["config"],
                "rollout": _rollout_at(rollouts, event.at),
                "actor": event.actor,
                "seq": event.seq,
            }
        )
    return rows


def _rollout_at(rollouts: list[Rollout], at: datetime) -> int | None:
    """The rollout under way (or ending) on the endpoint at `at`, if any: the newest such."""
    under_way = [
        r.id for r in rollouts if r.created_at <= at and (r.finished_at is None or r.finished_at >= at)
    ]
    return max(under_way, default=None)
