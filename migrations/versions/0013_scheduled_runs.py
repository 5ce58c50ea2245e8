"""scheduled runs: each scheduled job's run claimed once per scheduled time, with who ran it

A cron retrain runs exactly once per scheduled time even when the scheduler's leader changes while it
is due (the old leader may have started it; the job store may not have moved its next run time yet).

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-03 15:10:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import manager.registry.types

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "scheduled_runs",
        sa.Column("job_id", sa.String(length=200), nullable=False),
        sa.Column("scheduled_for", manager.registry.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("instance", sa.String(length=128), nullable=False),
        sa.Column("epoch", sa.Integer(), nullable=True),
        sa.Column("started_at", manager.registry.types.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("job_id", "scheduled_for", name=op.f("pk_scheduled_runs")),
    )


def downgrade() -> None:
    op.drop_table("scheduled_runs")
