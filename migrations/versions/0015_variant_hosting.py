"""variant hosting: a config's variant keeps every setting SageMaker describes (serverless config,
volume, timeouts, routing, managed instance scaling, ...), and a serverless variant has no instance
type or count

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-06 19:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("config_variants") as batch:
        batch.alter_column("instance_type", existing_type=sa.String(length=64), nullable=True)
        batch.alter_column("instance_count", existing_type=sa.Integer(), nullable=True)
        batch.add_column(sa.Column("settings", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("config_variants") as batch:
        batch.drop_column("settings")
        batch.alter_column("instance_count", existing_type=sa.Integer(), nullable=False)
        batch.alter_column("instance_type", existing_type=sa.String(length=64), nullable=False)
