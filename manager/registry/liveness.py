"""Whether a daemon is working a rollout at all: each daemon's reconcile tick says when it ran and
how often it runs; a command that leaves work to the daemon says so when none has ticked the
endpoint within two of its tick intervals (issue 31: `rollout pause` promised "within one tick" with
no daemon alive, and `rollout watch` showed `running`)."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from manager.registry.leader import database_now
from manager.registry.tables import DaemonInstance, EndpointLease

FLOOR = timedelta(seconds=10)  # a tick delayed by a busy host or a slow SageMaker call is not "down"


def ticked(session: Session, instance: str, tick_seconds: float, started_at: datetime) -> None:
    """This daemon's reconcile tick runs now (it keeps the elector's leader epoch as it is)."""
    now = database_now(session)
    row = session.get(DaemonInstance, instance)
    if row is None:
        host, pid = socket.gethostname(), os.getpid()
        row = DaemonInstance(instance=instance, host=host, pid=pid, started_at=started_at, seen_at=now)
        session.add(row)
    row.seen_at, row.ticked_at, row.tick_seconds, row.pid = now, now, tick_seconds, os.getpid()


@dataclass(frozen=True)
class Liveness:
    alive: bool
    said: str  # "pid 12 on host, ticked 1 s ago" or what is wrong, in one line

    def warning(self) -> str | None:
        return None if self.alive else f"warning: {self.said}; nothing acts on this until it runs"


def _age(delta: timedelta) -> str:
    seconds = max(0, int(delta.total_seconds()))
    if seconds < 120:
        return f"{seconds} s"
    return f"{seconds // 60} min" if seconds < 7200 else f"{seconds // 3600} h"


def _late(row: DaemonInstance, now: datetime) -> bool:
    assert row.ticked_at is not None
    return now - row.ticked_at > max(2 * timedelta(seconds=row.tick_seconds or 0), FLOOR)


def check(session: Session, endpoint: str | None = None) -> Liveness:
    """Is a daemon ticking `endpoint` (the one holding its lease, when a lease is held), or any?"""
    now = database_now(session)
    rows = list(session.scalars(select(DaemonInstance).where(DaemonInstance.ticked_at.is_not(None))))
    if not rows:
        return Liveness(False, "no daemon has run on this registry: start `variantctl daemon`")
    lease = session.get(EndpointLease, endpoint) if endpoint else None
    holder = next((r for r in rows if lease is not None and r.instance == lease.owner), None)
    if holder is not None and lease is not None and lease.expires_at > now and _late(holder, now):
        assert holder.ticked_at is not None
        return Liveness(
            False,
            f"the daemon working {endpoint} (pid {holder.pid} on {holder.host}) last ticked "
            f"{_age(now - holder.ticked_at)} ago, every {holder.tick_seconds:g} s: is it running?",
        )
    live = [r for r in rows if not _late(r, now)]
    if not live:
        last = max(rows, key=lambda r: r.ticked_at or now)
        assert last.ticked_at is not None
        return Liveness(
            False,
            f"no daemon has ticked for {_age(now - last.ticked_at)} (the last: pid {last.pid} on "
            f"{last.host}): start `variantctl daemon`",
        )
    best = holder if holder is not None and holder in live else max(live, key=lambda r: r.ticked_at or now)
    assert best.ticked_at is not None
    return Liveness(True, f"pid {best.pid} on {best.host}, ticked {_age(now - best.ticked_at)} ago")
