"""Endpoint leases: which daemon works an endpoint's rollout, until when, under which epoch. Taking one
over from another daemon starts a new epoch, so a daemon that lost its lease is fenced off (its writes
and platform calls check the epoch they acted under)."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from manager.db import chunks, insert_for
from manager.registry.tables import DaemonInstance, EndpointLease

LEASE_CHUNK = 500  # endpoints per statement


def take(session: Session, owner: str, names: list[str], now: datetime, ttl: timedelta) -> dict[str, int]:
    """Take or renew the endpoints' leases (under row locks, skipping rows another daemon has locked:
    `SELECT ... FOR UPDATE SKIP LOCKED` on PostgreSQL): endpoint -> epoch, for those taken; one another
    daemon holds is left out. Taking one over from another daemon starts a new epoch."""
    expires = now + ttl
    table = EndpointLease.__table__
    epochs: dict[str, int] = {}
    for chunk in chunks(
        names, LEASE_CHUNK
    ):  # sorted: daemons inserting at once wait in one order, never deadlock
        rows = [{"endpoint": n, "owner": owner, "expires_at": expires, "epoch": 1} for n in chunk]
        created = session.execute(
            insert_for(session)(table).values(rows).on_conflict_do_nothing().returning(table.c.endpoint)
        ).scalars()
        epochs.update(dict.fromkeys(created, 1))
    rest = [n for n in names if n not in epochs]
    # Another daemon's tick holding a row right now is working that endpoint: skip it, never wait.
    for chunk in chunks(rest, LEASE_CHUNK):
        for lease in session.scalars(
            select(EndpointLease).where(EndpointLease.endpoint.in_(chunk)).with_for_update(skip_locked=True)
        ):
            if lease.owner != owner and lease.expires_at > now:
                continue
            if lease.owner != owner:
                lease.epoch += 1
            lease.owner, lease.expires_at = owner, expires
            epochs[lease.endpoint] = lease.epoch
    return epochs


def alive(session: Session, since: datetime) -> set[str]:
    """The daemons that have heartbeated since `since`."""
    return set(session.scalars(select(DaemonInstance.instance).where(DaemonInstance.seen_at >= since)))


def held(session: Session, endpoint: str, lock: bool) -> EndpointLease | None:
    """The endpoint's lease as stored now (locked for the transaction with `lock`)."""
    return session.get(EndpointLease, endpoint, with_for_update=lock, populate_existing=True)
