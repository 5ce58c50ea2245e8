"""the history describes endpoint configs and which config each endpoint serves

From this revision on, recording a config appends `endpoint.config` (its variants) and changing the
config an endpoint serves appends `endpoint.serves`, so that `audit verify` can check those rows.
This migration appends both for what a registry already holds, as found at upgrade time, by the
actor `migration:0009`: from here on, an edit that bypasses the history is caught.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-29 00:40:00
"""

from collections.abc import Sequence

from alembic import op
from sqlalchemy.orm import Session

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ACTOR = "migration:0009"


def upgrade() -> None:
    from manager.history import audit
    from manager.history.attest import CONFIG_EVENT, SERVES_EVENT

    conn = op.get_bind()
    configs: dict[int, dict] = {}
    for row in conn.exec_driver_sql(
        "SELECT id, name, endpoint_name, data_capture FROM endpoint_configs ORDER BY id"
    ):
        capture = row.data_capture
        if isinstance(capture, str):
            import json

            capture = json.loads(capture)
        configs[row.id] = {
            "name": row.name,
            "endpoint": row.endpoint_name,
            "variants": [],
            "capture": (capture or {}).get("destination"),
        }
    for row in conn.exec_driver_sql(
        "SELECT v.config_id, v.variant_name, m.name, m.version, v.instance_type, v.instance_count,"
        " v.initial_weight, v.is_shadow FROM config_variants v JOIN model_versions m"
        " ON m.id = v.model_version_id"
    ):
        configs[row[0]]["variants"].append(
            {
                "variant": row[1],
                "model": f"{row[2]}:{row[3]}",
                "instance_type": row[4],
                "instance_count": row[5],
                "weight": float(row[6]),
                "shadow": bool(row[7]),
            }
        )
    session = Session(bind=conn)
    for config in configs.values():
        variants = sorted(config["variants"], key=lambda v: (v["shadow"], v["variant"]))
        payload = {"variants": variants, "capture": config["capture"]}
        event = audit.Event(
            CONFIG_EVENT,
            "endpoint_config",
            config["name"],
            f"config {config['name']} as found at upgrade",
            payload,
            config["endpoint"],
        )
        audit.append(session, ACTOR, event)
    for row in conn.exec_driver_sql(
        "SELECT name, current_config_id FROM endpoints WHERE current_config_id IS NOT NULL ORDER BY id"
    ):
        config = configs[row.current_config_id]
        payload = {
            "config": config["name"],
            "variants": {v["variant"]: v["model"] for v in config["variants"]},
        }
        event = audit.Event(
            SERVES_EVENT,
            "endpoint",
            row.name,
            f"{row.name} serves {config['name']} (at upgrade)",
            payload,
            row.name,
        )
        audit.append(session, ACTOR, event)
    session.flush()
    session.close()


def downgrade() -> None:
    """The events stay: the history is append-only."""
