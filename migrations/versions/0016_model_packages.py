"""model packages: a model version's package ARN (lineage), the approved package versions each
policy has taken, and the outcomes to write back to the packages

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-07 04:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import manager.registry.types

Instant = manager.registry.types.UTCDateTime

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("model_versions") as batch:
        batch.add_column(sa.Column("model_package_arn", sa.String(length=2048), nullable=True))
        batch.create_index("ix_model_versions_model_package_arn", ["model_package_arn"])
    op.create_table(
        "package_claims",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("policy", sa.String(length=63), nullable=False),
        sa.Column("package_group", sa.String(length=63), nullable=False),
        sa.Column("package_arn", sa.String(length=2048), nullable=False),
        sa.Column("package_version", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("rollout_id", sa.Integer(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("claimed_at", Instant(timezone=True), nullable=False),
        sa.CheckConstraint("state IN ('started', 'skipped')", name=op.f("ck_package_claims_state")),
        sa.ForeignKeyConstraint(
            ["rollout_id"],
            ["rollouts.id"],
            name=op.f("fk_package_claims_rollout_id_rollouts"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_package_claims")),
        sa.UniqueConstraint("policy", "package_arn", name=op.f("uq_package_claims_policy_package_arn")),
    )
    op.create_index("ix_package_claims_policy", "package_claims", ["policy"])
    op.create_table(
        "package_writebacks",
        sa.Column("rollout_id", sa.Integer(), nullable=False),
        sa.Column("package_arn", sa.String(length=2048), nullable=False),
        sa.Column("request", sa.JSON(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("next_attempt_at", Instant(timezone=True), nullable=False),
        sa.Column("created_at", Instant(timezone=True), nullable=False),
        sa.Column("done_at", Instant(timezone=True), nullable=True),
        sa.CheckConstraint("state IN ('pending', 'done')", name=op.f("ck_package_writebacks_state")),
        sa.ForeignKeyConstraint(
            ["rollout_id"],
            ["rollouts.id"],
            name=op.f("fk_package_writebacks_rollout_id_rollouts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("rollout_id", name=op.f("pk_package_writebacks")),
    )
    op.create_index("ix_package_writebacks_next_attempt_at", "package_writebacks", ["next_attempt_at"])


def downgrade() -> None:
    op.drop_index("ix_package_writebacks_next_attempt_at", table_name="package_writebacks")
    op.drop_table("package_writebacks")
    op.drop_index("ix_package_claims_policy", table_name="package_claims")
    op.drop_table("package_claims")
    with op.batch_alter_table("model_versions") as batch:
        batch.drop_index("ix_model_versions_model_package_arn")
        batch.drop_column("model_package_arn")
