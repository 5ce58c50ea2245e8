"""SQLite is configured on every connection; the read engine cannot write."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from manager.config import db_url, default_db_path
from manager.db import BUSY_TIMEOUT_MS, Database


def test_writer_connections_carry_the_pragmas(database: Database) -> None:
    with database.writer.connect() as conn:
        pragmas = {
            name: conn.exec_driver_sql(f"PRAGMA {name}").scalar()
            for name in ("journal_mode", "foreign_keys", "synchronous", "busy_timeout")
        }
    assert pragmas == {
        "journal_mode": "wal",
        "foreign_keys": 1,
        "synchronous": 1,
        "busy_timeout": BUSY_TIMEOUT_MS,
    }


def test_write_transactions_take_the_lock_up_front(database: Database) -> None:
    """A second writer cannot start while one holds BEGIN IMMEDIATE; readers still read."""
    import sqlite3

    assert database.path is not None
    with database.write() as session:
        session.execute(text("SELECT 1"))
        other = sqlite3.connect(database.path, timeout=0, isolation_level=None)
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            other.execute("BEGIN IMMEDIATE")
        assert other.execute("SELECT count(*) FROM audit_events").fetchone() == (0,)
        other.close()


def test_read_engine_refuses_writes(database: Database) -> None:
    with pytest.raises(OperationalError, match=r"readonly|read-only"), database.read() as session:
        session.execute(text("UPDATE audit_head SET seq = 5"))


def test_read_engine_sees_committed_writes(database: Database) -> None:
    with database.write() as session:
        session.execute(
            text(
                "INSERT INTO training_runs (trainer, hyperparameters, inputs, "
                "started_at, outcome) VALUES ('t', '{}', '{}', '2026-01-01', 'running')"
            )
        )
    with database.read() as session:
        assert session.execute(text("SELECT count(*) FROM training_runs")).scalar() == 1


def test_database_location_flag_then_env_then_default(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("VARIANTCTL_DB", str(tmp_path / "env.db"))
    assert db_url(str(tmp_path / "flag.db")) == f"sqlite:///{tmp_path / 'flag.db'}"
    assert db_url(None) == f"sqlite:///{tmp_path / 'env.db'}"
    assert db_url("postgresql+psycopg://u@h/db") == "postgresql+psycopg://u@h/db"
    monkeypatch.delenv("VARIANTCTL_DB")
    assert db_url(None) == f"sqlite:///{default_db_path()}"
    assert default_db_path() == tmp_path / "xdg" / "variantctl" / "registry.db"
