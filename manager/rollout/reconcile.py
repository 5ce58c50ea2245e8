"""observe -> decide -> apply -> record, level-triggered and idempotent.

Each tick, for each active rollout whose endpoint lease this reconciler holds:
1. observe: the endpoint as the platform reports it, and new metric windows;
2. finish what a previous tick (or a crashed process) started: the change it meant to make is
   written in `rollouts.pending` before the platform call, so after a crash it is looked for on the
   endpoint and made again if it never happened (every platform operation is safe to repeat);
3. decide, purely, from the registry's observations;
4. apply: write the intent and its audit event in one transaction, then call the platform.
A crash between any two statements leaves either the old state (the next tick decides again) or the
intent (the next tick finishes it): never a double promotion, a lost rollout or a broken history.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from manager import audit
from manager import policy as policies
from manager.clock import utcnow
from manager.db import Database, insert_for
from manager.errors import UserError
from manager.metrics.base import MetricSource, MetricsUnavailable
from manager.platforms import traffic
from manager.platforms.base import (
    BlueGreen,
    CaptureSpec,
    ConfigSpec,
    EndpointPlatform,
    EndpointState,
    ModelSpec,
    NotNow,
    PlatformError,
    VariantSpec,
)
from manager.platforms.sagemaker import readable_name
from manager.registry import rollouts as registry
from manager.registry.tables import (
    ConfigVariant,
    Endpoint,
    EndpointConfig,
    EndpointLease,
    ModelVersion,
    Observation,
    Rollout,
    RolloutPhase,
)
from manager.registry.vocabulary import ACTIVE_ROLLOUT_STATES
from manager.rollout.decide import Decision, RolloutState, decide

log = logging.getLogger("variantctl.reconcile")
CRASH_ENV = "VARIANTCTL_CRASH_AT"
DEFAULT_IMAGE = "local/sklearn:1.9"


def crash_point(name: str) -> None:
    """For crash tests: die here, as `kill -9` would, when VARIANTCTL_CRASH_AT names this point."""
    if os.environ.get(CRASH_ENV) == name:
        os._exit(137)


def sagemaker_model_name(version: ModelVersion) -> str:
    return f"{version.name[:55].rstrip('-')}-v{version.version}"


@dataclass(frozen=True)
class Snapshot:
    """A rollout as the registry had it when the tick began."""

    id: int
    endpoint: str
    state: str
    step: int
    phase: int
    weight: float
    created_at: datetime
    step_started_at: datetime
    phase_started_at: datetime
    pending: dict[str, Any] | None
    intent: str | None
    intent_reason: str | None
    policy_yaml: str
    policy_hash: str
    metrics_cursor: datetime | None
    lease_owner: str | None
    lease_expires: datetime | None
    phases: tuple[tuple[int, datetime, datetime | None], ...]
    shadow_config: str | None = None


@dataclass
class Outcome:
    rollout_id: int
    endpoint: str
    did: str
    detail: str = ""


@dataclass
class Reconciler:
    database: Database
    platform: EndpointPlatform
    metrics: MetricSource | None = None
    owner: str = field(default_factory=lambda: f"{os.uname().nodename}:{os.getpid()}")
    clock: Callable[[], datetime] = utcnow
    lease_ttl: timedelta = timedelta(seconds=60)
    image_uri: str = DEFAULT_IMAGE
    role_arn: str | None = None
    actor: str = "daemon"
    _policies: dict[str, policies.RolloutPolicy] = field(default_factory=dict, repr=False)

    # ---- the loop ---------------------------------------------------------------------------

    def tick(self) -> list[Outcome]:
        """Every active rollout, from one snapshot of the registry (a few queries, not a few per rollout)."""
        with self.database.read() as session:
            snapshots = self._snapshots(session, None)
            wanted = {
                snap.id: self._wanted(snap) for snap in snapshots if snap.state in ("running", "paused")
            }
            data = registry.phase_data_many(session, {k: v for k, v in wanted.items() if v is not None})
        outcomes = []
        for snap in snapshots:
            try:
                outcomes.append(self._reconcile(snap, data.get(snap.id)))
            except NotNow as exc:
                outcomes.append(Outcome(snap.id, snap.endpoint, "wait", str(exc)))
            except (PlatformError, MetricsUnavailable) as exc:
                log.warning("rollout %s: %s", snap.id, exc)
                outcomes.append(Outcome(snap.id, snap.endpoint, "error", str(exc)))
        return outcomes

    def reconcile(self, rollout_id: int) -> Outcome:
        with self.database.read() as session:
            snapshots = self._snapshots(session, rollout_id)
        if not snapshots:
            return Outcome(rollout_id, "", "skip", "not active")
        return self._reconcile(snapshots[0], None)

    def _policy(self, snap: Snapshot) -> policies.RolloutPolicy:
        policy = self._policies.get(snap.policy_hash)
        if policy is None:
            policy = self._policies[snap.policy_hash] = policies.parse(
                snap.policy_yaml, f"rollout {snap.id} policy"
            )
        return policy

    def _wanted(self, snap: Snapshot) -> registry.Wanted | None:
        try:
            policy = self._policy(snap)
        except UserError:
            return None
        return registry.Wanted(
            tuple(m.measure for m in policy.metrics),
            tuple(m.measure for m in policy.metrics if m.kind == "errors"),
            policy.target.baseline_variant,
            policy.target.candidate_variant,
        )

    def _snapshots(self, session: Session, rollout_id: int | None) -> list[Snapshot]:
        stmt = (
            select(Rollout, Endpoint.name, EndpointLease.owner, EndpointLease.expires_at)
            .join(Endpoint, Endpoint.id == Rollout.endpoint_id)
            .outerjoin(EndpointLease, EndpointLease.endpoint == Endpoint.name)
            .where(Rollout.state.in_(ACTIVE_ROLLOUT_STATES))
            .order_by(Rollout.id)
        )
        if rollout_id is not None:
            stmt = stmt.where(Rollout.id == rollout_id)
        rows = session.execute(stmt).all()
        phases: dict[int, list[tuple[int, datetime, datetime | None]]] = {}
        ids = [r[0].id for r in rows]
        if ids:
            for p in session.scalars(
                select(RolloutPhase).where(RolloutPhase.rollout_id.in_(ids)).order_by(RolloutPhase.phase)
            ):
                phases.setdefault(p.rollout_id, []).append((p.phase, p.started_at, p.ended_at))
        return [
            Snapshot(
                r.id,
                name,
                r.state,
                r.step,
                r.phase,
                r.weight,
                r.created_at,
                r.step_started_at or r.created_at,
                r.phase_started_at or r.created_at,
                dict(r.pending) if r.pending else None,
                r.intent,
                r.intent_reason,
                r.policy_yaml,
                r.policy_hash,
                r.metrics_cursor,
                owner,
                expires,
                tuple(phases.get(r.id, [])),
                r.shadow_config,
            )
            for r, name, owner, expires in rows
        ]

    def _reconcile(self, snap: Snapshot, data: dict[str, list[Any]] | None) -> Outcome:
        now = self.clock()
        # Renew the lease only when half of it is gone: most ticks then write nothing to keep it.
        fresh = (
            snap.lease_owner == self.owner
            and snap.lease_expires is not None
            and snap.lease_expires - now > self.lease_ttl / 2
        )
        if not fresh:
            with self.database.write() as session:
                if not self._lease(session, snap.endpoint, now):
                    return Outcome(snap.id, snap.endpoint, "skip", "another daemon holds the lease")
        policy = self._policy(snap)
        state = self.platform.describe(snap.endpoint)
        if state is None:
            raise PlatformError(f"endpoint {snap.endpoint} does not exist on the platform")
        if snap.state == "pending":
            return self._deploy(snap.id, policy, state, now)
        if snap.state in ("promoting", "rolling_back"):
            return self._finish(snap.id, policy, state, now)
        if snap.pending and snap.pending.get("op") in ("shadow", "unshadow"):
            moved = self._settle_shadow(snap, policy, state, snap.pending, now)
            if moved is not None:
                return moved
            snap, data = self._refresh(snap.id)
        if snap.pending and snap.pending.get("op") == "set_weight":
            settled = self._settle_weight(snap.id, policy, state, snap.pending, now)
            if settled is not None:
                return settled
            snap, data = self._refresh(snap.id)
        if self._read_metrics(snap, policy, now):
            snap, data = self._refresh(snap.id)
        if data is None:
            snap, data = self._refresh(snap.id)
        return self._decide_and_apply(snap, policy, state, now, data)

    def _refresh(self, rollout_id: int) -> tuple[Snapshot, dict[str, list[Any]]]:
        with self.database.read() as session:
            [snap] = self._snapshots(session, rollout_id)
            wanted = self._wanted(snap)
            data = registry.phase_data_many(session, {rollout_id: wanted})[rollout_id] if wanted else {}
        return snap, data

    def _lease(self, session: Session, endpoint: str, now: datetime) -> bool:
        lease = session.get(EndpointLease, endpoint)
        if lease is None:
            session.add(EndpointLease(endpoint=endpoint, owner=self.owner, expires_at=now + self.lease_ttl))
            return True
        if lease.owner != self.owner and lease.expires_at > now:
            return False
        lease.owner, lease.expires_at = self.owner, now + self.lease_ttl
        return True

    # ---- records ----------------------------------------------------------------------------

    def _event(
        self,
        session: Session,
        rollout: Rollout,
        action: str,
        reason: str,
        payload: dict[str, Any],
        now: datetime,
    ) -> None:
        audit.append(
            session,
            self.actor,
            audit.Event(
                action=action,
                subject_type="rollout",
                subject_id=str(rollout.id),
                endpoint=rollout.endpoint.name,
                model=rollout.candidate.name,
                reason=reason,
                payload=payload,
            ),
            at=now,
        )

    # ---- configs ----------------------------------------------------------------------------

    def _model(self, version: ModelVersion) -> ModelSpec:
        return ModelSpec(
            sagemaker_model_name(version),
            version.image_uri or self.image_uri,
            version.artifact_uri,
            self.role_arn,
        )

    def _config(
        self,
        policy: policies.RolloutPolicy,
        variants: list[tuple[str, ModelVersion, float]],
        label: str,
        now: datetime,
        shadows: list[tuple[str, ModelVersion, float]] | None = None,
        name: str | None = None,
    ) -> ConfigSpec:
        """The config for these variants, named `name` (as an intent recorded it) or freshly."""
        target = policy.target
        capture = CaptureSpec(target.capture_destination) if target.capture_destination else None
        specs = tuple(
            VariantSpec(name, sagemaker_model_name(v), target.instance_type, target.instance_count, w)
            for name, v, w in variants
        ) + tuple(
            VariantSpec(
                name, sagemaker_model_name(v), target.instance_type, target.instance_count, w, shadow=True
            )
            for name, v, w in shadows or []
        )
        if name is None:
            name = readable_name(f"{target.endpoint}-{label}", ConfigSpec("draft", specs, capture), now)
        return ConfigSpec(name, specs, capture)

    def _record_config(
        self,
        session: Session,
        rollout: Rollout,
        spec: ConfigSpec,
        versions: dict[str, ModelVersion],
        make_current: bool,
    ) -> None:
        row = session.scalar(select(EndpointConfig).where(EndpointConfig.name == spec.name))
        if row is None:
            row = EndpointConfig(
                name=spec.name,
                endpoint_name=rollout.endpoint.name,
                data_capture={"destination": spec.capture.destination} if spec.capture else None,
            )
            for v in spec.variants:
                row.variants.append(
                    ConfigVariant(
                        variant_name=v.name,
                        model_version_id=versions[v.name].id,
                        instance_type=v.instance_type,
                        instance_count=v.instance_count,
                        initial_weight=v.weight,
                        is_shadow=v.shadow,
                    )
                )
            session.add(row)
            session.flush()
        if make_current:
            rollout.endpoint.current_config_id = row.id

    def _ensure(self, spec: ConfigSpec, versions: list[ModelVersion]) -> None:
        for version in versions:
            self.platform.ensure_model(self._model(version))
        self.platform.ensure_endpoint_config(spec)

    # ---- deploying the candidate beside the baseline -------------------------------------------

    def _deploy(
        self, rollout_id: int, policy: policies.RolloutPolicy, state: EndpointState, now: datetime
    ) -> Outcome:
        target = policy.target
        with self.database.write() as session:
            rollout = session.get(Rollout, rollout_id)
            assert rollout is not None
            if rollout.intent == "abort":
                rollout.state, rollout.outcome, rollout.finished_at = "aborted", "aborted", now
                rollout.reason = f"aborted before deployment: {rollout.intent_reason or 'no reason given'}"
                self._event(session, rollout, "rollout.aborted", rollout.reason, {}, now)
                return Outcome(rollout_id, target.endpoint, "aborted")
            pending = rollout.pending
            if pending is None:
                spec = self._config(
                    policy,
                    [
                        (target.baseline_variant, rollout.baseline, 100.0),
                        (target.candidate_variant, rollout.candidate, 0.0),
                    ],
                    "ab",
                    now,
                )
                rollout.pending = {"op": "deploy", "config": spec.name}
                self._record_config(
                    session,
                    rollout,
                    spec,
                    {target.baseline_variant: rollout.baseline, target.candidate_variant: rollout.candidate},
                    False,
                )
                self._event(
                    session,
                    rollout,
                    "rollout.deploy",
                    f"deploying {rollout.candidate.ref} beside {rollout.baseline.ref} at weight 0",
                    {"config": spec.name},
                    now,
                )
                pending = rollout.pending
            baseline, candidate = rollout.baseline, rollout.candidate
        crash_point("deploy-intent")
        spec = self._config(
            policy,
            [(target.baseline_variant, baseline, 100.0), (target.candidate_variant, candidate, 0.0)],
            "ab",
            now,
            name=pending["config"],
        )
        if state.config_name == spec.name and not state.busy:
            with self.database.write() as session:
                rollout = session.get(Rollout, rollout_id)
                assert rollout is not None
                self._record_config(
                    session,
                    rollout,
                    spec,
                    {target.baseline_variant: baseline, target.candidate_variant: candidate},
                    True,
                )
                rollout.state, rollout.pending, rollout.step, rollout.phase, rollout.weight = (
                    "running",
                    None,
                    0,
                    0,
                    0.0,
                )
                rollout.step_started_at = rollout.phase_started_at = now
                session.add(
                    RolloutPhase(
                        rollout_id=rollout.id,
                        phase=0,
                        started_at=now,
                        weights={target.baseline_variant: 100.0, target.candidate_variant: 0.0},
                    )
                )
                self._event(
                    session,
                    rollout,
                    "rollout.deployed",
                    "both variants serve; the candidate at 0%",
                    {"config": spec.name},
                    now,
                )
            crash_point("deployed")
            return Outcome(rollout_id, target.endpoint, "deployed")
        if state.busy:
            return Outcome(rollout_id, target.endpoint, "wait", f"endpoint {state.status}")
        if state.failure_reason and state.pending_config is None and state.config_name != spec.name:
            # An update to the two-variant config ended on the old config: report, and retry next tick.
            log.warning("deploy of rollout %s failed: %s", rollout_id, state.failure_reason)
        self._ensure(spec, [baseline, candidate])
        self.platform.update_endpoint(target.endpoint, spec.name)
        crash_point("deploy-call")
        return Outcome(rollout_id, target.endpoint, "deploying", spec.name)

    # ---- weights ----------------------------------------------------------------------------

    def _settle_weight(
        self,
        rollout_id: int,
        policy: policies.RolloutPolicy,
        state: EndpointState,
        pending: dict[str, Any],
        now: datetime,
    ) -> Outcome | None:
        """Finish a weight change: once the endpoint reports it, a new phase begins."""
        target = policy.target
        wanted = float(pending["weight"])
        shares = state.shares()
        arrived = abs(shares.get(target.candidate_variant, 0.0) * 100 - wanted) < 1e-6
        if state.busy:
            return Outcome(rollout_id, target.endpoint, "wait", "weights are changing")
        if not arrived:
            self.platform.set_weights(
                target.endpoint, {target.baseline_variant: 100.0 - wanted, target.candidate_variant: wanted}
            )
            crash_point("weight-call")
            return Outcome(rollout_id, target.endpoint, "set_weight", f"{wanted:g}% (again)")
        with self.database.write() as session:
            rollout = session.get(Rollout, rollout_id)
            assert rollout is not None
            previous = session.get(RolloutPhase, (rollout.id, rollout.phase))
            if previous is not None and previous.ended_at is None:
                previous.ended_at = now
            rollout.phase += 1
            rollout.weight, rollout.pending, rollout.phase_started_at = wanted, None, now
            session.add(
                RolloutPhase(
                    rollout_id=rollout.id,
                    phase=rollout.phase,
                    started_at=now,
                    weights={target.baseline_variant: 100.0 - wanted, target.candidate_variant: wanted},
                )
            )
            self._event(
                session,
                rollout,
                "rollout.phase",
                f"phase {rollout.phase}: candidate at {wanted:g}%",
                {"phase": rollout.phase, "weight": wanted},
                now,
            )
        crash_point("phase")
        return None

    # ---- metrics ----------------------------------------------------------------------------

    def _read_metrics(self, snap: Snapshot, policy: policies.RolloutPolicy, now: datetime) -> bool:
        """New CloudWatch windows into `observations`; True when any were stored."""
        if self.metrics is None or not any(m.source == "cloudwatch" for m in policy.metrics):
            return False
        since = snap.metrics_cursor or (snap.phases[0][1] if snap.phases else now)
        target = policy.target
        windows = self.metrics.windows(
            target.endpoint, [target.baseline_variant, target.candidate_variant], since, now
        )
        if not windows:
            return False
        rows = []
        for w in windows:
            # A window counts for a phase only if it lies wholly inside it: weights were fixed throughout.
            phase = next(
                (p for p, start, end in snap.phases if w.start >= start and (end is None or w.end <= end)),
                None,
            )
            if phase is None:
                continue
            rows.append(
                {
                    "rollout_id": snap.id,
                    "phase": phase,
                    "variant_name": w.variant,
                    "metric": w.metric,
                    "window_start": w.start,
                    "window_end": w.end,
                    "n": int(w.n),
                    "total": w.total,
                    "total_sq": w.total_sq,
                }
            )
        with self.database.write() as session:
            if rows:
                statement = insert_for(session)(Observation.__table__).on_conflict_do_nothing()
                session.connection().execute(statement, rows)
            rollout = session.get(Rollout, snap.id)
            assert rollout is not None
            rollout.metrics_cursor = max(w.end for w in windows)
        return bool(rows)

    # ---- deciding ---------------------------------------------------------------------------

    def _decide_and_apply(
        self,
        snap: Snapshot,
        policy: policies.RolloutPolicy,
        state: EndpointState,
        now: datetime,
        data: dict[str, list[Any]],
    ) -> Outcome:
        current = RolloutState(
            state=snap.state,
            step=snap.step,
            phase=snap.phase,
            weight=snap.weight,
            started_at=snap.created_at,
            step_started_at=snap.step_started_at,
            phase_started_at=snap.phase_started_at,
            endpoint_ready=not state.busy and snap.pending is None,
            intent=snap.intent,
            intent_reason=snap.intent_reason,
            shadowing=snap.shadow_config is not None,
        )
        by_name = {m.name: data.get(m.measure, []) for m in policy.metrics}
        return self._apply(snap.id, policy, decide(current, policy, by_name, now), now)

    def _apply(
        self, rollout_id: int, policy: policies.RolloutPolicy, decision: Decision, now: datetime
    ) -> Outcome:
        target = policy.target
        if decision.action == "wait":
            return Outcome(rollout_id, target.endpoint, "wait", decision.reason)
        with self.database.write() as session:
            rollout = session.get(Rollout, rollout_id)
            assert rollout is not None
            payload = {"decision": decision.action, **decision.evidence}
            if decision.action == "set_weight":
                assert decision.weight is not None
                rollout.pending = {"op": "set_weight", "weight": decision.weight}
                self._event(session, rollout, "rollout.set_weight", decision.reason, payload, now)
            elif decision.action in ("shadow", "unshadow"):
                spec, versions = self._shadow_spec(policy, rollout, decision, now)
                self._record_config(session, rollout, spec, versions, False)
                rollout.pending = {"op": decision.action, "config": spec.name, "weight": decision.weight}
                self._event(session, rollout, f"rollout.{decision.action}", decision.reason, payload, now)
            elif decision.action == "advance":
                rollout.step = decision.next_step if decision.next_step is not None else rollout.step + 1
                rollout.step_started_at = now
                self._event(session, rollout, "rollout.advance", decision.reason, payload, now)
            elif decision.action == "pause":
                rollout.state, rollout.intent = "paused", None
                self._event(session, rollout, "rollout.pause", decision.reason, payload, now)
            elif decision.action == "resume":
                rollout.state, rollout.intent = "running", None
                rollout.step = decision.next_step if decision.next_step is not None else rollout.step
                rollout.step_started_at = now
                self._event(session, rollout, "rollout.resume", decision.reason, payload, now)
            elif decision.action == "promote":
                spec = self._config(
                    policy, [(target.candidate_variant, rollout.candidate, 1.0)], "promoted", now
                )
                self._record_config(
                    session, rollout, spec, {target.candidate_variant: rollout.candidate}, False
                )
                rollout.state, rollout.reason = "promoting", decision.reason
                rollout.pending = {"op": "promote", "config": spec.name}
                self._event(session, rollout, "rollout.promote", decision.reason, payload, now)
            else:
                spec = self._config(
                    policy, [(target.baseline_variant, rollout.baseline, 1.0)], "rolledback", now
                )
                self._record_config(
                    session, rollout, spec, {target.baseline_variant: rollout.baseline}, False
                )
                aborted = rollout.intent == "abort"
                rollout.state, rollout.reason = "rolling_back", decision.reason
                rollout.pending = {"op": "rollback", "config": spec.name, "aborted": aborted}
                self._event(session, rollout, "rollout.rollback", decision.reason, payload, now)
        crash_point(f"{decision.action}-intent")
        if decision.action in ("shadow", "unshadow"):
            state = self.platform.describe(target.endpoint)
            assert state is not None
            with self.database.read() as session:
                [snap] = self._snapshots(session, rollout_id)
            assert snap.pending is not None
            return self._settle_shadow(snap, policy, state, snap.pending, now) or Outcome(
                rollout_id, target.endpoint, decision.action, decision.reason
            )
        if decision.action == "set_weight":
            assert decision.weight is not None
            self.platform.set_weights(
                target.endpoint,
                {target.baseline_variant: 100.0 - decision.weight, target.candidate_variant: decision.weight},
            )
            crash_point("weight-call")
        elif decision.action in ("promote", "rollback"):
            state = self.platform.describe(target.endpoint)
            assert state is not None
            return self._finish(rollout_id, policy, state, now)
        return Outcome(rollout_id, target.endpoint, decision.action, decision.reason)

    # ---- shadow steps ------------------------------------------------------------------------

    def _shadow_spec(
        self,
        policy: policies.RolloutPolicy,
        rollout: Rollout,
        decision: Decision,
        now: datetime,
        name: str | None = None,
    ) -> tuple[ConfigSpec, dict[str, ModelVersion]]:
        """The config for a shadow step (the candidate also as a shadow variant), or back without it."""
        target = policy.target
        production = [
            (target.baseline_variant, rollout.baseline, 100.0 - rollout.weight),
            (target.candidate_variant, rollout.candidate, rollout.weight),
        ]
        versions = {target.baseline_variant: rollout.baseline, target.candidate_variant: rollout.candidate}
        if decision.action == "unshadow":
            return self._config(policy, production, "ab", now, name=name), versions
        shadow = f"{target.candidate_variant}-shadow"[:63]
        versions[shadow] = rollout.candidate
        # SageMaker copies (shadow weight / production weight) of the requests to a shadow variant.
        shadows = [(shadow, rollout.candidate, float(decision.weight or 0))]
        return self._config(policy, production, "shadow", now, shadows, name=name), versions

    def _settle_shadow(
        self,
        snap: Snapshot,
        policy: policies.RolloutPolicy,
        state: EndpointState,
        pending: dict[str, Any],
        now: datetime,
    ) -> Outcome | None:
        """Finish moving into or out of a shadow config; None once the endpoint serves it."""
        target = policy.target
        if state.busy:
            return Outcome(snap.id, target.endpoint, "wait", f"endpoint {state.status}")
        if state.config_name != pending["config"]:
            with self.database.read() as session:
                rollout = session.get(Rollout, snap.id)
                assert rollout is not None
                decision = Decision(pending["op"], "", weight=pending.get("weight"))
                spec, versions = self._shadow_spec(policy, rollout, decision, now, name=pending["config"])
            self._ensure(spec, list({v.id: v for v in versions.values()}.values()))
            self.platform.update_endpoint(target.endpoint, spec.name)
            crash_point(f"{pending['op']}-call")
            return Outcome(snap.id, target.endpoint, pending["op"], spec.name)
        with self.database.write() as session:
            rollout = session.get(Rollout, snap.id)
            assert rollout is not None
            on = pending["op"] == "shadow"
            config = session.scalar(select(EndpointConfig).where(EndpointConfig.name == pending["config"]))
            if config is not None:
                rollout.endpoint.current_config_id = config.id
            rollout.shadow_config = pending["config"] if on else None
            rollout.pending, rollout.step_started_at = None, now
            if not on:
                rollout.step += 1
            self._event(
                session,
                rollout,
                "rollout.shadowing" if on else "rollout.shadow_ended",
                f"the candidate {'receives copies of' if on else 'no longer shadows'} the traffic",
                {"config": pending["config"], "percent": pending.get("weight")},
                now,
            )
        crash_point(f"{pending['op']}-done")
        return None

    # ---- promotion and rollback ----------------------------------------------------------------

    def _finish(
        self, rollout_id: int, policy: policies.RolloutPolicy, state: EndpointState, now: datetime
    ) -> Outcome:
        target = policy.target
        with self.database.read() as session:
            rollout = session.get(Rollout, rollout_id)
            assert rollout is not None and rollout.pending is not None
            pending = dict(rollout.pending)
            baseline, candidate = rollout.baseline, rollout.candidate
        promoting = pending["op"] == "promote"
        keep = (target.candidate_variant, candidate) if promoting else (target.baseline_variant, baseline)
        spec = self._config(policy, [(keep[0], keep[1], 1.0)], pending["op"], now, name=pending["config"])
        self.platform.ensure_model(self._model(keep[1]))
        if promoting:
            bg = (
                policy.decisions.promotion.blue_green
                if policy.decisions.promotion.mode == "blueGreen"
                else None
            )
            blue_green = (
                BlueGreen(bg.routing, bg.size_percent, bg.wait_seconds, tuple(bg.alarms)) if bg else None
            )
            step = traffic.promote(self.platform, target.endpoint, spec, blue_green)
        else:
            step = traffic.rollback(self.platform, target.endpoint, target.candidate_variant, spec)
        crash_point(f"{pending['op']}-{step}")
        if step != "done":
            return Outcome(rollout_id, target.endpoint, pending["op"], step)
        with self.database.write() as session:
            rollout = session.get(Rollout, rollout_id)
            assert rollout is not None
            if rollout.state not in ("promoting", "rolling_back"):
                return Outcome(rollout_id, target.endpoint, "skip", "already finished")
            self._record_config(session, rollout, spec, {keep[0]: keep[1]}, True)
            phase = session.get(RolloutPhase, (rollout.id, rollout.phase))
            if phase is not None and phase.ended_at is None:
                phase.ended_at = now
            rollout.pending, rollout.finished_at = None, now
            if promoting:
                rollout.state = rollout.outcome = "promoted"
                rollout.candidate.status, rollout.baseline.status = "serving", "retired"
                self._event(
                    session,
                    rollout,
                    "rollout.promoted",
                    f"{candidate.ref} serves all traffic",
                    {"config": spec.name},
                    now,
                )
            else:
                rollout.state = rollout.outcome = "aborted" if pending.get("aborted") else "rolled_back"
                rollout.candidate.status = "rejected"
                self._event(
                    session,
                    rollout,
                    f"rollout.{rollout.state}",
                    f"{baseline.ref} serves all traffic",
                    {"config": spec.name},
                    now,
                )
        crash_point(f"{pending['op']}-recorded")
        return Outcome(rollout_id, target.endpoint, "promoted" if promoting else "rolled_back")
