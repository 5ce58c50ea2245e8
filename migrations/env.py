"""Alembic environment: the registry's metadata, batch mode for SQLite, and the writer engine."""

from __future__ import annotations

from typing import Any

from alembic import context

from manager.config import db_url
from manager.db import Database
from manager.registry.tables import Base

# APScheduler keeps its jobs in the same database; autogenerate must not try to drop them.
FOREIGN_TABLES = frozenset({"apscheduler_jobs"})


def include_object(obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any) -> bool:
    if type_ == "table" and name in FOREIGN_TABLES:
        return False
    table = getattr(obj, "table", None)
    return not (table is not None and table.name in FOREIGN_TABLES)


def run_migrations(connection: Any) -> None:
    sqlite = connection.dialect.name == "sqlite"
    if sqlite:
        # Batch mode rebuilds a table by copy, drop and rename; with foreign keys on, SQLite refuses to
        # drop a table that other rows refer to. The pragma works only outside a transaction, so it is
        # sent on the driver connection before Alembic begins one; integrity is checked before commit.
        connection.connection.driver_connection.execute("PRAGMA foreign_keys = OFF")
    try:
        context.configure(
            connection=connection,
            target_metadata=Base.metadata,
            render_as_batch=True,
            include_object=include_object,
            compare_type=True,
        )
        with context.begin_transaction():
            context.run_migrations()
            if sqlite:
                broken = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
                if broken:
                    raise RuntimeError(f"migration left {len(broken)} broken foreign keys, e.g. {broken[0]}")
        if sqlite and connection.in_transaction():
            connection.commit()  # the pragma below is ignored inside a transaction
    finally:
        if sqlite:
            if connection.in_transaction():
                connection.rollback()
            connection.connection.driver_connection.execute("PRAGMA foreign_keys = ON")


def main() -> None:
    config = context.config
    connection = config.attributes.get("connection")
    if connection is not None:
        run_migrations(connection)
        return
    url = config.attributes.get("url") or context.get_x_argument(as_dictionary=True).get("db")
    database = Database(url or db_url())
    try:
        with database.writer.connect() as conn:
            run_migrations(conn)
            conn.commit()
    finally:
        database.dispose()


main()
