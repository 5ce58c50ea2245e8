"""`variantctl db upgrade|current`: the registry's schema, owned by Alembic."""

from __future__ import annotations

import click

from manager.cli.context import AppContext, pass_app


@click.group("db")
def db_group() -> None:
    """Create or migrate the registry database."""


@db_group.command("upgrade")
@click.option("--revision", default="head", show_default=True, help="target schema revision")
@pass_app
def upgrade(app: AppContext, revision: str) -> None:
    """Create the registry, or migrate it to this release's schema."""
    from manager.db import describe_location, ensure_parent_writable
    from manager.history import audit
    from manager.registry import migrate

    ensure_parent_writable(app.settings.db_url)
    database = app.database(require_current=False)
    before, after = migrate.upgrade(database, revision)
    where = describe_location(database.url)
    if before == after:
        click.echo(f"registry at {where} is up to date (schema {after})")
        return
    if after == migrate.head_revision(database):
        audit.record(
            database,
            app.actor,
            audit.Event(
                action="db.upgrade",
                subject_type="registry",
                subject_id=where,
                payload={"from": before, "to": after},
            ),
        )
    click.echo(f"registry at {where}: schema {before or 'none'} -> {after}")


@db_group.command("current")
@pass_app
def current(app: AppContext) -> None:
    """Show the registry's schema revision and whether it is up to date."""
    from manager.db import describe_location
    from manager.registry import migrate

    database = app.database(require_current=False)
    where = describe_location(database.url)
    path = database.path
    if path is not None and not path.exists():
        click.echo(f"no registry at {where}; create it with `variantctl db upgrade`")
        return
    now, head = migrate.current_revision(database), migrate.head_revision(database)
    state = "up to date" if now == head else f"behind {head}: run `variantctl db upgrade`"
    click.echo(f"{where}: schema {now or 'none'} ({state})")
