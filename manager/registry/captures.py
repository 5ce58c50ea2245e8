"""The registry's side of ground-truth ingestion: captured predictions waiting for their labels
(`captured_inferences`), labels waiting for their predictions (`pending_labels`), a shadow's answers
(`shadow_answers`), the cursors of what was read (`ingest_cursors`), and which rollout phase was live
when. Core, not the ORM, for what runs once per record; ids go a bounded IN (...) at a time."""

from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, String, Table, delete, select, type_coerce, update
from sqlalchemy.orm import Session

from manager.db import chunks, insert_for
from manager.names import shadow_variant
from manager.registry.tables import (
    CapturedInference,
    Endpoint,
    IngestCursor,
    PendingLabel,
    Rollout,
    RolloutPhase,
    ShadowAnswer,
)

IN_CHUNK = 2000  # ids per IN (...) clause: well inside SQLite's and PostgreSQL's parameter limits
CAPTURED: Table = CapturedInference.__table__  # type: ignore[assignment]
LABELS: Table = PendingLabel.__table__  # type: ignore[assignment]
SHADOWS: Table = ShadowAnswer.__table__  # type: ignore[assignment]


class RegistryPhases:
    """Which rollout phase was live on an endpoint at an instant, from `rollout_phases`."""

    def __init__(self, session: Session, endpoint: str) -> None:
        rows = session.execute(
            select(
                RolloutPhase.started_at, RolloutPhase.ended_at, RolloutPhase.rollout_id, RolloutPhase.phase
            )
            .join(Rollout, Rollout.id == RolloutPhase.rollout_id)
            .join(Endpoint, Endpoint.id == Rollout.endpoint_id)
            .where(Endpoint.name == endpoint)
            .order_by(RolloutPhase.started_at)
        ).all()
        self.starts = [r[0] for r in rows]
        self.rows = rows
        # Each rollout's shadow variant: captured answers filed under it are a shadow's, to be paired.
        self.shadows = {
            rid: shadow_variant(candidate)
            for rid, candidate in session.execute(
                select(Rollout.id, Rollout.candidate_variant).where(Rollout.id.in_({r[2] for r in rows}))
            )
        }

    def shadow(self, variant: str, rollout_id: int) -> bool:
        """Whether `variant` is the rollout's candidate shadowing production."""
        return self.shadows.get(rollout_id) == variant

    def __call__(self, variant: str, at: datetime) -> tuple[int, int] | None:
        i = bisect.bisect_right(self.starts, at) - 1
        if i < 0:
            return None
        _started, ended, rollout_id, phase = self.rows[i]
        if ended is not None and at >= ended:
            return None
        return rollout_id, phase


# ---- by inference id ------------------------------------------------------------------------------


def matching(
    conn: Connection, table: Table, endpoint: str, ids: Sequence[str], *columns: Any
) -> Iterator[Any]:
    """Rows of `table` for these inference ids of `endpoint`."""
    for chunk in chunks(ids, IN_CHUNK):
        yield from conn.execute(
            select(*columns).where(table.c.endpoint == endpoint, table.c.inference_id.in_(chunk))
        )


def update_ids(conn: Connection, table: Table, endpoint: str, ids: Sequence[str], **values: Any) -> None:
    for chunk in chunks(ids, IN_CHUNK):
        conn.execute(
            update(table)
            .where(table.c.endpoint == endpoint, table.c.inference_id.in_(chunk))
            .values(**values)
        )


def delete_ids(conn: Connection, table: Table, endpoint: str, ids: Sequence[str]) -> None:
    for chunk in chunks(ids, IN_CHUNK):
        conn.execute(delete(table).where(table.c.endpoint == endpoint, table.c.inference_id.in_(chunk)))


def insert_new(session: Session, table: Table, rows: list[dict[str, Any]]) -> list[str]:
    """Insert the rows whose inference id is new (the same one again, waiting or joined, conflicts and
    is skipped); the ids inserted."""
    if not rows:
        return []
    statement = insert_for(session)(table).on_conflict_do_nothing().returning(table.c.inference_id)
    return list(session.connection().scalars(statement, rows))


def take_waiting_labels(session: Session, endpoint: str, ids: list[str]) -> dict[str, str]:
    """The labels that came before these predictions (their JSON), removed from the waiting room."""
    conn = session.connection()
    waiting = dict(matching(conn, LABELS, endpoint, ids, LABELS.c.inference_id, LABELS.c.labels))
    if waiting:
        delete_ids(conn, LABELS, endpoint, list(waiting))
    return waiting


def captured_for(session: Session, endpoint: str, ids: list[str]) -> Iterator[Any]:
    """(inference id, joined, variant, rollout, phase, time as stored, outputs, covariate) of these
    predictions.
    The time as text: only its minute is needed, and parsing each row's datetime costs more than the
    rest of the join (`minute_key`)."""
    columns = (
        CAPTURED.c.inference_id,
        CAPTURED.c.joined,
        CAPTURED.c.variant,
        CAPTURED.c.rollout_id,
        CAPTURED.c.phase,
        type_coerce(CAPTURED.c.inference_at, String),
        CAPTURED.c.outputs,
        CAPTURED.c.covariate,
    )
    return matching(session.connection(), CAPTURED, endpoint, ids, *columns)


def mark_joined(session: Session, endpoint: str, ids: list[str]) -> None:
    update_ids(session.connection(), CAPTURED, endpoint, ids, joined=True, outputs=None)


def wait_for_predictions(
    session: Session, endpoint: str, labels: dict[str, str], expires_at: datetime
) -> None:
    """Labels whose predictions are not read yet (their JSON by inference id): they wait."""
    if labels:
        rows = [
            {"endpoint": endpoint, "inference_id": i, "expires_at": expires_at, "labels": text}
            for i, text in labels.items()
        ]
        session.connection().execute(insert_for(session)(LABELS).on_conflict_do_nothing(), rows)


def shadow_and_production(session: Session, endpoint: str, ids: list[str]) -> Iterator[Any]:
    """(inference id, rollout, shadow's outputs, production's outputs) of shadow answers not compared
    yet whose production answer is here too."""
    conn = session.connection()
    for chunk in chunks(ids, IN_CHUNK):
        yield from conn.execute(
            select(SHADOWS.c.inference_id, SHADOWS.c.rollout_id, SHADOWS.c.outputs, CAPTURED.c.outputs)
            .join(
                CAPTURED,
                (CAPTURED.c.endpoint == SHADOWS.c.endpoint)
                & (CAPTURED.c.inference_id == SHADOWS.c.inference_id),
            )
            .where(
                SHADOWS.c.endpoint == endpoint,
                SHADOWS.c.inference_id.in_(chunk),
                SHADOWS.c.compared.is_(False),
                SHADOWS.c.outputs.isnot(None),
                CAPTURED.c.outputs.isnot(None),
            )
        )


def shadow_answers(session: Session, endpoint: str, ids: list[str]) -> Iterator[Any]:
    """(inference id, rollout, outputs) of the shadow's answers to these requests."""
    columns = (SHADOWS.c.inference_id, SHADOWS.c.rollout_id, SHADOWS.c.outputs)
    return matching(session.connection(), SHADOWS, endpoint, ids, *columns)


# ---- expiry and cursors ---------------------------------------------------------------------------


def expire(session: Session, endpoint: str, now: datetime) -> tuple[dict[str, int], int, int]:
    """Forget what waited past its time: (predictions never joined, by variant; labels never joined;
    shadow answers never paired)."""
    conn = session.connection()
    unjoined = conn.execute(
        delete(CAPTURED)
        .where(CAPTURED.c.endpoint == endpoint, CAPTURED.c.expires_at < now, CAPTURED.c.joined.is_(False))
        .returning(CAPTURED.c.variant)
    ).scalars()
    per_variant: dict[str, int] = defaultdict(int)
    for variant in unjoined:
        per_variant[variant] += 1
    # joined long enough ago that no replay is expected any more
    conn.execute(delete(CAPTURED).where(CAPTURED.c.endpoint == endpoint, CAPTURED.c.expires_at < now))
    labels = int(
        conn.execute(delete(LABELS).where(LABELS.c.endpoint == endpoint, LABELS.c.expires_at < now)).rowcount
        or 0
    )
    # a shadow's answer whose production answer never met a label (or met it first): counted
    gone = conn.execute(
        delete(SHADOWS)
        .where(SHADOWS.c.endpoint == endpoint, SHADOWS.c.expires_at < now)
        .returning(SHADOWS.c.paired)
    ).scalars()
    return dict(per_variant), labels, sum(1 for paired in gone if not paired)


def count_expired(session: Session, counts: dict[str, int]) -> None:
    """Add to each cursor's count of what expired unjoined after it was read."""
    for cursor_id, n in counts.items():
        session.connection().execute(
            update(IngestCursor)
            .where(IngestCursor.prefix == cursor_id)
            .values(expired=IngestCursor.expired + n)
        )


def cursor(session: Session, cursor_id: str, endpoint: str, kind: str) -> IngestCursor:
    """The cursor of one prefix, created (with nothing read) when new."""
    row = session.get(IngestCursor, cursor_id)
    if row is None:
        row = IngestCursor(prefix=cursor_id, endpoint=endpoint, kind=kind, records=0, malformed=0)
        session.add(row)
    return row
