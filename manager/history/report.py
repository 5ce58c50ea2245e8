"""`rollout report`: one rollout's decision record, as JSON or as one self-contained HTML page.

It holds the policy as it ran (text, hash and the check of one against the other and the history),
every step with its times and weights, each metric's sequential statistics over time (recomputed
from the stored observations with the same `judge` the daemon decides with, at the end of every
observation window: the confidence sequence's bounds against the margin, the error e-value against
its threshold, the samples per arm), the decision and the numbers behind it, every operator action
with actor and reason, and every history event's seq and hash, so that the page can be checked
against the chain (`variantctl history show SEQ`, `variantctl audit verify`).

The page draws its charts with uPlot, inlined with the data: it opens without network access (a
Content-Security-Policy forbids any request).
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from manager import policy as policies
from manager.clock import format_instant
from manager.history import audit
from manager.metrics.samples import ErrorWindow, PhaseData
from manager.registry import observations, rollouts
from manager.registry.packages import package_summary
from manager.registry.tables import Observation, RolloutPhase
from manager.registry.vocabulary import is_final
from manager.rollout.judge import judge
from manager.stats.evalues import HarmEvidence

MAX_POINTS = 400  # per metric: a long rollout is thinned evenly (the last look always kept)
FINISHING = ("rollout.promote", "rollout.rollback")


def build(session: Session, rollout_id: int) -> dict[str, Any]:
    view = rollouts.view(session, rollout_id)
    policy = policies.parse(view.policy_yaml, f"rollout {rollout_id}'s policy")
    events = list(
        session.scalars(audit.history_query(audit.HistoryFilter(rollout=rollout_id, limit=None), session))
    )
    events.sort(key=lambda e: e.seq)
    own = [e for e in events if e.subject_type == "rollout"]
    phases = list(
        session.scalars(
            select(RolloutPhase).where(RolloutPhase.rollout_id == rollout_id).order_by(RolloutPhase.phase)
        )
    )
    decision = next((e for e in reversed(own) if e.action in FINISHING), None)
    return {
        "model_package": package_summary(session, view.rollout, view.candidate),
        "rollout": {**view.record(), "started_by": view.started_by},
        "policy": {
            "name": policy.name,
            "hash": view.policy_hash,
            "text": policies.redacted_text(view.policy_yaml),
            "check": rollouts.policy_problems(session, rollout_id)
            or ["the text matches its hash and the history"],
        },
        "steps": _steps(policy, own, view.step, view.state),
        "phases": [
            {"phase": p.phase, "started_at": p.started_at, "ended_at": p.ended_at, "weights": p.weights}
            for p in phases
        ],
        "metrics": _series(session, rollout_id, policy, view.baseline_variant, view.candidate_variant, own),
        "decision": None if decision is None else _event(decision, with_payload=True),
        "operator_actions": [_event(e, with_payload=False) for e in own if e.action.startswith("operator.")],
        "events": [_event(e, with_payload=True) for e in events],
        "chain": {
            "first_seq": events[0].seq if events else None,
            "last_seq": events[-1].seq if events else None,
            "how_to_check": "each event's hash is in the registry's chain: `variantctl history show SEQ` "
            "prints it, and `variantctl audit verify` recomputes the chain",
        },
    }


def version(session: Session, rollout_id: int) -> tuple[Any, ...]:
    """What `build` depends on, cheaply: the rollout's row as last updated, its observations (count,
    last id, totals: a window merged with late data changes them) and its newest history event."""
    from sqlalchemy import func

    from manager.registry.tables import AuditEvent, Rollout

    row = session.execute(
        select(Rollout.updated_at, Rollout.state, Rollout.step, Rollout.phase).where(Rollout.id == rollout_id)
    ).one_or_none()
    observed = session.execute(
        select(
            func.count(), func.max(Observation.id), func.sum(Observation.n), func.sum(Observation.total)
        ).where(Observation.rollout_id == rollout_id)
    ).one()
    newest = session.scalar(select(func.max(AuditEvent.seq)))
    return (None if row is None else tuple(row), tuple(observed), newest)


def _event(row: Any, with_payload: bool) -> dict[str, Any]:
    out = {
        "seq": row.seq,
        "at": row.at,
        "actor": row.actor,
        "action": row.action,
        "subject": f"{row.subject_type}/{row.subject_id}",
        "reason": row.reason,
        "hash": row.hash,
        "prev_hash": row.prev_hash,
    }
    if with_payload:
        out["payload"] = json.loads(row.payload)
    return out


def _steps(policy: policies.RolloutPolicy, own: list[Any], step: int, state: str) -> list[dict[str, Any]]:
    """The plan, each step with when the rollout reached and left it (from the events' record of
    the rollout), the candidate's weight while it was there, and where the rollout stands: done,
    current, next (or not reached, once it has ended)."""
    plan = policies.describe_plan(policy)
    reached: dict[int, datetime] = {}
    left: dict[int, datetime] = {}
    weights: dict[int, float] = {}
    current: int | None = None
    for event in own:
        snap = json.loads(event.payload).get("rollout")
        if snap is None or snap["state"] == "pending":
            continue
        step = int(snap["step"])
        if current is not None and step != current:
            left.setdefault(current, event.at)
        reached.setdefault(step, event.at)
        weights[step] = float(snap["weight"])
        current = step
        if snap["state"] in ("promoted", "rolled_back", "aborted", "failed") and step in reached:
            left.setdefault(step, event.at)

    def where(i: int) -> str:
        if is_final(state):
            return "done" if i in reached else "not reached"
        if state == "pending" or i > step:
            return "next"
        return "done" if i < step else "current"

    return [
        {
            **row,
            "state": where(i),
            "reached_at": reached.get(i),
            "left_at": left.get(i),
            "weight": weights.get(i),
        }
        for i, row in enumerate(plan)
    ]


@dataclass
class _Accumulator:
    """Observations summed window by window, as `registry.observations` sums them all at once; for
    each error measure, its e-value kept running over the windows both arms have reported (a look
    then costs the windows since the last look, not all of them)."""

    baseline: str
    candidate: str
    errors: frozenset[str]  # the measures judged by error counts
    sums: dict[tuple[str, int, str], list[float]] = field(
        default_factory=lambda: defaultdict(lambda: [0.0] * 6)
    )
    arms: dict[tuple[str, int, datetime], dict[str, tuple[float, float]]] = field(default_factory=dict)
    fresh: dict[str, list[ErrorWindow]] = field(default_factory=lambda: defaultdict(list))
    harms: dict[str, HarmEvidence] = field(default_factory=lambda: defaultdict(HarmEvidence))

    def add(self, row: Any) -> None:
        s = self.sums[(row.metric, row.phase, row.variant_name)]
        for i, value in enumerate((row.n, row.total, row.total_sq, row.x_total, row.x_sq, row.xy)):
            s[i] += value
        if row.metric not in self.errors:
            return
        arms = self.arms.setdefault((row.metric, row.phase, row.window_start), {})
        arms[row.variant_name] = (float(row.n), float(row.total))
        if len(arms) == 2 and self.baseline in arms and self.candidate in arms:
            self.fresh[row.metric].append(ErrorWindow(*arms[self.baseline], *arms[self.candidate]))

    def harm(self, measure: str) -> HarmEvidence:
        harm = self.harms[measure]
        harm.add_many(self.fresh.pop(measure, []))
        return harm

    def phases(self, measure: str) -> list[PhaseData]:
        none = (0.0,) * 6
        return [
            observations.assemble(
                phase,
                self.sums.get((measure, phase, self.baseline), none),
                self.sums.get((measure, phase, self.candidate), none),
                (),
                self.baseline,
                self.candidate,
            )
            for phase in sorted({p for (m, p, _v) in self.sums if m == measure})
        ]


def _series(
    session: Session,
    rollout_id: int,
    policy: policies.RolloutPolicy,
    baseline: str,
    candidate: str,
    own: list[Any],
) -> list[dict[str, Any]]:
    """Each metric judged at the end of every observation window, on what had been observed by then
    (`source: window`), and as each decision event recorded it when the daemon decided (`source:
    decision`; the history's own numbers), in time order."""
    rows = list(
        session.execute(
            select(
                Observation.metric,
                Observation.phase,
                Observation.variant_name,
                Observation.window_start,
                Observation.window_end,
                Observation.n,
                Observation.total,
                Observation.total_sq,
                Observation.x_total,
                Observation.x_sq,
                Observation.xy,
            )
            .where(Observation.rollout_id == rollout_id)
            .order_by(Observation.window_end, Observation.id)
        )
    )
    ends = sorted({r.window_end for r in rows})
    if len(ends) > MAX_POINTS:
        step = len(ends) / MAX_POINTS
        ends = sorted({ends[int(i * step)] for i in range(MAX_POINTS)} | {ends[-1]})
    acc = _Accumulator(baseline, candidate, frozenset(m.measure for m in policy.metrics if m.counted))
    series: dict[str, list[dict[str, Any]]] = {m.name: [] for m in policy.metrics}
    index = 0
    for end in ends:  # the looks, in time order: each sums the windows that ended by then
        while index < len(rows) and rows[index].window_end <= end:
            acc.add(rows[index])
            index += 1
        for metric in policy.metrics:
            data = acc.phases(metric.measure)
            if not data:
                continue
            phase = max(p.phase for p in data)
            harm = acc.harm(metric.measure) if metric.counted else None
            verdict = judge(metric, data, phase, policy, harm_only=False, harm=harm)
            point = {"at": end, "source": "window", "status": verdict.status, **verdict.evidence}
            if point.get("estimate") is not None:  # in the bounds' orientation: positive is better
                point["improvement_estimate"] = point["estimate"] * (1 if metric.higher_is_better else -1)
            series[metric.name].append(point)
    for name, point in _decision_looks(own, policy):
        series[name].append(point)
    for points in series.values():
        points.sort(key=lambda p: p["at"])
    return [
        {
            "metric": m.name,
            "measure": m.measure,
            "kind": m.kind,
            "role": m.role,
            "dry_run": m.dry_run,
            "min_samples": m.min_samples,
            "test": m.test.type if not m.counted else "e-value",
            "points": series[m.name],
        }
        for m in policy.metrics
    ]


def _decision_looks(own: list[Any], policy: policies.RolloutPolicy) -> list[tuple[str, dict[str, Any]]]:
    """The evidence each decision event holds, per metric, at the event's time."""
    direction = {m.name: 1 if m.higher_is_better else -1 for m in policy.metrics}
    out = []
    for event in own:
        metrics = json.loads(event.payload).get("metrics")
        if not isinstance(metrics, dict):
            continue
        for name, evidence in metrics.items():
            if name not in direction or not isinstance(evidence, dict):
                continue
            point = {**evidence, "at": event.at, "source": "decision", "seq": event.seq}
            if point.get("estimate") is not None:
                point["improvement_estimate"] = point["estimate"] * direction[name]
            out.append((name, point))
    return out


def plain(value: Any) -> Any:
    """JSON's values: times as ISO 8601, and a float that is NaN or infinite (an unbounded interval,
    an e-value past 1e308) as null, which JSON can hold and a chart leaves out (the dashboard's rollout
    page failed on one: issue 31)."""
    if isinstance(value, datetime):
        return format_instant(value)
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def to_json(report: dict[str, Any]) -> str:
    return json.dumps(plain(report), indent=2, ensure_ascii=False, allow_nan=False)
