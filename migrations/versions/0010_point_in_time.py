"""the history holds what `endpoints show --at` needs; who started each rollout and who asked for its intent

From this revision on every rollout event carries the rollout as it stands after the event (state,
step, phase, weight, who started it and the operator intent it acts on), so the state of an endpoint
at any instant is read from the history alone. Two indexes let one endpoint's or one subject's events
be found without a scan. `rollouts.started_by` is backfilled from each rollout's `rollout.start` event.

A registry that already has events gets one `history.timeline` event by `migration:0010`: from its
seq on, `--at` is exact; before it, steps are derived from the decisions and say so.

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-29 03:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.orm import Session

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ACTOR = "migration:0010"


def upgrade() -> None:
    from manager.history import audit
    from manager.history.timeline import MARKER_EVENT

    with op.batch_alter_table("rollouts", schema=None) as batch_op:
        batch_op.add_column(sa.Column("started_by", sa.String(length=128), nullable=True))
        batch_op.add_column(sa.Column("intent_actor", sa.String(length=128), nullable=True))
    op.create_index("ix_audit_events_endpoint_action_at", "audit_events", ["endpoint", "action", "at"])
    op.create_index("ix_audit_events_subject_seq", "audit_events", ["subject_type", "subject_id", "seq"])
    conn = op.get_bind()
    conn.exec_driver_sql(
        "UPDATE rollouts SET started_by = (SELECT e.actor FROM audit_events e"
        " WHERE e.action = 'rollout.start' AND e.subject_type = 'rollout'"
        " AND e.subject_id = CAST(rollouts.id AS VARCHAR) ORDER BY e.seq LIMIT 1)"
    )
    head = conn.exec_driver_sql("SELECT seq FROM audit_head WHERE id = 1").scalar()
    if head:
        session = Session(bind=conn)
        event = audit.Event(
            MARKER_EVENT,
            "registry",
            "history",
            "from this event on, each rollout event records the rollout's state: `--at` is exact; "
            "before it, rollout steps are derived from the decisions",
            {"exact_from": int(head) + 1},
        )
        audit.append(session, ACTOR, event)
        session.flush()
        session.close()


def downgrade() -> None:
    """The event stays: the history is append-only."""
    op.drop_index("ix_audit_events_subject_seq", table_name="audit_events")
    op.drop_index("ix_audit_events_endpoint_action_at", table_name="audit_events")
    with op.batch_alter_table("rollouts", schema=None) as batch_op:
        batch_op.drop_column("intent_actor")
        batch_op.drop_column("started_by")
