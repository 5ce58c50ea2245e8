"""Fencing: a rollout is worked only by the daemon that holds its endpoint's lease, and only under the
epoch it took it at. Each tick takes or renews the leases it needs in one transaction (`_lease_many`),
shares the unleased rollouts fairly among the daemons alive (`_share`), and every write (`_write`)
and platform change (`_act`) is checked against the lease first, so a daemon that lost its lease
(a pause, a partition) neither writes nor calls the platform for that rollout again."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from manager.db import Database
from manager.platforms.base import EndpointPlatform
from manager.registry import leases
from manager.rollout.look import Look
from manager.rollout.snapshot import Snapshot


class Fenced(Exception):
    """The endpoint's lease is no longer this daemon's under the epoch it acted under: it must neither
    write nor call the platform for that rollout (another daemon carries on)."""


MUTATIONS = frozenset(
    {
        "ensure_model",
        "ensure_endpoint_config",
        "create_endpoint",
        "update_endpoint",
        "set_weights",
        "set_capacity",
        "scale",
        "delete_config",
        "delete_endpoint",
    }
)


class FencedPlatform:
    """The platform as one tick may use it: every change is preceded by a check that the endpoint's
    lease is still this daemon's, under the epoch the tick took it at (reads pass straight through)."""

    def __init__(self, platform: EndpointPlatform, check: Callable[[], None]) -> None:
        self._platform = platform
        self._check = check

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._platform, name)
        if name in MUTATIONS:
            self._check()
        return attribute


class Fencing:
    """Mixed into the Reconciler, which provides these."""

    database: Database
    platform: EndpointPlatform
    owner: str
    lease_ttl: timedelta
    clock: Callable[[], datetime]

    def _lease_many(
        self, snaps: list[Snapshot], now: datetime
    ) -> tuple[list[Snapshot], set[str], list[tuple[Snapshot, str]]]:
        """The leases of this tick's rollouts taken or renewed in one transaction (one commit, not one
        per endpoint: a failover claims a dead daemon's thousand endpoints at once), for those whose
        lease is not this daemon's with more than half its time left. The snapshots as leased now,
        the endpoints whose lease was taken or renewed, and those another daemon took meanwhile."""
        half = self.lease_ttl.total_seconds() / 2
        due = {s.endpoint for s in snaps if not s.lease_fresh(self.owner, now, half)}
        if not due:
            return snaps, due, []
        with self.database.write() as session:
            epochs = leases.take(session, self.owner, sorted(due), now, self.lease_ttl)
        expires = now + self.lease_ttl
        kept: list[Snapshot] = []
        lost: list[tuple[Snapshot, str]] = []
        for snap in snaps:
            if snap.endpoint not in due:
                kept.append(snap)
            elif snap.endpoint in epochs:
                epoch = epochs[snap.endpoint]
                kept.append(replace(snap, lease_owner=self.owner, lease_expires=expires, lease_epoch=epoch))
            else:
                lost.append((snap, "another daemon holds the lease"))
        return kept, set(epochs), lost

    def _share(
        self, session: Session, snaps: list[Snapshot], now: datetime
    ) -> tuple[list[Snapshot], list[tuple[Snapshot, str]]]:
        """The rollouts this daemon works this tick, and the others with the reason. Its own (by the
        endpoint lease it holds); those whose lease expired with a daemon that stopped heartbeating,
        taken at once whatever their number (a failover never waits for a fair share); and, of those
        nobody holds, up to its fair share: ceil(active rollouts / daemons alive) in all, the others
        left for the daemons alive to take. A lone daemon (no heartbeats: SQLite's) takes them all."""
        alive = {self.owner}
        if snaps:
            alive.update(leases.alive(session, now - self.lease_ttl))
        mine: list[Snapshot] = []
        orphans: list[Snapshot] = []
        free: list[Snapshot] = []
        left: list[tuple[Snapshot, str]] = []
        for snap in snaps:
            expired = snap.lease_expires is None or snap.lease_expires <= now
            if snap.lease_owner == self.owner:
                mine.append(snap)
            elif snap.lease_owner is not None and not expired:
                left.append((snap, f"another daemon holds the lease ({snap.lease_owner})"))
            elif snap.lease_owner is not None and snap.lease_owner not in alive:
                orphans.append(snap)
            else:
                free.append(snap)
        room = max(0, -(-len(snaps) // len(alive)) - len(mine) - len(orphans))
        # each daemon tries a different order, so that daemons ticking at once rarely race for a row
        free.sort(
            key=lambda s: hashlib.blake2b(f"{self.owner}/{s.endpoint}".encode(), digest_size=8).digest()
        )
        left += [(snap, f"left to another daemon: {len(alive)} share the work") for snap in free[room:]]
        return mine + orphans + free[:room], left

    def _check(self, session: Session, look: Look, lock: bool) -> None:
        """Fenced unless the endpoint's lease is still this daemon's, under the tick's epoch, unexpired."""
        lease = leases.held(session, look.target.endpoint, lock)
        if lease is None or lease.owner != self.owner or (look.epoch and lease.epoch != look.epoch):
            holder = f"{lease.owner} (epoch {lease.epoch})" if lease is not None else "nobody"
            raise Fenced(
                f"the lease on {look.target.endpoint} is held by {holder}; this daemon acted under epoch"
                f" {look.epoch}: nothing written, no platform call"
            )
        if lease.expires_at <= self.clock():
            raise Fenced(f"the lease on {look.target.endpoint} expired at {lease.expires_at.isoformat()}")

    @contextmanager
    def _write(self, look: Look) -> Iterator[Session]:
        """A write transaction for the rollout of `look`, refused (Fenced) if its lease has moved on."""
        with self.database.write() as session:
            self._check(session, look, lock=True)
            yield session

    def _act(self, look: Look) -> FencedPlatform:
        """The platform, each change checked against the lease first."""

        def check() -> None:
            with self.database.read() as session:
                self._check(session, look, lock=False)

        return FencedPlatform(self.platform, check)
