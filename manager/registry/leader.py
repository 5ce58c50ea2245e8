"""The scheduler's leader on a registry several daemons share (PostgreSQL), and the daemons' heartbeats.

A lease row with an expiry and an epoch, taken and renewed under a row lock (`SELECT ... FOR UPDATE`),
and judged by the database's own clock (`now()`), so that the hosts' clocks never decide who leads.
The holder renews it; another daemon takes it over only once it has expired, and the epoch then grows
by one. A holder stops scheduling when it has not renewed for `ttl - renew_every` by its own monotonic
clock, before anyone else can take over (the lease's expiry), with `renew_every` to spare for
scheduling latency and clock rates. Chosen over a session advisory lock: a lease survives a
connection pool's reconnects, says who holds it and until when (`daemon status`), and carries the epoch
that fences a holder's stale actions.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from manager.clock import utcnow
from manager.db import insert_for
from manager.registry.tables import DaemonInstance, LeaderLease, ScheduledRun

SCHEDULER = "scheduler"


@dataclass(frozen=True)
class Leadership:
    holder: str
    epoch: int
    expires_at: datetime
    now: datetime  # the database's clock when it was read


def database_now(session: Session) -> datetime:
    """The database's clock as it reads now (PostgreSQL's `clock_timestamp()`, not `now()`, which is
    when the transaction began: a claim that waited seconds for a lock would otherwise write a lease
    already expired); SQLite has none worth trusting, so this host's."""
    if session.get_bind().dialect.name == "postgresql":
        value = session.scalar(select(func.clock_timestamp()))
        assert isinstance(value, datetime)
        return value
    return utcnow()


def default_instance() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def claim(session: Session, instance: str, ttl: timedelta, name: str = SCHEDULER) -> Leadership | None:
    """Take or renew the lease for `instance` (in the caller's write transaction); None while another
    daemon holds it unexpired."""
    now = database_now(session)
    session.execute(
        insert_for(session)(LeaderLease.__table__)
        .values(name=name, holder=instance, epoch=1, acquired_at=now, expires_at=now + ttl)
        .on_conflict_do_nothing()
    )
    row = session.scalars(select(LeaderLease).where(LeaderLease.name == name).with_for_update()).one()
    session.refresh(row)
    now = database_now(session)  # the row is locked: read the clock after any wait for it
    if row.holder == instance and row.expires_at > now:
        row.expires_at = now + ttl  # renewed: the same epoch
    elif row.expires_at <= now:
        row.holder, row.epoch, row.acquired_at, row.expires_at = instance, row.epoch + 1, now, now + ttl
    else:
        return None
    return Leadership(row.holder, row.epoch, row.expires_at, now)


def release(session: Session, instance: str, epoch: int, name: str = SCHEDULER) -> None:
    """Give the lease up at once (a clean shutdown), if it is still this instance's under `epoch`."""
    row = session.scalars(select(LeaderLease).where(LeaderLease.name == name).with_for_update()).first()
    if row is not None and row.holder == instance and row.epoch == epoch:
        row.expires_at = database_now(session)


def heartbeat(session: Session, instance: str, started_at: datetime, epoch: int | None) -> None:
    """This daemon is alive (and leads under `epoch`, or not)."""
    now = database_now(session)
    row = session.get(DaemonInstance, instance)
    if row is None:
        session.add(
            DaemonInstance(
                instance=instance,
                host=socket.gethostname(),
                pid=os.getpid(),
                started_at=started_at,
                seen_at=now,
                leader_epoch=epoch,
            )
        )
    else:
        row.seen_at, row.leader_epoch, row.pid = now, epoch, os.getpid()


def in_use(session: Session, instance: str, ttl: timedelta) -> str | None:
    """Who else runs as `instance` right now, if anyone: a heartbeat under that id within `ttl` from
    another process (on this host, one still alive; on another host, one still heartbeating)."""
    row = session.get(DaemonInstance, instance)
    if row is None or database_now(session) - row.seen_at > ttl:
        return None
    if row.host == socket.gethostname():
        if row.pid == os.getpid():
            return None
        try:
            os.kill(row.pid, 0)
        except ProcessLookupError:
            return None  # it died (kill -9, a crash): its id is free
        except PermissionError:
            pass  # alive, someone else's
    return f"pid {row.pid} on {row.host}, seen {row.seen_at.isoformat()}"


def leader(session: Session, name: str = SCHEDULER) -> LeaderLease | None:
    return session.get(LeaderLease, name)


class NotLeading(Exception):
    """A scheduled job's write refused: its daemon no longer holds the scheduler's lease under the
    epoch the job runs under (it was frozen, cut off, or stopped leading while the job ran)."""


def check(session: Session, instance: str, epoch: int | None, name: str = SCHEDULER) -> None:
    """Raise NotLeading unless `instance` holds the lease under `epoch`, unexpired by the database's
    clock. The row is share-locked, so a takeover waits for the caller's transaction to end: what the
    caller writes in it is written under this epoch or not at all."""
    if epoch is None:
        raise NotLeading("this daemon does not lead the scheduler")
    row = session.scalars(
        select(LeaderLease).where(LeaderLease.name == name).with_for_update(read=True)
    ).first()
    if row is None or row.holder != instance or row.epoch != epoch:
        held = f"{row.holder} under epoch {row.epoch}" if row is not None else "nobody"
        raise NotLeading(f"the scheduler's lease is held by {held}, not by {instance} under epoch {epoch}")
    if row.expires_at <= database_now(session):
        raise NotLeading(f"the scheduler's lease under epoch {epoch} expired at {row.expires_at.isoformat()}")


def claim_run(
    session: Session, job_id: str, scheduled: datetime, instance: str, epoch: int | None
) -> str | None:
    """Claim the run of `job_id` due at `scheduled` (in the caller's write transaction). None when
    claimed now; otherwise the daemon that claimed it before."""
    inserted = session.execute(
        insert_for(session)(ScheduledRun.__table__)
        .values(
            job_id=job_id,
            scheduled_for=scheduled,
            instance=instance,
            epoch=epoch,
            started_at=database_now(session),
        )
        .on_conflict_do_nothing()
        .returning(ScheduledRun.__table__.c.job_id)
    ).first()
    if inserted is not None:
        return None
    earlier = session.get(ScheduledRun, (job_id, scheduled))
    return earlier.instance if earlier is not None else "another daemon"
