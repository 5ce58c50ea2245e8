"""The one home of `observations`: every write and every read of what the statistics need.

Two writers feed it and differ only in how a window that is already stored merges:
- CloudWatch windows (`merge="keep"`): a window is final once read, so reading it again changes
  nothing (the reconciler re-reads after a crash);
- joined ground truth (`merge="add"`): labels for one minute arrive over hours, so each batch adds
  its counts to the minute's row (the ingestor's cursor guarantees a batch is added once).
Reads aggregate in SQL, for many rollouts at once, into the leaf types of `manager.metrics.samples`.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Literal

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from manager.db import insert_for
from manager.metrics.samples import Arm, ErrorWindow, PhaseData
from manager.registry.tables import Observation

Merge = Literal["keep", "add"]
_KEY = ["rollout_id", "phase", "variant_name", "metric", "window_start"]


@dataclass(frozen=True)
class ObservedWindow:
    """One variant's counts for one metric over one window of one rollout phase."""

    rollout_id: int
    phase: int
    variant_name: str
    metric: str
    window_start: datetime
    window_end: datetime
    n: int
    total: float
    total_sq: float
    x_total: float = 0.0  # a covariate's sums (`adjust: prePeriodModel`), 0 without one
    x_sq: float = 0.0
    xy: float = 0.0


def record(session: Session, windows: Sequence[ObservedWindow], merge: Merge) -> int:
    """Store these windows; `merge` says what happens to a window already stored. Returns how many."""
    if not windows:
        return 0
    table = Observation.__table__
    statement = insert_for(session)(table)
    if merge == "keep":
        statement = statement.on_conflict_do_nothing()
    else:
        statement = statement.on_conflict_do_update(
            index_elements=_KEY,
            set_={
                "n": table.c.n + statement.excluded.n,
                "total": table.c.total + statement.excluded.total,
                "total_sq": table.c.total_sq + statement.excluded.total_sq,
                "x_total": table.c.x_total + statement.excluded.x_total,
                "x_sq": table.c.x_sq + statement.excluded.x_sq,
                "xy": table.c.xy + statement.excluded.xy,
            },
        )
    session.connection().execute(statement, [asdict(w) for w in windows])
    return len(windows)


@dataclass(frozen=True)
class Wanted:
    """Which measures a rollout's policy reads, which of them keep per-window counts, and its variants."""

    measures: tuple[str, ...]
    windowed: tuple[str, ...]
    baseline: str
    candidate: str


def phase_data_many(session: Session, wanted: dict[int, Wanted]) -> dict[int, dict[str, list[PhaseData]]]:
    """Observations for many rollouts at once: sums per measure, phase and arm (aggregated in SQL), and
    per-window counts for the measures that need them (error counts). Two queries in all."""
    if not wanted:
        return {}
    ids = list(wanted)
    sums = _sums(session, ids)
    windows = _windows(session, ids, sorted({m for w in wanted.values() for m in w.windowed}))
    out: dict[int, dict[str, list[PhaseData]]] = {rid: {} for rid in ids}
    for rid, metric, phase, _variant in sorted(sums):
        spec = wanted[rid]
        if metric not in spec.measures or any(p.phase == phase for p in out[rid].get(metric, [])):
            continue
        b = sums.get((rid, metric, phase, spec.baseline), (0.0,) * 6)
        c = sums.get((rid, metric, phase, spec.candidate), (0.0,) * 6)
        data = assemble(phase, b, c, windows.get((rid, metric, phase), []), spec.baseline, spec.candidate)
        out[rid].setdefault(metric, []).append(data)
    return out


def assemble(
    phase: int,
    baseline: Sequence[float],
    candidate: Sequence[float],
    windows: Iterable[tuple[datetime, Mapping[str, tuple[float, float]]]],
    baseline_variant: str,
    candidate_variant: str,
) -> PhaseData:
    """One phase of one measure, as the statistics read it: each arm's (n, sum, sum of squares), and
    the per-window (requests, errors) of both arms in window order (a window one arm lacks is left out).
    Shared by the reads above and by `rollout report`, which sums window by window."""
    paired = tuple(
        ErrorWindow(*arms[baseline_variant], *arms[candidate_variant])
        for _, arms in sorted(windows, key=lambda item: item[0])
        if baseline_variant in arms and candidate_variant in arms
    )
    return PhaseData(phase, Arm(*baseline), Arm(*candidate), paired)


def phase_data(
    session: Session,
    rollout_id: int,
    measures: Sequence[str],
    baseline_variant: str,
    candidate_variant: str,
    windowed: Sequence[str] = (),
) -> dict[str, list[PhaseData]]:
    wanted = Wanted(tuple(measures), tuple(windowed or measures), baseline_variant, candidate_variant)
    return phase_data_many(session, {rollout_id: wanted})[rollout_id]


def _sums(session: Session, ids: list[int]) -> dict[tuple[int, str, int, str], tuple[float, ...]]:
    """(rollout, metric, phase, variant) -> (n, sum, sum of squares, and the covariate's sum, sum of
    squares and cross sum), summed in SQL."""
    o = Observation
    rows = session.execute(
        select(
            o.rollout_id,
            o.metric,
            o.phase,
            o.variant_name,
            *(func.sum(c) for c in (o.n, o.total, o.total_sq, o.x_total, o.x_sq, o.xy)),
        )
        .where(o.rollout_id.in_(ids))
        .group_by(o.rollout_id, o.metric, o.phase, o.variant_name)
    )
    return {
        (rid, metric, phase, variant): tuple(float(v or 0) for v in sums)
        for rid, metric, phase, variant, *sums in rows
    }


_Windows = dict[tuple[int, str, int], list[tuple[datetime, dict[str, tuple[float, float]]]]]


def _windows(session: Session, ids: list[int], metrics: list[str]) -> _Windows:
    """(rollout, metric, phase) -> [(window start, {variant: (requests, errors)})]."""
    if not metrics:
        return {}
    by_start: dict[tuple[int, str, int, datetime], dict[str, tuple[float, float]]] = defaultdict(dict)
    for rid, metric, phase, variant, start, n, total in session.execute(
        select(
            Observation.rollout_id,
            Observation.metric,
            Observation.phase,
            Observation.variant_name,
            Observation.window_start,
            Observation.n,
            Observation.total,
        ).where(Observation.rollout_id.in_(ids), Observation.metric.in_(metrics))
    ):
        by_start[(rid, metric, phase, start)][variant] = (n, total)
    out: _Windows = defaultdict(list)
    for (rid, metric, phase, start), arms in by_start.items():
        out[(rid, metric, phase)].append((start, arms))
    return out
