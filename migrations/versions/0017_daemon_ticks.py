"""daemon ticks: when each daemon last ran its reconcile tick, and how often it ticks (what says
whether a daemon is working a rollout at all)

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-07 07:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import manager.registry.types

Instant = manager.registry.types.UTCDateTime

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("daemon_instances") as batch:
        batch.add_column(sa.Column("ticked_at", Instant(timezone=True), nullable=True))
        batch.add_column(sa.Column("tick_seconds", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("daemon_instances") as batch:
        batch.drop_column("tick_seconds")
        batch.drop_column("ticked_at")
