"""The one home of paired evidence in the registry: the sums the paired statistics read (added to in
the transaction that records the pairs, so a pair is counted once) and where each replay stands."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from manager.db import insert_for
from manager.metrics.samples import Paired, PairedSums, ReplayProgress
from manager.registry.tables import PairedSum, ReplayRequest, Rollout


@dataclass
class Delta:
    """What some new pairs add to one measure's sums."""

    n: float = 0.0
    sum_baseline: float = 0.0
    sum_candidate: float = 0.0
    sum_diff: float = 0.0
    sum_diff_sq: float = 0.0

    def add(self, baseline: float, candidate: float) -> None:
        d = candidate - baseline
        self.n += 1
        self.sum_baseline += baseline
        self.sum_candidate += candidate
        self.sum_diff += d
        self.sum_diff_sq += d * d


def add(session: Session, rollout_id: int, source: str, deltas: Mapping[str, Delta]) -> None:
    """Add these deltas to the rollout's sums, in the caller's transaction."""
    rows = [
        {"rollout_id": rollout_id, "source": source, "measure": measure, **vars(delta)}
        for measure, delta in deltas.items()
        if delta.n
    ]
    if not rows:
        return
    table = PairedSum.__table__
    statement = insert_for(session)(table)
    columns = ("n", "sum_baseline", "sum_candidate", "sum_diff", "sum_diff_sq")
    statement = statement.on_conflict_do_update(
        index_elements=["rollout_id", "source", "measure"],
        set_={c: table.c[c] + statement.excluded[c] for c in columns},
    )
    session.connection().execute(statement, rows)


def read_many(session: Session, ids: Iterable[int]) -> dict[int, Paired]:
    """Paired evidence for these rollouts (those that have any): sums per measure, and the replay's
    progress when it has a plan. Three queries in all."""
    ids = list(ids)
    if not ids:
        return {}
    sums: dict[tuple[int, str], dict[str, PairedSums]] = {}
    for row in session.scalars(select(PairedSum).where(PairedSum.rollout_id.in_(ids))):
        sums.setdefault((row.rollout_id, row.source), {})[row.measure] = PairedSums(
            row.n, row.sum_baseline, row.sum_candidate, row.sum_diff, row.sum_diff_sq
        )
    plans: dict[int, dict[str, Any]] = {
        rid: plan
        for rid, plan in session.execute(select(Rollout.id, Rollout.replay).where(Rollout.id.in_(ids)))
        if plan
    }
    states: dict[int, dict[str, int]] = {}
    if plans:
        for rid, state, count in session.execute(
            select(ReplayRequest.rollout_id, ReplayRequest.state, func.count())
            .where(ReplayRequest.rollout_id.in_(list(plans)))
            .group_by(ReplayRequest.rollout_id, ReplayRequest.state)
        ):
            states.setdefault(rid, {})[state] = int(count)
    out: dict[int, Paired] = {}
    for rid in ids:
        plan = plans.get(rid)
        progress = None
        if plan is not None:
            counted = states.get(rid, {})
            progress = ReplayProgress(
                planned=int(plan.get("planned", 0)),
                done=counted.get("done", 0),
                failed=counted.get("failed", 0),
                refused=plan.get("refused"),
                skipped=plan.get("skipped"),
            )
        for source in ("replay", "shadow"):
            found = sums.get((rid, source))
            if found is not None or (source == "replay" and progress is not None):
                out[rid] = Paired(source, found or {}, progress if source == "replay" else None)
                break
    return out
