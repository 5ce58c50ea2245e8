"""drop the rollouts' lease columns: endpoint leases have their own table since 0004

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-28 18:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import manager.registry.types

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Never written by any release: the reconciler's leases live in `endpoint_leases`.
    with op.batch_alter_table("rollouts", schema=None) as batch_op:
        batch_op.drop_column("lease_expires_at")
        batch_op.drop_column("lease_owner")


def downgrade() -> None:
    with op.batch_alter_table("rollouts", schema=None) as batch_op:
        batch_op.add_column(sa.Column("lease_owner", sa.String(length=128), nullable=True))
        batch_op.add_column(
            sa.Column("lease_expires_at", manager.registry.types.UTCDateTime(timezone=True), nullable=True)
        )
