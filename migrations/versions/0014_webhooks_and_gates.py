"""webhooks and gates: registry-wide webhook targets, deliveries kept with their idempotency keys,
the history cursor they are fanned out from, and each rollout's gate checks

The cursor starts at the history's head: webhooks added now are told of what happens from now on,
not of the history before them.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-03 18:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import manager.registry.types

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

Instant = manager.registry.types.UTCDateTime


def upgrade() -> None:
    op.create_table(
        "webhook_targets",
        sa.Column("name", sa.String(length=63), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("created_at", Instant(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(length=128), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_webhook_targets")),
    )
    op.create_table(
        "webhook_deliveries",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("key", sa.String(length=200), nullable=False),
        sa.Column("hook", sa.String(length=63), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("url", sa.String(length=2048), nullable=False),
        sa.Column("format", sa.String(length=8), nullable=False),
        sa.Column("secret_env", sa.String(length=128), nullable=True),
        sa.Column("secret_file", sa.String(length=4096), nullable=True),
        sa.Column("timeout", sa.Float(), nullable=False),
        sa.Column("event_seq", sa.Integer(), nullable=False),
        sa.Column("rollout_id", sa.Integer(), nullable=True),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", Instant(timezone=True), nullable=False),
        sa.Column("last_status", sa.Integer(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", Instant(timezone=True), nullable=False),
        sa.Column("delivered_at", Instant(timezone=True), nullable=True),
        sa.CheckConstraint(
            "state IN ('pending', 'delivered', 'failed')", name=op.f("ck_webhook_deliveries_state")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_deliveries")),
        sa.UniqueConstraint("key", name=op.f("uq_webhook_deliveries_key")),
    )
    op.create_index("ix_webhook_deliveries_due", "webhook_deliveries", ["state", "next_attempt_at"])
    op.create_index(op.f("ix_webhook_deliveries_event_seq"), "webhook_deliveries", ["event_seq"])
    op.create_index(op.f("ix_webhook_deliveries_rollout_id"), "webhook_deliveries", ["rollout_id"])
    op.create_table(
        "webhook_cursor",
        sa.Column("name", sa.String(length=32), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_webhook_cursor")),
    )
    op.execute(
        "INSERT INTO webhook_cursor (name, seq) SELECT 'events', COALESCE(MAX(seq), 0) FROM audit_events"
    )
    op.create_table(
        "gate_checks",
        sa.Column("rollout_id", sa.Integer(), nullable=False),
        sa.Column("gate", sa.String(length=63), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("opened_at", Instant(timezone=True), nullable=False),
        sa.Column("deadline_at", Instant(timezone=True), nullable=False),
        sa.Column("next_call_at", Instant(timezone=True), nullable=False),
        sa.Column("calls", sa.Integer(), nullable=False),
        sa.Column("last_called_at", Instant(timezone=True), nullable=True),
        sa.Column("last_status", sa.Integer(), nullable=True),
        sa.Column("last_answer", sa.Text(), nullable=True),
        sa.Column("passed_at", Instant(timezone=True), nullable=True),
        sa.Column("expired_at", Instant(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["rollout_id"],
            ["rollouts.id"],
            name=op.f("fk_gate_checks_rollout_id_rollouts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("rollout_id", "gate", name=op.f("pk_gate_checks")),
    )
    op.create_index(op.f("ix_gate_checks_next_call_at"), "gate_checks", ["next_call_at"])


def downgrade() -> None:
    op.drop_table("gate_checks")
    op.drop_table("webhook_cursor")
    op.drop_table("webhook_deliveries")
    op.drop_table("webhook_targets")
