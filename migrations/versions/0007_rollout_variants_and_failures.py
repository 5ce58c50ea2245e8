"""each rollout's own variant names; consecutive evaluation failures, with backoff

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-28 19:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
import yaml
from alembic import op

import manager.registry.types

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _names(policy_yaml: str) -> tuple[str, str]:
    """The variant names an earlier release used for a rollout: its policy's, or the old defaults."""
    try:
        target = (yaml.safe_load(policy_yaml) or {}).get("target") or {}
    except yaml.YAMLError:
        target = {}
    return str(target.get("baselineVariant") or "baseline"), str(
        target.get("candidateVariant") or "candidate"
    )


def upgrade() -> None:
    with op.batch_alter_table("rollouts", schema=None) as batch_op:
        batch_op.add_column(sa.Column("baseline_variant", sa.String(length=63), nullable=True))
        batch_op.add_column(sa.Column("candidate_variant", sa.String(length=63), nullable=True))
        batch_op.add_column(sa.Column("failures", sa.Integer(), nullable=False, server_default="0"))
        batch_op.add_column(sa.Column("last_error", sa.Text(), nullable=True))
        batch_op.add_column(
            sa.Column("retry_at", manager.registry.types.UTCDateTime(timezone=True), nullable=True)
        )
    connection = op.get_bind()
    rollouts = sa.table(
        "rollouts",
        sa.column("id", sa.Integer()),
        sa.column("policy_yaml", sa.Text()),
        sa.column("baseline_variant", sa.String()),
        sa.column("candidate_variant", sa.String()),
    )
    for rollout_id, text in connection.execute(sa.select(rollouts.c.id, rollouts.c.policy_yaml)).all():
        baseline, candidate = _names(text)
        connection.execute(
            rollouts.update()
            .where(rollouts.c.id == rollout_id)
            .values(baseline_variant=baseline, candidate_variant=candidate)
        )
    with op.batch_alter_table("rollouts", schema=None) as batch_op:
        batch_op.alter_column("baseline_variant", existing_type=sa.String(length=63), nullable=False)
        batch_op.alter_column("candidate_variant", existing_type=sa.String(length=63), nullable=False)


def downgrade() -> None:
    with op.batch_alter_table("rollouts", schema=None) as batch_op:
        batch_op.drop_column("retry_at")
        batch_op.drop_column("last_error")
        batch_op.drop_column("failures")
        batch_op.drop_column("candidate_variant")
        batch_op.drop_column("baseline_variant")
