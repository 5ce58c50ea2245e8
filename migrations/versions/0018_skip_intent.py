"""the `skip` intent: an operator's one-step promote (`rollout promote ID` without --full) ends the
current step now

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-07 07:45:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0018"
down_revision: str | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("rollouts") as batch:
        batch.drop_constraint(op.f("ck_rollouts_intent"), type_="check")
        batch.create_check_constraint(
            op.f("ck_rollouts_intent"),
            "intent IS NULL OR intent IN ('pause', 'resume', 'abort', 'promote', 'skip')",
        )


def downgrade() -> None:
    op.execute("UPDATE rollouts SET intent = NULL WHERE intent = 'skip'")
    with op.batch_alter_table("rollouts") as batch:
        batch.drop_constraint(op.f("ck_rollouts_intent"), type_="check")
        batch.create_check_constraint(
            op.f("ck_rollouts_intent"), "intent IS NULL OR intent IN ('pause', 'resume', 'abort', 'promote')"
        )
