"""The latency thresholds of a rollout's quantile guardrails (`kind: quantile`), fixed once, at its first
CloudWatch read: the policy's `thresholdMs`, or the baseline's percentile over the hour before the
start times 1 + the margin. A threshold fixed before the rollout's data is what keeps the test exact:
each variant's requests over it are counted, and the conditional-binomial e-value asks whether the
candidate's are more frequent than the baseline's. Recorded in the history (`rollout.thresholds`),
where every later read finds it; one the baseline had no data for stays unset (no data)."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from sqlalchemy import select

from manager import policy as policies
from manager.db import Database
from manager.registry import rollouts
from manager.registry.tables import AuditEvent, Rollout

EVENT = "rollout.thresholds"


def fixed(
    database: Database, source: Any, snap: Any, policy: policies.RolloutPolicy
) -> list[tuple[policies.Metric, float]]:
    """(metric, threshold in ms) of the policy's quantile guardrails that have one."""
    quantiles = [m for m in policy.metrics if m.kind == "quantile"]
    if not quantiles:
        return []
    with database.read() as session:
        recorded = _recorded(session, snap.id)
    missing = [m for m in quantiles if m.name not in recorded]
    if missing:
        found = {m.name: _measure(source, snap, m) for m in missing}
        with database.write() as session:
            recorded = _recorded(session, snap.id)  # another daemon may have fixed them meanwhile
            found = {name: value for name, value in found.items() if name not in recorded}
            rollout = session.get(Rollout, snap.id)
            if found and rollout is not None:
                rollouts.record_event(
                    session, rollout, "daemon", EVENT, _reason(found), {"thresholds": found}
                )
                recorded.update(found)
    return [(m, float(recorded[m.name]["threshold_ms"])) for m in quantiles if _usable(recorded.get(m.name))]


def _usable(entry: dict[str, Any] | None) -> bool:
    return entry is not None and entry.get("threshold_ms") is not None


def _measure(source: Any, snap: Any, metric: policies.Metric) -> dict[str, Any]:
    if metric.threshold_ms is not None:
        return {"threshold_ms": metric.threshold_ms, "from": "policy"}
    assert metric.quantile is not None and metric.latency is not None
    base = source.baseline_quantile(
        snap.endpoint, snap.baseline_variant, metric.latency, metric.quantile, snap.created_at
    )
    return {
        "threshold_ms": None if base is None else base * (1 + metric.test.margin),
        "from": "baseline",
        "baseline_ms": base,
        "quantile": metric.quantile,
        "margin": metric.test.margin,
        "window": [(snap.created_at - timedelta(hours=1)).isoformat(), snap.created_at.isoformat()],
    }


def _reason(found: dict[str, dict[str, Any]]) -> str:
    parts = []
    for name, entry in found.items():
        if entry["threshold_ms"] is None:
            parts.append(f"{name}: no latency of the baseline in the hour before the start (no data)")
        elif entry["from"] == "policy":
            parts.append(f"{name}: {entry['threshold_ms']:g} ms, as the policy says")
        else:
            parts.append(
                f"{name}: {entry['threshold_ms']:.4g} ms (the baseline's p{entry['quantile']:g} of"
                f" {entry['baseline_ms']:.4g} ms over the hour before the start, + {entry['margin']:g})"
            )
    return "; ".join(parts)


def _recorded(session: Any, rollout_id: int) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for (payload,) in session.execute(
        select(AuditEvent.payload)
        .where(AuditEvent.action == EVENT, AuditEvent.subject_id == str(rollout_id))
        .order_by(AuditEvent.seq)
    ):
        out.update(json.loads(payload).get("thresholds", {}))
    return out
