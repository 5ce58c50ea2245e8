"""What every command shares: settings and, opened on first use, the registry."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import click

from manager.config import Settings

if TYPE_CHECKING:
    from manager.db import Database


@dataclass
class AppContext:
    settings: Settings
    _database: Database | None = field(default=None, repr=False)

    @classmethod
    def create(cls, db: str | None, actor: str | None) -> AppContext:
        return cls(Settings.resolve(db, actor))

    @property
    def actor(self) -> str:
        return self.settings.actor

    def database(self, require_current: bool = True) -> Database:
        """The registry; by default refused unless its schema is this release's head."""
        if self._database is None:
            from manager.db import Database

            self._database = Database(self.settings.db_url)
        if require_current:
            from manager.registry.migrate import require_current as check

            check(self._database)
        return self._database

    def close(self) -> None:
        if self._database is not None:
            self._database.dispose()


pass_app = click.make_pass_decorator(AppContext)
