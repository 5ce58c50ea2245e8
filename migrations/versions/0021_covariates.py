"""covariates: `adjust: prePeriodModel`. The pre-period model fitted for a rollout (or why none was),
each captured prediction's covariate, and the covariate's sums beside each observation's

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-07 12:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from manager.registry.types import UTCDateTime

revision: str = "0021"
down_revision: str | None = "0020"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "covariate_models",
        sa.Column(
            "rollout_id", sa.Integer(), sa.ForeignKey("rollouts.id", ondelete="CASCADE"), primary_key=True
        ),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("fingerprint", sa.String(64), nullable=True),
        sa.Column("model", sa.LargeBinary(), nullable=True),
        sa.Column("rows", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("first_served", UTCDateTime(timezone=True), nullable=True),
        sa.Column("last_served", UTCDateTime(timezone=True), nullable=True),
        sa.Column("outcome", sa.String(32), nullable=True),
        sa.Column("fallback", sa.Float(), nullable=False, server_default="0"),
        sa.Column("fitted_at", UTCDateTime(timezone=True), nullable=False),
        sa.CheckConstraint("state IN ('fitted', 'none')", name="state"),
    )
    with op.batch_alter_table("captured_inferences") as batch:
        batch.add_column(sa.Column("covariate", sa.Float(), nullable=True))
    with op.batch_alter_table("observations") as batch:
        for column in ("x_total", "x_sq", "xy"):
            batch.add_column(sa.Column(column, sa.Float(), nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("observations") as batch:
        for column in ("x_total", "x_sq", "xy"):
            batch.drop_column(column)
    with op.batch_alter_table("captured_inferences") as batch:
        batch.drop_column("covariate")
    op.drop_table("covariate_models")
