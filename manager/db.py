"""Engines and sessions for the registry.

Two engines share one database: a writer whose transactions start with
`BEGIN IMMEDIATE` (so SQLite takes the write lock up front and a busy writer
waits instead of failing half-way), and a read-only engine for queries.
On SQLite every connection gets WAL, a busy timeout, foreign keys and
synchronous=NORMAL. On PostgreSQL writers serialize on an advisory lock and readers see one
snapshot per transaction, so the same code has the same guarantees on both.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.orm import Session, sessionmaker

from manager.errors import UserError

BUSY_TIMEOUT_MS = 10_000


def sqlite_path(url: str | URL) -> Path | None:
    """The file behind a SQLite URL, or None for other databases and in-memory SQLite."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(str(parsed.database))


def _on_sqlite_connect(read_only: bool) -> Any:
    def configure(dbapi_conn: sqlite3.Connection, _record: Any) -> None:
        # Take transaction control away from the driver: the "begin" hook decides.
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys = ON")
        if read_only:
            cursor.execute("PRAGMA query_only = ON")
        else:
            cursor.execute("PRAGMA journal_mode = WAL")
            cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.close()

    return configure


def _make_engine(url: str, read_only: bool) -> Engine:
    parsed = make_url(url)
    path = sqlite_path(parsed)
    if parsed.get_backend_name() != "sqlite":
        return _postgres_engine(parsed, read_only)
    if path is not None and read_only:
        parsed = parsed.set(database=f"file:{path}", query={"mode": "ro", "uri": "true"})
    engine = create_engine(parsed, connect_args={"timeout": BUSY_TIMEOUT_MS / 1000})
    event.listen(engine, "connect", _on_sqlite_connect(read_only))

    @event.listens_for(engine, "begin")
    def _begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")

    return engine


# A write transaction idle this long (its process frozen or stuck between statements) is ended by
# PostgreSQL; no write transaction of the registry's waits on anything but the database for long.
IDLE_IN_TRANSACTION_MS = 10_000
WRITER_LOCK = 0x7661_7269  # "vari": the advisory lock every registry write transaction holds


def _postgres_engine(url: URL, read_only: bool) -> Engine:
    """PostgreSQL with SQLite's guarantees, which the registry's code relies on:
    - one writer at a time (SQLite's BEGIN IMMEDIATE): each write transaction first takes a
      transaction-scoped advisory lock, waiting up to the same busy timeout, so a read-then-write
      (the next version number, the one active rollout per endpoint, a lease) cannot race;
    - a read transaction sees one snapshot (SQLite's read transactions do): REPEATABLE READ, read-only,
      so `audit verify` never compares events and a head taken at different moments."""
    if read_only:
        return create_engine(
            url, isolation_level="REPEATABLE READ", execution_options={"postgresql_readonly": True}
        )
    engine = create_engine(url, pool_pre_ping=True)

    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        # A process frozen mid-transaction (a stopped VM, SIGSTOP, a long pause) would hold the writer
        # lock, and every other daemon's writes would wait on it for as long as it stays frozen: the
        # server ends such a session instead, its transaction rolled back and its locks released.
        with dbapi_connection.cursor() as cursor:
            cursor.execute(f"SET idle_in_transaction_session_timeout = {IDLE_IN_TRANSACTION_MS}")
        dbapi_connection.commit()

    @event.listens_for(engine, "begin")
    def _begin(conn: Any) -> None:
        conn.exec_driver_sql(f"SET LOCAL lock_timeout = {BUSY_TIMEOUT_MS}")
        conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({WRITER_LOCK})")

    return engine


@dataclass
class Database:
    """The registry database: a writer engine and a read-only engine."""

    url: str
    writer: Engine = field(init=False)
    reader: Engine = field(init=False)

    def __post_init__(self) -> None:
        self.writer = _make_engine(self.url, read_only=False)
        in_memory = make_url(self.url).get_backend_name() == "sqlite" and self.path is None
        # An in-memory database exists only inside its one engine.
        self.reader = self.writer if in_memory else _make_engine(self.url, read_only=True)
        self._write_sessions = sessionmaker(self.writer, expire_on_commit=False)
        self._read_sessions = sessionmaker(self.reader, expire_on_commit=False)

    @property
    def path(self) -> Path | None:
        return sqlite_path(self.url)

    @contextmanager
    def write(self) -> Iterator[Session]:
        """One write transaction (BEGIN IMMEDIATE on SQLite), committed on success."""
        with self._write_sessions() as session, session.begin():
            yield session

    @contextmanager
    def read(self) -> Iterator[Session]:
        with self._read_sessions() as session, session.begin():
            yield session

    def dispose(self) -> None:
        self.writer.dispose()
        self.reader.dispose()


def describe_location(url: str) -> str:
    """What to show a person: the file path for SQLite, the URL without password otherwise."""
    path = sqlite_path(url)
    return str(path) if path else make_url(url).render_as_string(hide_password=True)


def ensure_parent_writable(url: str) -> None:
    """Create the directory of a SQLite file, or fail with one clear line."""
    path = sqlite_path(url)
    if path is None:
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create registry directory {path.parent}: {exc.strerror}") from None
    if path.exists() and not _writable(path):
        raise UserError(f"registry {path} is not writable")
    if not path.exists() and not _writable(path.parent):
        raise UserError(f"cannot create registry in {path.parent}: directory is not writable")


def _writable(path: Path) -> bool:
    return os.access(path, os.W_OK)


def insert_for(session: Session) -> Any:
    """INSERT with ON CONFLICT for this session's database: SQLite's or PostgreSQL's (the same API)."""
    if session.get_bind().dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return sqlite_insert


T = TypeVar("T")


def chunks(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    """Slices of at most `size`, small enough for one statement's parameters (SQLite allows 32,766)."""
    for start in range(0, len(items), size):
        yield items[start : start + size]
