"""several daemons on one registry: the scheduler's leader lease, and the daemons that work it

`leader_leases` holds one row per lease (today `scheduler`): the daemon that holds it, until when (by
the database's clock) and its epoch, which grows with each change of holder. `daemon_instances` is
each daemon's heartbeat, for `variantctl daemon status`. `endpoint_leases.epoch` grows with each
change of an endpoint lease's owner: a daemon's writes and platform calls are fenced by it.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-03 10:41:14.571306
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import manager.registry.types

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("endpoint_leases", schema=None) as batch_op:
        batch_op.add_column(sa.Column("epoch", sa.Integer(), nullable=False, server_default="1"))
    op.create_table(
        "daemon_instances",
        sa.Column("instance", sa.String(length=128), nullable=False),
        sa.Column("host", sa.String(length=255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("started_at", manager.registry.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("seen_at", manager.registry.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("leader_epoch", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("instance", name=op.f("pk_daemon_instances")),
    )
    with op.batch_alter_table("daemon_instances", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_daemon_instances_seen_at"), ["seen_at"], unique=False)

    op.create_table(
        "leader_leases",
        sa.Column("name", sa.String(length=32), nullable=False),
        sa.Column("holder", sa.String(length=128), nullable=False),
        sa.Column("epoch", sa.Integer(), nullable=False),
        sa.Column("acquired_at", manager.registry.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("expires_at", manager.registry.types.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_leader_leases")),
    )


def downgrade() -> None:
    with op.batch_alter_table("endpoint_leases", schema=None) as batch_op:
        batch_op.drop_column("epoch")
    op.drop_table("leader_leases")
    with op.batch_alter_table("daemon_instances", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_daemon_instances_seen_at"))

    op.drop_table("daemon_instances")
