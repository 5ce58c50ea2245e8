"""Alembic, driven from code: upgrade, downgrade, current revision, and the schema-behind guard."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect

import migrations
from manager.db import Database, describe_location
from manager.errors import SchemaBehind, UserError

UPGRADE_HINT = "run `variantctl db upgrade`"


def alembic_config(database: Database) -> Config:
    config = Config()
    config.set_main_option("script_location", str(Path(migrations.__file__).parent))
    config.attributes["url"] = database.url
    return config


def head_revision(database: Database) -> str:
    head = ScriptDirectory.from_config(alembic_config(database)).get_current_head()
    assert head is not None, "the package ships no migrations"
    return head


def current_revision(database: Database, for_write: bool = False) -> str | None:
    """The database's revision, or None when it has never been migrated."""
    engine = database.writer if for_write else database.reader
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(database: Database, revision: str = "head") -> tuple[str | None, str | None]:
    """Migrate up; returns (revision before, revision after)."""
    before = current_revision(database, for_write=True)
    _refuse_unknown(database, before)
    if before is None:
        foreign = set(inspect(database.writer).get_table_names()) - {"alembic_version", "apscheduler_jobs"}
        if foreign:
            where = describe_location(database.url)
            raise UserError(
                f"{where} holds another application's tables ({', '.join(sorted(foreign)[:3])}"
                f"{', ...' if len(foreign) > 3 else ''}); refusing to make it a variantctl registry"
            )
    with database.writer.connect() as conn:
        config = alembic_config(database)
        config.attributes["connection"] = conn
        command.upgrade(config, revision)
        conn.commit()
    return before, current_revision(database)


def downgrade(database: Database, revision: str) -> None:
    with database.writer.connect() as conn:
        config = alembic_config(database)
        config.attributes["connection"] = conn
        command.downgrade(config, revision)
        conn.commit()


def require_current(database: Database) -> None:
    """Refuse a registry that is missing or whose schema is not this release's head."""
    where = describe_location(database.url)
    path = database.path
    if path is not None and not path.exists():
        raise UserError(f"no registry at {where}; create it with `variantctl db upgrade`")
    current = current_revision(database)
    head = head_revision(database)
    if current == head:
        return
    if current is None:
        if set(inspect(database.reader).get_table_names()) - {"alembic_version"}:
            raise UserError(f"{where} is not a variantctl registry (it has no schema version)")
        raise SchemaBehind(f"registry at {where} is empty; {UPGRADE_HINT}")
    _refuse_unknown(database, current)
    raise SchemaBehind(f"registry schema at {where} is {current}, this release needs {head}; {UPGRADE_HINT}")


def _refuse_unknown(database: Database, revision: str | None) -> None:
    if revision is None:
        return
    script = ScriptDirectory.from_config(alembic_config(database))
    if revision not in {rev.revision for rev in script.walk_revisions()}:
        raise UserError(f"registry schema {revision} is newer than this variantctl knows; upgrade variantctl")
