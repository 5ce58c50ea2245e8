"""Queries on the Model Registry's traces: versions by package ARN, the package versions each policy
has taken, and the outcomes waiting to be written back."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from manager.registry.tables import ModelVersion, PackageClaim, PackageWriteback

RETRY_FIRST = timedelta(seconds=5)
RETRY_MOST = timedelta(minutes=10)


def by_arn(session: Session, arn: str) -> ModelVersion | None:
    return session.scalar(
        select(ModelVersion).where(ModelVersion.model_package_arn == arn).order_by(ModelVersion.id).limit(1)
    )


def claims(session: Session, policy: str) -> dict[str, PackageClaim]:
    rows = session.scalars(select(PackageClaim).where(PackageClaim.policy == policy))
    return {row.package_arn: row for row in rows}


def claim(
    session: Session,
    policy: str,
    package: Any,
    state: str,
    reason: str,
    now: datetime,
    rollout_id: int | None = None,
) -> PackageClaim:
    row = PackageClaim(
        policy=policy,
        package_group=package.group,
        package_arn=package.arn,
        package_version=package.version,
        state=state,
        rollout_id=rollout_id,
        reason=reason,
        claimed_at=now,
    )
    session.add(row)
    session.flush()  # the unique (policy, package) constraint speaks now, inside the caller's transaction
    return row


def claim_of_rollout(session: Session, rollout_id: int) -> PackageClaim | None:
    return session.scalar(select(PackageClaim).where(PackageClaim.rollout_id == rollout_id))


def add_writeback(
    session: Session, rollout_id: int, arn: str, request: dict[str, Any], now: datetime
) -> None:
    session.add(
        PackageWriteback(
            rollout_id=rollout_id,
            package_arn=arn,
            request=request,
            state="pending",
            next_attempt_at=now,
            created_at=now,
        )
    )


def writeback(session: Session, rollout_id: int) -> PackageWriteback | None:
    return session.get(PackageWriteback, rollout_id)


def due_writebacks(session: Session, now: datetime, limit: int = 20) -> list[PackageWriteback]:
    return list(
        session.scalars(
            select(PackageWriteback)
            .where(PackageWriteback.state == "pending", PackageWriteback.next_attempt_at <= now)
            .order_by(PackageWriteback.next_attempt_at)
            .limit(limit)
        )
    )


def pending_writebacks(session: Session) -> list[PackageWriteback]:
    return list(session.scalars(select(PackageWriteback).where(PackageWriteback.state == "pending")))


def failed_attempt(row: PackageWriteback, error: str, now: datetime) -> None:
    """Counted, kept and retried later: 5 s, then doubling, at most 10 minutes apart."""
    row.attempts += 1
    row.last_error = error[:2000]
    row.next_attempt_at = now + min(RETRY_MOST, RETRY_FIRST * 2 ** min(row.attempts - 1, 10))


def package_summary(session: Session, rollout_id: int, candidate: str) -> dict[str, Any] | None:
    """The candidate's SageMaker model package, and whether the rollout's outcome was written back."""
    from manager.registry import models

    arn = models.get(session, candidate).model_package_arn
    if not arn:
        return None
    sent = writeback(session, rollout_id)
    state = "not yet (the rollout runs)" if sent is None else sent.state
    if sent is not None and sent.state == "pending" and sent.attempts:
        state += f" ({sent.attempts} failed attempts; last: {sent.last_error})"
    return {"arn": arn, "version": arn.split(":model-package/", 1)[-1], "writeback": state}
