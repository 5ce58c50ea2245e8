"""The append-only, hash-chained history.

Each event's hash is sha256(prev_hash + canonical JSON of the event), where the
event is every stored field but the two hashes. The first event chains from
GENESIS. Triggers refuse UPDATE and DELETE; `verify` recomputes the chain and
names the first seq that was altered, deleted or reordered. `audit_head` holds
the newest seq and hash, so deleting the newest events is detected too, and an
auditor who keeps the head hash printed by `verify` can later prove that not
even a rewritten chain went unnoticed (`--expect-head`).
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from manager.db import Database
from manager.history.attest import Expected
from manager.history.chain import (  # re-exported: `audit.Event`, `audit.append`, ... as callers know them
    GENESIS,
    Event,
    append,
    canonical_json,
    event_hash,
    hash_fields,
    latest,
    record,
)
from manager.registry.tables import AuditEvent, AuditHead

__all__ = ["GENESIS", "Event", "append", "canonical_json", "event_hash", "hash_fields", "latest", "record"]

VERIFY_BATCH = 10_000


@dataclass(frozen=True)
class ChainCheck:
    ok: bool
    count: int
    head_seq: int
    head_hash: str
    first_bad_seq: int | None = None
    problem: str | None = None
    rows: tuple[str, ...] = ()  # registry rows the history disagrees with
    hashes: Mapping[int, str] = field(default_factory=dict)  # the hash at each seq asked for


@dataclass(frozen=True)
class Head:
    """A head an auditor kept: `SEQ:HASH` (what verify prints), or the hash alone."""

    hash: str
    seq: int | None = None

    @classmethod
    def parse(cls, text: str) -> Head:
        seq_text, _, digest = text.strip().rpartition(":")
        digest = digest.lower()
        if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise ValueError(
                f"{text!r} is not a head: expected SEQ:HASH (a 64-digit hex hash) as verify prints"
            )
        if seq_text and not (seq_text.isdigit() and 0 < int(seq_text) < 1 << 63):
            raise ValueError(f"{text!r} is not a head: {seq_text!r} is not a sequence number")
        return cls(digest, int(seq_text) if seq_text else None)


def verify(
    database: Database, expect_head: Head | None = None, rows: bool = True, collect: Collection[int] = ()
) -> ChainCheck:
    """Recompute the whole chain, oldest first, in constant memory, in one read transaction (one
    snapshot, even while writers append); then, with `rows`, compare the registry's rows with what the
    history says they should be. `expect_head`, a head kept earlier, must be part of the chain: a
    live registry that only grew since passes, a rewritten one does not."""
    expected_seq, running = 1, GENESIS
    expected = Expected()
    kept_found = expect_head is None
    wanted, hashes = set(collect), {}
    with database.read() as session:
        for row in _rows_in_order(session):
            if isinstance(row, str):  # a row that could not be read as an event
                unreadable = f"seq {expected_seq} cannot be read as an event ({row}): it was altered"
                return ChainCheck(
                    False, expected_seq - 1, expected_seq - 1, running, expected_seq, unreadable
                )
            problem = _check(session, row, expected_seq, running)
            if problem:
                bad_seq = expected_seq if "missing" in problem else row.seq
                return ChainCheck(False, expected_seq - 1, expected_seq - 1, running, bad_seq, problem)
            if expect_head is not None and row.hash == expect_head.hash:
                kept_found = expect_head.seq in (None, row.seq)
            expected_seq, running = row.seq + 1, row.hash
            if row.seq in wanted:
                hashes[row.seq] = row.hash
            if rows:
                expected.feed(row)
        count = expected_seq - 1
        head = session.get(AuditHead, 1)
        differences = expected.differences(session) if rows else []
    if head is None:
        return ChainCheck(False, count, count, running, count + 1, "the history head row was deleted")
    if (head.seq, head.hash) != (count, running):
        if head.seq > count:
            problem = f"events {count + 1}..{head.seq} were deleted from the end of the history"
            return ChainCheck(False, count, count, running, count + 1, problem)
        return ChainCheck(False, count, count, running, head.seq, "the history head was altered")
    if expect_head is not None and expect_head.seq is not None and expect_head.seq > count:
        problem = (
            f"the kept head is at seq {expect_head.seq}, but the history ends at seq {count}: "
            "events were deleted from its end"
        )
        return ChainCheck(False, count, count, running, count + 1, problem)
    if not kept_found:
        assert expect_head is not None
        where = f"seq {expect_head.seq}" if expect_head.seq is not None else "any event"
        problem = f"the kept head {expect_head.hash} is not the hash of {where}: the chain was rewritten"
        return ChainCheck(False, count, count, running, expect_head.seq or count, problem)
    if differences:
        problem = f"{len(differences)} registry rows differ from the history: {differences[0]}"
        return ChainCheck(False, count, count, running, None, problem, tuple(differences), hashes)
    return ChainCheck(True, count, count, running, hashes=hashes)


def _rows_in_order(session: Session) -> Iterator[Any]:
    """Plain rows, not ORM objects: verify reads every event once and keeps none. A row whose stored
    values do not read as an event's (a time that is not a time) ends the walk with why, as a str."""
    table = AuditEvent.__table__
    stmt = select(table).order_by(table.c.seq).execution_options(yield_per=VERIFY_BATCH)
    rows = iter(session.execute(stmt))
    while True:
        try:
            row = next(rows)
        except StopIteration:
            return
        except (ValueError, TypeError, OverflowError) as exc:
            yield f"{type(exc).__name__}: {exc}"
            return
        yield row


def _check(session: Session, row: Any, expected_seq: int, running: str) -> str | None:
    if row.seq != expected_seq:
        return f"seq {expected_seq} is missing: the event was deleted"
    if row.prev_hash != running:
        successor = session.scalar(select(AuditEvent.seq).where(AuditEvent.prev_hash == running).limit(1))
        if successor is not None:
            return f"seq {row.seq} is out of place: events were reordered (its successor is at {successor})"
        return f"seq {row.seq} does not follow seq {row.seq - 1}: the chain link was altered"
    if event_hash(row.prev_hash, row) != row.hash:
        return f"seq {row.seq} was altered: its hash does not match its contents"
    return None


@dataclass(frozen=True)
class HistoryFilter:
    endpoint: str | None = None  # its events, and the lifecycle events of every model it served
    rollout: int | None = None  # its events, and the config and model events it caused
    model: str | None = None
    action: str | None = None
    actor: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    limit: int | None = 100  # None: every event that matches


def served_models(session: Session, endpoint: str) -> list[str]:
    """Every model version a config of `endpoint` ever named (from its `endpoint.config` events)."""
    payloads = session.scalars(
        select(AuditEvent.payload).where(
            AuditEvent.endpoint == endpoint, AuditEvent.action == "endpoint.config"
        )
    )
    return sorted({v["model"] for p in payloads for v in json.loads(p).get("variants", [])})


def _lifecycle_of(refs: list[str]) -> Any:
    """The registration, training and gate events of these model versions (the events with no
    endpoint: not their moves on other endpoints)."""
    from sqlalchemy import and_

    return and_(
        AuditEvent.subject_type == "model_version",
        AuditEvent.subject_id.in_(refs),
        AuditEvent.endpoint.is_(None),
    )


def _rollout_span(session: Session, rollout: int) -> tuple[str, datetime, datetime | None] | None:
    """The rollout's endpoint, its start and (if it ended) its last event's time."""
    rows = session.execute(
        select(AuditEvent.endpoint, AuditEvent.at, AuditEvent.action)
        .where(AuditEvent.subject_type == "rollout", AuditEvent.subject_id == str(rollout))
        .order_by(AuditEvent.seq)
    ).all()
    if not rows or rows[0].endpoint is None:
        return None
    from manager.registry.vocabulary import FINAL_ROLLOUT_STATES

    finals = {f"rollout.{state}" for state in FINAL_ROLLOUT_STATES}
    ended = next((r.at for r in rows if r.action in finals), None)
    return rows[0].endpoint, rows[0].at, ended


def history_query(flt: HistoryFilter, session: Session | None = None) -> Select[AuditEvent]:
    """Newest first. Each equality filter is backed by an index on (column, at). With `session`,
    `endpoint` widens to the training and gate events of the models it served, and `rollout` to the
    config and model events on its endpoint while it ran."""
    from sqlalchemy import and_, false, or_

    stmt = select(AuditEvent)
    if flt.endpoint is not None:
        refs = served_models(session, flt.endpoint) if session is not None else []
        own = AuditEvent.endpoint == flt.endpoint
        stmt = stmt.where(or_(own, _lifecycle_of(refs)) if refs else own)
    if flt.rollout is not None:
        span = _rollout_span(session, flt.rollout) if session is not None else None
        own = and_(AuditEvent.subject_type == "rollout", AuditEvent.subject_id == str(flt.rollout))
        if span is None:
            stmt = stmt.where(own if session is None else false())
        else:
            endpoint, started, ended = span
            caused = and_(
                AuditEvent.endpoint == endpoint,
                AuditEvent.action.in_(("endpoint.config", "endpoint.serves", "model.status")),
                AuditEvent.at >= started,
                *([AuditEvent.at <= ended] if ended is not None else []),
            )
            stmt = stmt.where(or_(own, caused))
    for column, value in (
        (AuditEvent.model, flt.model),
        (AuditEvent.action, flt.action),
        (AuditEvent.actor, flt.actor),
    ):
        if value is not None:
            stmt = stmt.where(column == value)
    if flt.since is not None:
        stmt = stmt.where(AuditEvent.at >= flt.since)
    if flt.until is not None:
        stmt = stmt.where(AuditEvent.at < flt.until)
    stmt = stmt.order_by(AuditEvent.at.desc(), AuditEvent.seq.desc())
    return stmt.limit(flt.limit) if flt.limit is not None else stmt


def history(database: Database, flt: HistoryFilter) -> list[AuditEvent]:
    with database.read() as session:
        if flt.endpoint is None or flt.rollout is not None:
            return list(session.scalars(history_query(flt, session)))
        # Two index-ordered queries merged here: the endpoint's own events, and the lifecycle events
        # of the models it served. One query with OR sorted every event of the endpoint first.
        rows = list(session.scalars(history_query(flt)))
        refs = served_models(session, flt.endpoint)
        if refs:
            from dataclasses import replace

            lifecycle = history_query(replace(flt, endpoint=None)).where(_lifecycle_of(refs))
            rows += list(session.scalars(lifecycle))
        rows.sort(key=lambda r: (r.at, r.seq), reverse=True)
        return rows[: flt.limit] if flt.limit is not None else rows


def event(database: Database, seq: int) -> AuditEvent | None:
    with database.read() as session:
        return session.get(AuditEvent, seq)


def history_count(database: Database, flt: HistoryFilter) -> int:
    """How many events match `flt`, whatever its limit."""
    from dataclasses import replace

    from sqlalchemy import func

    with database.read() as session:
        query = history_query(replace(flt, limit=None), session).order_by(None).subquery()
        return int(session.scalar(select(func.count()).select_from(query)) or 0)
