"""The writing side of the hash-chained history: an event (`Event`), its canonical JSON and hash, and
`append`, which adds it at the end of the chain inside the caller's transaction. The registry and the
reconciler write through this; reading and verifying the chain is `manager.history.audit`."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import select
from sqlalchemy.orm import Session

from manager.clock import format_instant, utcnow
from manager.db import Database
from manager.registry.tables import AuditEvent, AuditHead

GENESIS = "0" * 64


@dataclass(frozen=True)
class Event:
    """What happened, to what, and why: the caller's part of an audit event."""

    action: str
    subject_type: str
    subject_id: str
    reason: str | None = None
    payload: Mapping[str, Any] = field(default_factory=dict)
    endpoint: str | None = None
    model: str | None = None


def canonical_json(value: Any) -> str:
    """Sorted keys, no whitespace, UTF-8 kept: one text per value."""
    return json.dumps(
        value,
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        allow_nan=False,
        default=_json_default,
    )


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return format_instant(value)
    raise TypeError(f"audit payload value of type {type(value).__name__} is not JSON")


_encode = json.JSONEncoder(ensure_ascii=False).encode


class _Hashed(Protocol):
    seq: int
    at: datetime
    actor: str
    action: str
    subject_type: str
    subject_id: str
    endpoint: str | None
    model: str | None
    reason: str | None
    payload: str


def event_hash(prev_hash: str, row: _Hashed) -> str:
    """sha256(prev_hash + canonical JSON of the event).

    The body is spelled out in canonical_json's form (sorted keys, no spaces)
    with the payload spliced in as stored: `append` stores it canonical, so this
    equals canonical_json of the event, and any later edit to the stored text,
    even one that keeps its meaning, breaks the hash. Spelling it out also spares
    `verify` parsing and re-encoding every payload.
    """
    return hash_fields(
        prev_hash,
        row.seq,
        format_instant(row.at),
        row.actor,
        row.action,
        row.subject_type,
        row.subject_id,
        row.endpoint,
        row.model,
        row.reason,
        row.payload,
    )


def hash_fields(
    prev_hash: str,
    seq: int,
    at: str,
    actor: str,
    action: str,
    subject_type: str,
    subject_id: str,
    endpoint: str | None,
    model: str | None,
    reason: str | None,
    payload: str,
) -> str:
    """The hash of one event from its fields as text (`at` as format_instant writes it, the payload as
    canonical JSON): what `verify` computes from the database and `verify --file` from an export."""
    body = (
        f'{{"action":{_encode(action)},"actor":{_encode(actor)},'
        f'"at":"{at}","endpoint":{_encode(endpoint)},'
        f'"model":{_encode(model)},"payload":{payload},"reason":{_encode(reason)},'
        f'"seq":{int(seq)},"subject_id":{_encode(subject_id)},'
        f'"subject_type":{_encode(subject_type)}}}'
    )
    return hashlib.sha256((prev_hash + body).encode()).hexdigest()


def append(session: Session, actor: str, event: Event, at: datetime | None = None) -> AuditEvent:
    """Add one event at the end of the chain, inside the caller's write transaction."""
    # Locks the one head row on PostgreSQL; on SQLite the writer's BEGIN IMMEDIATE already serialises.
    head = session.get(AuditHead, 1, with_for_update=True)
    if head is None:
        raise RuntimeError("audit_head row is missing: the registry was not created by its migrations")
    row = AuditEvent(
        seq=head.seq + 1,
        at=at or utcnow(),
        actor=actor,
        action=event.action,
        subject_type=event.subject_type,
        subject_id=event.subject_id,
        endpoint=event.endpoint,
        model=event.model,
        reason=event.reason,
        payload=canonical_json(dict(event.payload)),
        prev_hash=head.hash,
    )
    row.hash = event_hash(row.prev_hash, row)
    session.add(row)
    head.seq, head.hash = row.seq, row.hash
    session.flush()
    return row


def latest(session: Session, action: str, subject_id: str) -> AuditEvent | None:
    """The newest event `action` about `subject_id`, if any."""
    return session.scalar(
        select(AuditEvent)
        .where(AuditEvent.action == action, AuditEvent.subject_id == subject_id)
        .order_by(AuditEvent.seq.desc())
        .limit(1)
    )


def record(database: Database, actor: str, event: Event) -> AuditEvent:
    """Append one event in a transaction of its own."""
    with database.write() as session:
        return append(session, actor, event)
