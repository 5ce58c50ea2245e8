"""The registry's SQL is portable: the same migrations, history and constraints on PostgreSQL.

Runs against the PostgreSQL at VARIANTCTL_TEST_PG (default: postgres on 127.0.0.1)
in a throwaway database; skipped, saying why, when none is reachable.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import create_engine, text
from sqlalchemy.exc import IntegrityError, InternalError, OperationalError

from manager import audit
from manager.db import Database
from manager.registry import migrate, models
from manager.registry.errors import explain

ADMIN_URL = os.environ.get("VARIANTCTL_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")


@pytest.fixture
def pg() -> Iterator[Database]:
    admin = create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    name = f"variantctl_test_{uuid.uuid4().hex[:12]}"
    try:
        with admin.connect() as conn:
            conn.execute(text(f"CREATE DATABASE {name}"))
    except OperationalError as exc:
        admin.dispose()
        pytest.skip(f"no PostgreSQL at {ADMIN_URL}: {str(exc.orig).splitlines()[0]}")
    database = Database(admin.url.set(database=name).render_as_string(hide_password=False))
    try:
        yield database
    finally:
        database.dispose()
        with admin.connect() as conn:
            conn.execute(text(f"DROP DATABASE {name} WITH (FORCE)"))
        admin.dispose()


def test_migrations_round_trip_and_match_the_models(pg: Database) -> None:
    migrate.upgrade(pg)
    migrate.downgrade(pg, "base")
    migrate.upgrade(pg)
    command.check(migrate.alembic_config(pg))
    migrate.require_current(pg)


def test_history_chain_constraints_and_triggers(pg: Database, tmp_path: Path) -> None:
    migrate.upgrade(pg)
    artifact = tmp_path / "m.joblib"
    artifact.write_bytes(b"x")
    with pg.write() as session:
        for _ in range(3):
            models.register(session, models.NewVersion("churn", str(artifact), "sklearn"), "alice")
    audit.record(pg, "daemon", audit.Event("rollout.start", "rollout", "1", endpoint="ep"))

    verdict = audit.verify(pg)
    assert verdict.ok and verdict.count == 4
    events = audit.history(pg, audit.HistoryFilter(model="churn", limit=2))
    assert [e.subject_id for e in events] == ["churn:3", "churn:2"]

    with pytest.raises(IntegrityError) as info, pg.write() as session:
        models.register(session, models.NewVersion("churn", str(artifact), "sklearn", version=2), "a")
    assert explain(info.value) == "that model name and version are already registered"

    with pytest.raises(IntegrityError, match="append-only"), pg.write() as session:
        session.execute(text("UPDATE audit_events SET actor = 'mallory'"))
    with pytest.raises(InternalError, match="read-only"), pg.read() as session:
        session.execute(text("UPDATE audit_head SET seq = 0"))
    assert audit.verify(pg).ok
