"""observe -> decide -> apply -> record, level-triggered and idempotent.

Each tick, for each active rollout whose endpoint lease this reconciler holds (or takes: several
daemons share the rollouts of one registry, `Reconciler._share`):
1. observe: the endpoint as the platform reports it (its status is written back to the registry),
   and new metric windows;
2. finish what a previous tick (or a crashed process) started: the change it meant to make is
   written in `rollouts.pending` before the platform call, so after a crash it is looked for on the
   endpoint and made again if it never happened (every platform operation is safe to repeat);
3. decide, purely, from the registry's observations;
4. apply: write the intent and its audit event in one transaction, then call the platform.
A crash between any two statements leaves either the old state (the next tick decides again) or the
intent (the next tick finishes it): never a double promotion, a lost rollout or a broken history.

What the loop reads is `snapshot`, what it builds is `configs`, what it intends is `pending`; this
module holds the loop and the steps that call the platform.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from manager import policy as policies
from manager import telemetry
from manager.clock import utcnow
from manager.crashpoints import crash_point
from manager.db import Database, insert_for
from manager.errors import UserError
from manager.metrics.base import MetricSource, MetricsUnavailable
from manager.metrics.samples import Paired, PhaseData
from manager.platforms.base import (
    ConfigSpec,
    EndpointPlatform,
    EndpointState,
    NotNow,
    PlatformError,
)
from manager.registry import endpoints, observations, pairs
from manager.registry.tables import DaemonInstance, EndpointLease, ModelVersion
from manager.rollout import configs, gates, records, snapshot
from manager.rollout.changes import ConfigChanges, _blue_green, _row
from manager.rollout.decide import decide
from manager.rollout.look import Fenced, FencedPlatform, Look, TickResult
from manager.rollout.pending import PendingChange
from manager.rollout.snapshot import Snapshot
from manager.rollout.verdicts import Decision

log = logging.getLogger("variantctl.reconcile")
Data = dict[str, list[PhaseData]]


def _chunks(items: list[str], size: int = 500) -> Iterator[list[str]]:
    """Slices small enough for one statement's parameters (SQLite allows 32,766)."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


@dataclass
class Reconciler(ConfigChanges):
    database: Database
    platform: EndpointPlatform
    metrics: MetricSource | None = None
    owner: str = field(default_factory=lambda: f"{os.uname().nodename}:{os.getpid()}")
    clock: Callable[[], datetime] = utcnow
    lease_ttl: timedelta = timedelta(seconds=60)
    images: configs.Images = field(default_factory=configs.Images)
    actor: str = "daemon"
    retry_base: timedelta = timedelta(seconds=2)  # the first backoff after an error; it doubles each time
    _policies: dict[str, policies.RolloutPolicy] = field(default_factory=dict, repr=False)
    # the endpoint statuses a tick saw, written together at its end (one commit, not one per endpoint)
    _statuses: list[tuple[EndpointState, datetime]] | None = field(default=None, repr=False)

    def tick(self) -> list[TickResult]:
        """Every active rollout this daemon works (`_share`), from one snapshot of the registry (a few
        queries, not a few per rollout); the others are another daemon's, and left without a write."""
        now = self.clock()
        with self.database.read() as session:
            snaps, left = self._share(session, snapshot.read(session), now)
        snaps, renewed, lost = self._lease_many(snaps, now)
        left += lost
        with self.database.read() as session:
            wanted = {s.id: self._wanted(s) for s in snaps if s.state in ("running", "paused")}
            data = observations.phase_data_many(session, {k: v for k, v in wanted.items() if v is not None})
            paired = pairs.read_many(session, wanted)
        results = [TickResult(s.id, s.endpoint, "skip", why) for s, why in left]
        self._statuses = []
        try:
            for snap in snaps:
                if snap.retry_at is not None and snap.retry_at > now:
                    results.append(TickResult(snap.id, snap.endpoint, "wait", "backing off after an error"))
                    continue
                leased = snap.endpoint in renewed
                results.append(self._isolated(snap, data.get(snap.id), paired.get(snap.id), leased))
        finally:
            self._write_statuses()
        return results

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
            epochs = self._lease(session, sorted(due), now)
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
            alive.update(
                session.scalars(
                    select(DaemonInstance.instance).where(DaemonInstance.seen_at >= now - self.lease_ttl)
                )
            )
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

    def _isolated(
        self, snap: Snapshot, data: Data | None, paired: Paired | None = None, leased: bool = False
    ) -> TickResult:
        """One rollout's tick, whatever it raises: an error here never stops another rollout. It is
        retried with backoff; after `records.MAX_FAILURES` in a row a running rollout is paused."""
        try:
            result = self._reconcile(snap, data, paired, leased)
        except NotNow as exc:
            return TickResult(snap.id, snap.endpoint, "wait", str(exc))
        except Fenced as exc:
            log.warning(
                "rollout %s: %s", snap.id, exc, extra={"fields": {"rollout": snap.id, "fenced": True}}
            )
            return TickResult(snap.id, snap.endpoint, "skip", str(exc))
        except Exception as exc:
            expected = isinstance(exc, PlatformError | MetricsUnavailable | UserError)
            log.warning(
                "rollout %s: %s", snap.id, exc, exc_info=not expected, extra={"fields": {"rollout": snap.id}}
            )
            error = str(exc) if expected else f"{type(exc).__name__}: {exc}"
            with self.database.write() as session:
                records.failed(
                    session, _row(session, snap.id), error, self.actor, self.clock(), self.retry_base
                )
            return TickResult(snap.id, snap.endpoint, "error", error)
        if snap.failures:
            with self.database.write() as session:
                records.recovered(_row(session, snap.id))
        return result

    def reconcile(self, rollout_id: int) -> TickResult:
        with self.database.read() as session:
            snaps = snapshot.read(session, rollout_id)
        if not snaps:
            return TickResult(rollout_id, "", "skip", "not active")
        return self._reconcile(snaps[0], None)

    def _policy(self, snap: Snapshot) -> policies.RolloutPolicy:
        policy = self._policies.get(snap.policy_hash)
        if policy is None:
            policy = self._policies[snap.policy_hash] = policies.parse(
                snap.policy_yaml, f"rollout {snap.id} policy"
            )
        return policy

    def _wanted(self, snap: Snapshot) -> observations.Wanted | None:
        try:
            policy = self._policy(snap)
        except UserError:
            return None
        ratio = () if policy.decisions.on_sample_ratio_mismatch == "ignore" else ("invocations",)
        return observations.Wanted(
            tuple(m.measure for m in policy.metrics) + ratio,
            tuple(m.measure for m in policy.metrics if m.kind == "errors"),
            *snap.variants,
        )

    def _reconcile(
        self, snap: Snapshot, data: Data | None, paired: Paired | None = None, leased: bool = False
    ) -> TickResult:
        """`leased`: the tick took or renewed the lease just now (`_lease_many`)."""
        now = self.clock()
        # Renew the lease only when half of it is gone: most ticks then write nothing to keep it.
        renewed = leased or not snap.lease_fresh(self.owner, now, self.lease_ttl.total_seconds() / 2)
        epoch = snap.lease_epoch or 0
        if renewed and not leased:
            with self.database.write() as session:
                taken = self._lease(session, [snap.endpoint], now).get(snap.endpoint)
            if taken is None:
                return TickResult(snap.id, snap.endpoint, "skip", "another daemon holds the lease")
            epoch = taken
        policy = self._policy(snap)
        state = self.platform.describe(snap.endpoint)
        if state is None:
            raise PlatformError(f"endpoint {snap.endpoint} does not exist on the platform")
        if renewed or state.status != snap.endpoint_status:
            self._observed(state, now)
        look = Look(snap.id, policy, state, now, snap.variants, epoch, snap.weight)
        if snap.state == "pending":
            return self._deploy(look)
        if snap.pending is not None and snap.pending.finishing:
            return self._finish(look)
        settle = self._settlers().get(snap.pending.op) if snap.pending is not None else None
        if settle is not None and snap.pending is not None:
            unsettled = settle(look, snap.pending)
            if unsettled is not None:
                return unsettled
            snap, data, paired = self._refresh(snap.id)
        if self._read_metrics(snap, policy, now) or data is None:
            snap, data, paired = self._refresh(snap.id)
        observed = {m.name: data.get(m.measure, []) for m in policy.metrics}
        decision = decide(
            snap.decision_state(state.busy),
            policy,
            observed,
            now,
            paired=paired,
            requests=data.get("invocations", []),
        )
        return self._apply(look, decision)

    def _settlers(self) -> dict[str, Callable[[Look, PendingChange], TickResult | None]]:
        """What finishes each change a rollout can have under way while it runs."""
        return {
            "shadow": self._settle_shadow,
            "unshadow": self._settle_shadow,
            "set_weight": self._settle_weight,
        }

    def _refresh(self, rollout_id: int) -> tuple[Snapshot, Data, Paired | None]:
        with self.database.read() as session:
            [snap] = snapshot.read(session, rollout_id)
            wanted = self._wanted(snap)
            data = observations.phase_data_many(session, {rollout_id: wanted})[rollout_id] if wanted else {}
            paired = pairs.read_many(session, [rollout_id]).get(rollout_id)
        return snap, data, paired

    def _lease(self, session: Session, names: list[str], now: datetime) -> dict[str, int]:
        """Take or renew the endpoints' leases (under row locks, skipping rows another daemon has
        locked: `SELECT ... FOR UPDATE SKIP LOCKED` on PostgreSQL): endpoint -> epoch, for those taken;
        one another daemon holds is left out. Taking one over from another daemon starts a new epoch."""
        expires = now + self.lease_ttl
        table = EndpointLease.__table__
        epochs: dict[str, int] = {}
        for chunk in _chunks(names):  # sorted: daemons inserting at once wait in one order, never deadlock
            rows = [{"endpoint": n, "owner": self.owner, "expires_at": expires, "epoch": 1} for n in chunk]
            created = session.execute(
                insert_for(session)(table).values(rows).on_conflict_do_nothing().returning(table.c.endpoint)
            ).scalars()
            epochs.update(dict.fromkeys(created, 1))
        rest = [n for n in names if n not in epochs]
        # Another daemon's tick holding a row right now is working that endpoint: skip it, never wait.
        for chunk in _chunks(rest):
            for lease in session.scalars(
                select(EndpointLease)
                .where(EndpointLease.endpoint.in_(chunk))
                .with_for_update(skip_locked=True)
            ):
                if lease.owner != self.owner and lease.expires_at > now:
                    continue
                if lease.owner != self.owner:
                    lease.epoch += 1
                lease.owner, lease.expires_at = self.owner, expires
                epochs[lease.endpoint] = lease.epoch
        return epochs

    def _check(self, session: Session, look: Look, lock: bool) -> None:
        """Fenced unless the endpoint's lease is still this daemon's, under the tick's epoch, unexpired."""
        lease = session.get(EndpointLease, look.target.endpoint, with_for_update=lock, populate_existing=True)
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

    def _observed(self, state: EndpointState, now: datetime) -> None:
        """The endpoint's status as the platform last reported it, for `endpoints list` and `show`
        (kept for the end of the tick, when a tick is under way)."""
        if self._statuses is not None:
            self._statuses.append((state, now))
            return
        with self.database.write() as session:
            endpoints.observe(session, state.name, state.status, state.region, now)

    def _write_statuses(self) -> None:
        statuses, self._statuses = self._statuses, None
        if not statuses:
            return
        try:
            with self.database.write() as session:
                endpoints.observe_many(session, [(s.name, s.status, s.region, at) for s, at in statuses])
        except Exception as exc:  # a status is informational: the next renewal writes it again
            log.warning("could not record %d endpoint statuses: %s", len(statuses), exc)

    def _ensure(self, look: Look, spec: ConfigSpec, versions: list[ModelVersion]) -> None:
        platform = self._act(look)
        for version in versions:
            platform.ensure_model(self.images.model(version))
        platform.ensure_endpoint_config(spec)

    # The steps below each end in one platform call, or in recording that the endpoint got there.

    def _serving(self, look: Look) -> ConfigSpec:
        """What the endpoint serves now, each variant on its live hosting: the baseline keeps it."""
        return self.platform.hosting(look.state)

    def _settle_weight(self, look: Look, pending: PendingChange) -> TickResult | None:
        """Finish a weight change: once the endpoint reports it, a new phase begins."""
        state = look.state
        assert pending.weight is not None
        wanted = pending.weight
        arrived = abs(state.shares().get(look.variants[1], 0.0) * 100 - wanted) < 1e-6
        if state.busy:
            return look.result("wait", "weights are changing")
        if not arrived:
            self._set_weight(look, wanted)
            return look.result("set_weight", f"{wanted:g}% (again)")
        moved = self._rescale(look, None, wanted) or self._capacity(look, wanted, rising=False)
        if moved:
            return look.result("scaling", moved)
        with self._write(look) as session:
            records.new_phase(session, _row(session, look.rollout_id), wanted, self.actor, look.now)
        crash_point("phase")
        return None

    def _set_weight(self, look: Look, weight: float) -> None:
        """The candidate's capacity first (another tick sets the weight once it is there)."""
        if self._capacity(look, weight, rising=True):
            return
        baseline, candidate = look.variants
        self._act(look).set_weights(look.target.endpoint, {baseline: 100.0 - weight, candidate: weight})
        crash_point("weight-call")

    def _read_metrics(self, snap: Snapshot, policy: policies.RolloutPolicy, now: datetime) -> bool:
        """New CloudWatch windows into `observations`; True when any were stored."""
        ratio = policy.decisions.on_sample_ratio_mismatch != "ignore" and any(
            s.set_weight for s in policy.plan
        )
        if self.metrics is None or not (ratio or any(m.source == "cloudwatch" for m in policy.metrics)):
            return False
        since = snap.metrics_cursor or (snap.phases[0][1] if snap.phases else now)
        target = policy.target
        windows = self.metrics.windows(target.endpoint, list(snap.variants), since, now)
        if not windows:
            return False
        rows = [
            observations.ObservedWindow(
                snap.id, phase, w.variant, w.metric, w.start, w.end, int(w.n), w.total, w.total_sq
            )
            for w in windows
            if (phase := snap.phase_of(w.start, w.end)) is not None
        ]
        with self.database.write() as session:
            observations.record(session, rows, merge="keep")
            _row(session, snap.id).metrics_cursor = max(w.end for w in windows)
        return bool(rows)

    def _apply(self, look: Look, decision: Decision) -> TickResult:
        if decision.action == "wait":
            return look.result("wait", decision.reason)
        kinds = gates.kinds_for(decision, look.weight)
        if any(w.type in kinds for w in look.policy.webhooks):
            with self._write(look) as session:
                gate = gates.hold(
                    session, _row(session, look.rollout_id), look.policy, kinds, self.actor, look.now
                )
            if gate.verdict == "wait":
                return look.result("wait", gate.reason)
            if gate.verdict == "abort":
                decision = Decision("rollback", gate.reason, {"gate": list(kinds), "held": decision.action})
        served = self._serving(look) if decision.action in records.CONFIG_ACTIONS else None
        with self._write(look) as session:
            rollout = _row(session, look.rollout_id)
            pending = records.decision(
                session,
                rollout,
                look.target,
                decision,
                self.actor,
                look.now,
                served,
                blue_green=_blue_green(look.policy) is not None,
            )
        telemetry.DECISIONS.labels(decision.action).inc()
        crash_point(f"{decision.action}-intent")
        if pending is not None and pending.op == "set_weight":
            assert pending.weight is not None
            self._set_weight(look, pending.weight)
        elif pending is not None:
            state = self.platform.describe(look.target.endpoint)
            assert state is not None
            now_seen = replace(look, state=state)
            if pending.finishing:
                return self._finish(now_seen)
            moved = self._settle_shadow(now_seen, pending)
            if moved is not None:
                return moved
        return look.result(decision.action, decision.reason)
