"""paired comparisons: replay plans and requests, and the sums the paired statistics read

A replay step stores its plan on the rollout (`rollouts.replay`) and each captured request it will
send in `replay_requests`, keyed by the original inference id so that a request is paired once;
`paired_sums` holds per rollout, source and measure what the paired tests need; `shadow_answers`
holds a shadow variant's captured answers until they are paired with production's.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-03 09:37:00.610918
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import manager.registry.types

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "paired_sums",
        sa.Column("rollout_id", sa.Integer(), nullable=False),
        sa.Column("source", sa.String(length=8), nullable=False),
        sa.Column("measure", sa.String(length=32), nullable=False),
        sa.Column("n", sa.Float(), nullable=False),
        sa.Column("sum_baseline", sa.Float(), nullable=False),
        sa.Column("sum_candidate", sa.Float(), nullable=False),
        sa.Column("sum_diff", sa.Float(), nullable=False),
        sa.Column("sum_diff_sq", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(
            ["rollout_id"],
            ["rollouts.id"],
            name=op.f("fk_paired_sums_rollout_id_rollouts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("rollout_id", "source", "measure", name=op.f("pk_paired_sums")),
    )
    op.create_table(
        "replay_requests",
        sa.Column("rollout_id", sa.Integer(), nullable=False),
        sa.Column("inference_id", sa.String(length=256), nullable=False),
        sa.Column("state", sa.String(length=8), nullable=False),
        sa.Column("inference_at", manager.registry.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("request", sa.Text(), nullable=True),
        sa.Column("baseline_outputs", sa.Text(), nullable=False),
        sa.Column("labels", sa.Text(), nullable=True),
        sa.Column("candidate_outputs", sa.Text(), nullable=True),
        sa.Column("latency_ms", sa.Float(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("replayed_at", manager.registry.types.UTCDateTime(timezone=True), nullable=True),
        sa.CheckConstraint("state IN ('queued', 'done', 'failed')", name=op.f("ck_replay_requests_state")),
        sa.ForeignKeyConstraint(
            ["rollout_id"],
            ["rollouts.id"],
            name=op.f("fk_replay_requests_rollout_id_rollouts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("rollout_id", "inference_id", name=op.f("pk_replay_requests")),
    )
    with op.batch_alter_table("replay_requests", schema=None) as batch_op:
        batch_op.create_index(
            "ix_replay_requests_rollout_state", ["rollout_id", "state", "inference_at"], unique=False
        )

    op.create_table(
        "shadow_answers",
        sa.Column("endpoint", sa.String(length=63), nullable=False),
        sa.Column("inference_id", sa.String(length=256), nullable=False),
        sa.Column("rollout_id", sa.Integer(), nullable=False),
        sa.Column("outputs", sa.Text(), nullable=True),
        sa.Column("compared", sa.Boolean(), nullable=False),
        sa.Column("paired", sa.Boolean(), nullable=False),
        sa.Column("expires_at", manager.registry.types.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["rollout_id"],
            ["rollouts.id"],
            name=op.f("fk_shadow_answers_rollout_id_rollouts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("endpoint", "inference_id", name=op.f("pk_shadow_answers")),
    )
    with op.batch_alter_table("shadow_answers", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_shadow_answers_expires_at"), ["expires_at"], unique=False)

    with op.batch_alter_table("rollouts", schema=None) as batch_op:
        batch_op.add_column(sa.Column("replay", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("rollouts", schema=None) as batch_op:
        batch_op.drop_column("replay")

    with op.batch_alter_table("shadow_answers", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_shadow_answers_expires_at"))

    op.drop_table("shadow_answers")
    with op.batch_alter_table("replay_requests", schema=None) as batch_op:
        batch_op.drop_index("ix_replay_requests_rollout_state")

    op.drop_table("replay_requests")
    op.drop_table("paired_sums")
