"""ingestion counts what expired unjoined, per prefix, so `endpoints show` can say so

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-29 00:20:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("ingest_cursors", schema=None) as batch_op:
        batch_op.add_column(sa.Column("expired", sa.Integer(), nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("ingest_cursors", schema=None) as batch_op:
        batch_op.drop_column("expired")
