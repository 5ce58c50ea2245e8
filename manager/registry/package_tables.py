"""The Model Registry's traces in ours: which approved package version each policy has taken (exactly
one rollout per version), and the outcomes waiting to be written back to the packages.
`manager.registry.tables` re-exports them."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import CheckConstraint, ForeignKey, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from manager.clock import utcnow
from manager.registry.schema import NAME_LENGTH, Base, check_in

ARN_LENGTH = 2048
CLAIM_STATES = ("started", "skipped")
WRITEBACK_STATES = ("pending", "done")


class PackageClaim(Base):
    """An approved package version a policy has dealt with: rolled out (`started`, with the rollout) or
    passed over (`skipped`, with the reason). Unique per policy and package: each approved version
    starts one rollout at most, whatever the events and however many daemons."""

    __tablename__ = "package_claims"
    __table_args__ = (
        UniqueConstraint("policy", "package_arn"),
        CheckConstraint(check_in("state", CLAIM_STATES), name="state"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    policy: Mapped[str] = mapped_column(String(NAME_LENGTH), index=True)
    package_group: Mapped[str] = mapped_column(String(NAME_LENGTH))
    package_arn: Mapped[str] = mapped_column(String(ARN_LENGTH))
    package_version: Mapped[int]
    state: Mapped[str] = mapped_column(String(16))
    rollout_id: Mapped[int | None] = mapped_column(ForeignKey("rollouts.id", ondelete="SET NULL"))
    reason: Mapped[str] = mapped_column(Text)
    claimed_at: Mapped[datetime] = mapped_column(default=utcnow)


class PackageWriteback(Base):
    """A rollout's outcome for its candidate's model package: written in the transaction that ends the
    rollout (so a crash cannot lose it), sent with UpdateModelPackage until it succeeds, and shown
    while it has not."""

    __tablename__ = "package_writebacks"
    __table_args__ = (CheckConstraint(check_in("state", WRITEBACK_STATES), name="state"),)

    rollout_id: Mapped[int] = mapped_column(ForeignKey("rollouts.id", ondelete="CASCADE"), primary_key=True)
    package_arn: Mapped[str] = mapped_column(String(ARN_LENGTH))
    request: Mapped[dict[str, Any]]
    state: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    next_attempt_at: Mapped[datetime] = mapped_column(index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    done_at: Mapped[datetime | None]
