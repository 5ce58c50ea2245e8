"""Registry rows for tests and benchmarks that need a rollout but none of the machinery around it."""

from __future__ import annotations

from datetime import datetime

from manager.db import Database
from manager.registry.tables import Endpoint, ModelVersion, Rollout, RolloutPhase


def bare_rollout(database: Database, started: datetime, weights: dict[str, float] | None = None) -> int:
    """A running rollout of m:2 beside m:1 on endpoint `ep`, in phase 0 since `started`."""
    with database.write() as session:
        base = ModelVersion(name="m", version=1, framework="sklearn", artifact_uri="s3://b/1")
        cand = ModelVersion(name="m", version=2, framework="sklearn", artifact_uri="s3://b/2")
        endpoint = Endpoint(name="ep")
        session.add_all([base, cand, endpoint])
        session.flush()
        rollout = Rollout(
            endpoint_id=endpoint.id,
            baseline_version_id=base.id,
            candidate_version_id=cand.id,
            policy_yaml="{}",
            policy_hash="0" * 64,
            state="running",
        )
        session.add(rollout)
        session.flush()
        session.add(
            RolloutPhase(rollout_id=rollout.id, phase=0, started_at=started, weights=dict(weights or {}))
        )
        return rollout.id
