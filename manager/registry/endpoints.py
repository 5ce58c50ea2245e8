"""Endpoints and the configs they serve."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, func, select, update
from sqlalchemy.orm import Session, selectinload

from manager.errors import NotFound
from manager.registry.tables import CapturedInference, ConfigVariant, Endpoint, EndpointConfig, IngestCursor

_WITH_VARIANTS = (
    selectinload(Endpoint.current_config)
    .selectinload(EndpointConfig.variants)
    .selectinload(ConfigVariant.model_version)
)


def list_endpoints(session: Session) -> list[Endpoint]:
    return list(session.scalars(select(Endpoint).options(_WITH_VARIANTS).order_by(Endpoint.name)))


def observe(session: Session, name: str, status: str, region: str | None, at: datetime) -> bool:
    """Record the status the platform reported for a managed endpoint; False when it is not managed."""
    endpoint = session.scalar(select(Endpoint).where(Endpoint.name == name))
    if endpoint is None:
        return False
    endpoint.last_status, endpoint.last_observed_at = status, at
    endpoint.region = region or endpoint.region
    return True


def observe_many(session: Session, seen: list[tuple[str, str, str | None, datetime]]) -> None:
    """`observe` for many endpoints in one statement: (name, status, region, at) each."""
    if not seen:
        return
    statement = (
        update(Endpoint)
        .where(Endpoint.name == bindparam("n"))
        .values(
            last_status=bindparam("s"),
            last_observed_at=bindparam("at"),
            region=func.coalesce(bindparam("r"), Endpoint.region),
        )
        .execution_options(synchronize_session=False)
    )
    session.connection().execute(statement, [{"n": n, "s": s, "r": r, "at": at} for n, s, r, at in seen])


def get(session: Session, name: str) -> Endpoint:
    row = session.scalar(select(Endpoint).where(Endpoint.name == name).options(_WITH_VARIANTS))
    if row is None:
        raise NotFound(f"no endpoint {name!r} in the registry")
    return row


def ingest_status(session: Session, endpoint: str) -> dict[str, Any]:
    """What `variantctl endpoints show` reports about ingestion for one endpoint."""
    cursors = list(session.scalars(select(IngestCursor).where(IngestCursor.endpoint == endpoint)))
    waiting = (
        session.scalar(
            select(func.count())
            .select_from(CapturedInference)
            .where(CapturedInference.endpoint == endpoint, CapturedInference.joined.is_(False))
        )
        or 0
    )
    return {
        "records_read": sum(c.records for c in cursors),
        "malformed_skipped": sum(c.malformed for c in cursors),
        "expired_unjoined": sum(c.expired for c in cursors),
        "predictions_waiting_for_labels": waiting,
        "read_errors": [f"{c.prefix}: {c.last_error}" for c in cursors if c.last_error],
        # when ingestion last read (or tried) here: how far behind the labels can be
        "last_read_at": max((c.updated_at for c in cursors), default=None),
    }
