"""Settings: flags > environment (VARIANTCTL_*) > defaults."""

from __future__ import annotations

import getpass
import os
from dataclasses import dataclass
from pathlib import Path

ENV_DB = "VARIANTCTL_DB"
ENV_ACTOR = "VARIANTCTL_ACTOR"


def data_dir() -> Path:
    """`$XDG_DATA_HOME/variantctl`, or `~/.local/share/variantctl`."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "variantctl"


def default_db_path() -> Path:
    return data_dir() / "registry.db"


def db_url(flag: str | None = None) -> str:
    """A SQLAlchemy URL for the registry: a plain path means a SQLite file."""
    value = flag or os.environ.get(ENV_DB) or str(default_db_path())
    if "://" in value:
        return value
    return "sqlite:///" + str(Path(value).expanduser().absolute())


def actor(flag: str | None = None) -> str:
    """Who is acting: --actor, then VARIANTCTL_ACTOR, then the OS user."""
    value = flag or os.environ.get(ENV_ACTOR)
    if value:
        return value
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid:{os.getuid()}"


def scheduler_actor(job_id: str) -> str:
    """The actor recorded for work a scheduled job does."""
    return f"scheduler:{job_id}"


@dataclass(frozen=True)
class Settings:
    db_url: str
    actor: str

    @classmethod
    def resolve(cls, db: str | None = None, actor_flag: str | None = None) -> Settings:
        return cls(db_url=db_url(db), actor=actor(actor_flag))
