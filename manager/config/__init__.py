"""Settings: flags > environment (VARIANTCTL_*) > defaults."""

from __future__ import annotations

import getpass
import os
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from manager.errors import UserError

ENV_DB = "VARIANTCTL_DB"
ENV_ACTOR = "VARIANTCTL_ACTOR"
# `local-sagemaker serve --clock`: "held" starts the host's clock stopped, for tests that move it.
ENV_LOCAL_CLOCK = "VARIANTCTL_LOCAL_CLOCK"
# The serving image of a version registered without one: the local SageMaker's scikit-learn server.
DEFAULT_IMAGE = "local/sklearn:1.9"


def data_dir() -> Path:
    """`$XDG_DATA_HOME/variantctl`, or `~/.local/share/variantctl`."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "variantctl"


def default_db_path() -> Path:
    return data_dir() / "registry.db"


def db_url(flag: str | None = None) -> str:
    """A SQLAlchemy URL for the registry: a plain path means a SQLite file. An empty `--db` (or an empty
    VARIANTCTL_DB) is a mistake, never a silent fall-back to the next source."""
    if flag is not None and not flag.strip():
        raise UserError("--db is empty: give a file path or a database URL")
    env = os.environ.get(ENV_DB)
    if flag is None and env is not None and not env.strip():
        raise UserError(f"{ENV_DB} is set but empty: give a file path or a database URL, or unset it")
    value = flag or env or str(default_db_path())
    if "://" in value:
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError

        try:
            make_url(value)
        except ArgumentError:
            raise UserError(
                f"--db {value!r} is not a database URL (postgresql+psycopg://... or a path)"
            ) from None
        return value
    return "sqlite:///" + str(Path(value).expanduser().absolute())


ACTOR_MAX = 128


def check_actor(value: str, source: str = "--actor") -> str:
    """An actor is recorded in the history with everything it does: one printable line, bounded."""
    if not value.strip():
        raise UserError(f"{source} is empty")
    if len(value) > ACTOR_MAX:
        raise UserError(f"{source} is {len(value)} characters; at most {ACTOR_MAX}")
    if not value.isprintable():
        raise UserError(f"{source} {value!r} holds a control character (a newline?); give one printable line")
    return value


def actor(flag: str | None = None) -> str:
    """Who is acting: --actor, then VARIANTCTL_ACTOR, then the OS user."""
    if flag is not None:
        return check_actor(flag)
    value = os.environ.get(ENV_ACTOR)
    if value:
        return check_actor(value, ENV_ACTOR)
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


@dataclass(frozen=True)
class DaemonTuning:
    """The daemon's knobs, each with its VARIANTCTL_* variable.

    - metrics_lag: how long CloudWatch windows are left to fill before they are read (its data arrives
      2-5 minutes late);
    - metrics_period: the CloudWatch window, in seconds;
    - capture_settle: how long a file must go without a write before its last line, if it has no
      newline, is read (until then the writer may still be writing it);
    - ingest_lookback: how long after its last write a file is still watched for appends, and files
      named before it are still looked for; older ones are forgotten;
    - endpoint_lease: how long a daemon's lease on an endpoint lasts (renewed at half-life by its
      ticks): with several daemons, how soon a dead one's endpoints pass to the others;
    - webhook_retry: the wait before a failed webhook delivery's first retry (it doubles each time, up
      to 10 minutes; after `WEBHOOK_ATTEMPTS` attempts the delivery is marked failed, kept and listed);
    - webhook_keep: how long a delivered webhook delivery is kept (failed ones are kept until sent);
    - dashboard_url: the dashboard's address as people reach it (VARIANTCTL_DASHBOARD_URL, or
      `daemon --dashboard-url`), for the link each webhook event carries; none when unset.
    """

    metrics_lag: timedelta = timedelta(seconds=180)
    metrics_period: int = 60
    capture_settle: timedelta = timedelta(seconds=7200)
    ingest_lookback: timedelta = timedelta(days=2)
    endpoint_lease: timedelta = timedelta(seconds=60)
    webhook_retry: timedelta = timedelta(seconds=2)
    webhook_keep: timedelta = timedelta(days=30)
    dashboard_url: str | None = None

    @classmethod
    def from_env(cls) -> DaemonTuning:
        return cls(
            metrics_lag=timedelta(seconds=_seconds("VARIANTCTL_METRICS_LAG_SECONDS", 180)),
            metrics_period=int(_seconds("VARIANTCTL_METRICS_PERIOD_SECONDS", 60)),
            capture_settle=timedelta(seconds=_seconds("VARIANTCTL_CAPTURE_SETTLE_SECONDS", 7200)),
            ingest_lookback=timedelta(seconds=_seconds("VARIANTCTL_INGEST_LOOKBACK_SECONDS", 172800)),
            endpoint_lease=timedelta(seconds=_seconds("VARIANTCTL_ENDPOINT_LEASE_SECONDS", 60)),
            webhook_retry=timedelta(seconds=_seconds("VARIANTCTL_WEBHOOK_RETRY_SECONDS", 2)),
            webhook_keep=timedelta(seconds=_seconds("VARIANTCTL_WEBHOOK_KEEP_SECONDS", 30 * 86400)),
            dashboard_url=_url("VARIANTCTL_DASHBOARD_URL"),
        )


def _url(variable: str) -> str | None:
    raw = (os.environ.get(variable) or "").strip()
    if not raw:
        return None
    if not raw.startswith(("http://", "https://")) or any(c.isspace() for c in raw):
        raise UserError(f"{variable}={raw!r}: give an http:// or https:// address")
    return raw.rstrip("/")


def _seconds(variable: str, default: float) -> float:
    raw = os.environ.get(variable)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value > 0 or value == float("inf"):
        raise UserError(f"{variable}={raw!r}: give a number of seconds above 0")
    return value
