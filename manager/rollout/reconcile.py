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

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from manager import policy as policies
from manager import telemetry
from manager.clock import utcnow
from manager.crashpoints import crash_point
from manager.db import Database
from manager.errors import UserError
from manager.metrics.base import MetricSource, MetricsUnavailable
from manager.metrics.samples import Paired, PhaseData
from manager.platforms.base import (
    EndpointPlatform,
    EndpointState,
    NotNow,
    PlatformError,
)
from manager.registry import endpoints, leases, observations, pairs
from manager.rollout import configs, gates, records, snapshot, thresholds
from manager.rollout.changes import ConfigChanges, _blue_green
from manager.rollout.decide import decide
from manager.rollout.fencing import Fenced
from manager.rollout.look import Look, TickResult
from manager.rollout.pending import PendingChange
from manager.rollout.snapshot import Snapshot
from manager.rollout.verdicts import Decision

log = logging.getLogger("variantctl.reconcile")
Data = dict[str, list[PhaseData]]


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
                    session, records.row(session, snap.id), error, self.actor, self.clock(), self.retry_base
                )
            return TickResult(snap.id, snap.endpoint, "error", error)
        if snap.failures:
            with self.database.write() as session:
                records.recovered(records.row(session, snap.id))
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
            tuple(m.measure for m in policy.metrics if m.counted),
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
                taken = leases.take(session, self.owner, [snap.endpoint], now, self.lease_ttl)
            if snap.endpoint not in taken:
                return TickResult(snap.id, snap.endpoint, "skip", "another daemon holds the lease")
            epoch = taken[snap.endpoint]
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
        new_windows = self._read_metrics(snap, policy, now)
        if data is None:
            snap, data, paired = self._refresh(snap.id)
        elif new_windows:
            with self.database.read() as session:  # the rollout and its pairs are as read: only these changed
                data = self._data(session, snap)
        observed = {m.name: data.get(m.measure, []) for m in policy.metrics}
        decision = decide(
            snap.decision_state(state.busy),
            policy,
            observed,
            now,
            paired=paired,
            requests=data.get("invocations", []),
        )
        if not decision.final and any(w.type == "rollback" for w in policy.webhooks):
            with self._write(look) as session:  # Flagger's rollback hooks: a 2xx rolls it back now
                asked = gates.rollback_asked(
                    session, records.row(session, look.rollout_id), policy, self.actor, now
                )
            decision = asked or decision
        return self._apply(look, decision)

    def _settlers(self) -> dict[str, Callable[[Look, PendingChange], TickResult | None]]:
        """What finishes each change a rollout can have under way while it runs."""
        return {
            "shadow": self._settle_shadow,
            "unshadow": self._settle_shadow,
            "set_weight": self._settle_weight,
        }

    def _data(self, session: Session, snap: Snapshot) -> Data:
        """The observations of the phases `snap`'s policy judges."""
        wanted = self._wanted(snap)
        return observations.phase_data_many(session, {snap.id: wanted})[snap.id] if wanted else {}

    def _refresh(self, rollout_id: int) -> tuple[Snapshot, Data, Paired | None]:
        with self.database.read() as session:
            [snap] = snapshot.read(session, rollout_id)
            data = self._data(session, snap)
            paired = pairs.read_many(session, [rollout_id]).get(rollout_id)
        return snap, data, paired

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
        custom = [m for m in policy.metrics if m.query is not None]
        if custom:  # the policy's own CloudWatch metrics, read in the same window
            windows += self.metrics.custom_windows(target.endpoint, list(snap.variants), custom, since, now)
        quantiles = thresholds.fixed(self.database, self.metrics, snap, policy)
        if quantiles:  # requests over each quantile guardrail's threshold
            windows += self.metrics.quantile_windows(
                target.endpoint, list(snap.variants), quantiles, since, now
            )
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
            records.row(session, snap.id).metrics_cursor = max(w.end for w in windows)
        return bool(rows)

    def _apply(self, look: Look, decision: Decision) -> TickResult:
        if decision.action == "wait":
            return look.result("wait", decision.reason)
        kinds = gates.kinds_for(decision, look.weight)
        if any(w.type in kinds for w in look.policy.webhooks):
            with self._write(look) as session:
                gate = gates.hold(
                    session, records.row(session, look.rollout_id), look.policy, kinds, self.actor, look.now
                )
            if gate.verdict == "wait":
                return look.result("wait", gate.reason)
            if gate.verdict == "abort":
                decision = Decision("rollback", gate.reason, {"gate": list(kinds), "held": decision.action})
        served = self._serving(look) if decision.action in records.CONFIG_ACTIONS else None
        with self._write(look) as session:
            rollout = records.row(session, look.rollout_id)
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
            # The endpoint as described at the tick's start: nothing has changed it since (the decision
            # only wrote its intent), so it is not described again.
            if pending.finishing:
                return self._finish(look)
            moved = self._settle_shadow(look, pending)
            if moved is not None:
                return moved
        return look.result(decision.action, decision.reason)
