"""webhook formats: a delivery's format holds `pagerduty` (teams, email, pagerduty join json and slack)

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-07 08:15:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0020"
down_revision: str | None = "0019"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("webhook_deliveries") as batch:
        batch.alter_column("format", type_=sa.String(length=16), existing_type=sa.String(length=8))


def downgrade() -> None:
    op.execute("DELETE FROM webhook_deliveries WHERE length(format) > 8")
    with op.batch_alter_table("webhook_deliveries") as batch:
        batch.alter_column("format", type_=sa.String(length=8), existing_type=sa.String(length=16))
