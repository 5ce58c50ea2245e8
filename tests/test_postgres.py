"""The registry's SQL is portable: the same migrations, history and constraints on PostgreSQL.

Runs against the PostgreSQL at VARIANTCTL_TEST_PG (default: postgres on 127.0.0.1)
in a throwaway database; skipped, saying why, when none is reachable.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import select, text
from sqlalchemy.exc import IntegrityError, InternalError

from manager.db import Database
from manager.history import audit
from manager.registry import migrate, models
from manager.registry.errors import explain
from manager.registry.tables import ModelVersion

from .conftest import throwaway_pg_database


@pytest.fixture
def pg() -> Iterator[Database]:
    with throwaway_pg_database() as url:
        database = Database(url)
        try:
            yield database
        finally:
            database.dispose()


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
    audit.record(pg, "daemon", audit.Event("note.added", "note", "1", endpoint="ep"))

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


REGISTER = """
import sys
from manager.cli.main import cli
for _ in range(int(sys.argv[3])):
    try:
        cli.main(["--db", sys.argv[1], "--actor", "proc", "models", "register", "churn",
                  "--artifact", sys.argv[2], "--framework", "sklearn", "-o", "json"])
    except SystemExit as exc:  # click ends each command with one, 0 on success
        if exc.code:
            raise
"""


def test_concurrent_registrations_never_race_for_a_version(pg: Database, tmp_path: Path) -> None:
    """4 processes register one model name at once: versions 1..N, no gap, no failure."""
    migrate.upgrade(pg)
    artifact = tmp_path / "m.joblib"
    artifact.write_bytes(b"x")
    each = 10
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", REGISTER, pg.url, artifact.as_uri(), str(each)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    outcomes = [(p.wait(timeout=120), p.stderr.read() if p.stderr else "") for p in procs]
    assert all(code == 0 for code, _ in outcomes), outcomes
    with pg.read() as session:
        versions = sorted(session.scalars(select(ModelVersion.version).where(ModelVersion.name == "churn")))
    assert versions == list(range(1, 4 * each + 1))
    assert audit.verify(pg).ok


def test_audit_verify_during_writes_never_raises_a_false_alarm(pg: Database, tmp_path: Path) -> None:
    migrate.upgrade(pg)
    artifact = tmp_path / "m.joblib"
    artifact.write_bytes(b"x")
    writer = subprocess.Popen(
        [sys.executable, "-c", REGISTER, pg.url, artifact.as_uri(), "60"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    verdicts = []
    try:
        while writer.poll() is None:
            verdicts.append(audit.verify(pg))
    finally:
        writer.wait(timeout=120)
    assert writer.returncode == 0, writer.stderr.read() if writer.stderr else ""
    assert len(verdicts) >= 5, "verify ran while the writes went on"
    assert all(v.ok for v in verdicts), next(v for v in verdicts if not v.ok)
    assert audit.verify(pg).count == 60
