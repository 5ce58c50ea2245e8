"""The reconciler's config changes, one platform step per tick: deploying the candidate beside the
baseline, moving into and out of a shadow config, and finishing (promotion or rollback). Each writes
its intent (`rollouts.pending`, with its history event) before the call and records the endpoint's
arrival after it; the autoscaling around each change is `scaling_steps`'s."""

from __future__ import annotations

import logging
from datetime import timedelta

from sqlalchemy.orm import Session

from manager import policy as policies
from manager.clock import parse_duration
from manager.crashpoints import crash_point
from manager.db import Database
from manager.platforms import traffic
from manager.platforms.base import BlueGreen
from manager.registry.rollouts import record_event
from manager.registry.tables import Rollout
from manager.rollout import configs, gates, records
from manager.rollout.look import Look, TickResult
from manager.rollout.pending import PendingChange
from manager.rollout.steps import PlatformSteps
from manager.rollout.verdicts import Decision

log = logging.getLogger("variantctl.reconcile")


class ConfigChanges(PlatformSteps):
    """Mixed into the Reconciler, which provides these."""

    database: Database
    images: configs.Images

    def _deploy(self, look: Look) -> TickResult:
        target, state, now = look.target, look.state, look.now
        # What serves is read to build the deploy config, once; the ticks that wait for the endpoint
        # to take it (pending set) replay the recorded config and need no extra describe call.
        with self.database.read() as session:
            first = records.row(session, look.rollout_id).pending is None
        served = self._serving(look) if first else None
        with self._write(look) as session:
            rollout = records.row(session, look.rollout_id)
            pending = PendingChange.from_json(rollout.pending)
            if rollout.intent == "abort" and pending is None:
                return _aborted_undeployed(
                    session, look, rollout, rollout.intent_reason or "no reason given", self.actor
                )
            gated = False
            if pending is None:  # nothing deployed yet: `confirm-rollout` gates hold it here
                gate = gates.hold(session, rollout, look.policy, ("confirm-rollout",), self.actor, now)
                if gate.verdict == "abort":
                    return _aborted_undeployed(session, look, rollout, gate.reason, self.actor)
                if gate.verdict == "wait":
                    return look.result("wait", gate.reason)
                gated = any(w.type == "confirm-rollout" for w in look.policy.webhooks)
            # Once the deployment was asked for, the way out is back to the baseline alone (the progress
            # deadline counts from then, not from a wait at a gate).
            overdue = None if gated else _overdue(look, rollout, "the candidate was not deployed")
            stop = _abort_reason(rollout) or overdue
            if stop is not None:  # (once per rollout: the rollback config is built from what serves)
                served = served or self._serving(look)
                records.decision(session, rollout, target, stop, self.actor, now, served)
                return look.result("rollback", stop.reason)
            placements = configs.ab_placements(rollout, 0.0)
            if pending is not None:
                spec = configs.recorded(session, pending.target_config)
            else:
                served = served or self._serving(look)  # (pending was cleared since the read above)
                spec = configs.config_spec(target, placements, "ab", now, served, rollout.baseline_variant)
                rollout.pending = PendingChange("deploy", spec.name).to_json()
                rollout.step_started_at = now  # the progress deadline counts from here
                configs.record(
                    session, rollout.endpoint, spec, configs.versions_of(placements), False, self.actor, now
                )
                reason = f"deploying {rollout.candidate.ref} beside {rollout.baseline.ref} at weight 0"
                record_event(
                    session, rollout, self.actor, "rollout.deploy", reason, {"config": spec.name}, now
                )
            versions = [rollout.baseline, rollout.candidate]
        crash_point("deploy-intent")
        if state.config_name == spec.name and not state.busy:
            moved = self._rescale(look, spec, 0.0)
            return look.result("scaling", moved) if moved else self._deployed(look, spec.name)
        if state.busy:
            return look.result("wait", f"endpoint {state.status}")
        if state.failure_reason and state.pending_config is None and state.config_name != spec.name:
            # An update to the two-variant config ended on the old config: report, and retry next tick.
            log.warning("deploy of rollout %s failed: %s", look.rollout_id, state.failure_reason)
        self._ensure(look, spec, versions)
        self._unscale(look, spec)
        self._act(look).update_endpoint(target.endpoint, spec.name)
        crash_point("deploy-call")
        return look.result("deploying", spec.name)

    def _deployed(self, look: Look, config: str) -> TickResult:
        """Both variants serve `config` (recorded with the deploy intent): the first phase begins."""
        now = look.now
        with self._write(look) as session:
            rollout = records.row(session, look.rollout_id)
            configs.record_current(session, rollout.endpoint, config, self.actor, now)
            records.new_phase(session, rollout, 0.0, self.actor, now, first=True)
            rollout.state, rollout.step, rollout.step_started_at = "running", 0, now
            reason = "both variants serve; the candidate at 0%"
            record_event(session, rollout, self.actor, "rollout.deployed", reason, {"config": config}, now)
        crash_point("deployed")
        return look.result("deployed")

    def _settle_shadow(self, look: Look, pending: PendingChange) -> TickResult | None:
        """Finish moving into or out of a shadow config; None once the endpoint serves it."""
        target, state, now = look.target, look.state, look.now
        if state.busy:
            return look.result("wait", f"endpoint {state.status}")
        if state.config_name != pending.config:
            with self.database.read() as session:
                spec = configs.recorded(session, pending.target_config)
                rollout = records.row(session, look.rollout_id)
                versions = [rollout.baseline, rollout.candidate]
            self._ensure(look, spec, versions)
            self._unscale(look, spec)
            self._act(look).update_endpoint(target.endpoint, spec.name)
            crash_point(f"{pending.op}-call")
            return look.result(pending.op, spec.name)
        on = pending.op == "shadow"
        with self.database.read() as session:
            serving = configs.recorded(session, pending.target_config)
        moved = self._rescale(look, serving, look.weight)
        if moved:
            return look.result("scaling", moved)
        with self._write(look) as session:
            rollout = records.row(session, look.rollout_id)
            configs.record_current(session, rollout.endpoint, pending.target_config, self.actor, now)
            rollout.shadow_config = pending.config if on else None
            rollout.pending, rollout.step_started_at = None, now
            if not on:
                rollout.step += 1
            record_event(
                session,
                rollout,
                self.actor,
                "rollout.shadowing" if on else "rollout.shadow_ended",
                f"the candidate {'receives copies of' if on else 'no longer shadows'} the traffic",
                {"config": pending.config, "percent": pending.weight},
                now,
            )
        crash_point(f"{pending.op}-done")
        return None

    def _finish(self, look: Look) -> TickResult:
        """Promotion or rollback, one platform step per tick; recorded once the endpoint serves the
        survivor alone."""
        target, now = look.target, look.now
        with self.database.read() as session:
            rollout = records.row(session, look.rollout_id)
            pending = PendingChange.from_json(rollout.pending)
            assert pending is not None and pending.finishing
            stop = None
            if rollout.state == "promoting":
                stop = _abort_reason(rollout) or _overdue(
                    look, rollout, "the promotion did not complete", _blue_green_allowance(look.policy)
                )
            keep = configs.survivor(rollout, pending.op == "promote")
            spec = configs.recorded(session, pending.target_config)
            via = configs.recorded(session, pending.via) if pending.via else None
        if stop is not None:
            # Reverting a promotion: whatever the update did, the endpoint ends on the baseline alone.
            served = self._serving(look)
            with self._write(look) as session:
                rollout = records.row(session, look.rollout_id)
                if rollout.state == "promoting":
                    records.decision(session, rollout, target, stop, self.actor, now, served)
            crash_point("revert-intent")
            return look.result("rollback", stop.reason)
        platform = self._act(look)
        platform.ensure_model(self.images.model(keep[1]))
        if not look.state.busy and look.state.config_name != spec.name:
            self._unscale(look, spec)
        if pending.op == "promote":
            step = traffic.promote(
                platform, target.endpoint, spec, _blue_green(look.policy), via, look.variants[1]
            )
        else:
            step = traffic.rollback(platform, target.endpoint, look.variants[1], spec)
        crash_point(f"{pending.op}-{step}")
        if step != "done":
            return look.result(pending.op, step)
        moved = self._rescale(look, spec, 100.0)
        if moved:
            return look.result("scaling", moved)
        with self._write(look) as session:
            rollout = records.row(session, look.rollout_id)
            if rollout.state not in ("promoting", "rolling_back"):
                return look.result("skip", "already finished")
            configs.record(
                session, rollout.endpoint, spec, configs.versions_of([keep]), True, self.actor, now
            )
            records.conclusion(session, rollout, pending, spec.name, self.actor, now)
        crash_point(f"{pending.op}-recorded")
        return look.result("promoted" if pending.op == "promote" else "rolled_back")


def _aborted_undeployed(session: Session, look: Look, rollout: Rollout, why: str, actor: str) -> TickResult:
    """The rollout ends before anything was deployed: nothing to undo on the endpoint."""
    rollout.state, rollout.outcome, rollout.finished_at = "aborted", "aborted", look.now
    rollout.reason = f"aborted before deployment: {why}"
    record_event(session, rollout, actor, "rollout.aborted", rollout.reason, {}, look.now)
    return look.result("aborted", why)


def _abort_reason(rollout: Rollout) -> Decision | None:
    if rollout.intent != "abort":
        return None
    why = f"aborted by the operator while {rollout.state}: {rollout.intent_reason or 'no reason given'}"
    return Decision("rollback", why, {"intent": "abort", "state": rollout.state})


def _overdue(look: Look, rollout: Rollout, what: str, allowance: timedelta = timedelta(0)) -> Decision | None:
    """Past the progress deadline (plus `allowance`) since the change was asked for: roll back."""
    deadline = look.policy.decisions.progress_deadline
    since = rollout.step_started_at or rollout.created_at
    if look.now - since <= parse_duration(deadline) + allowance:
        return None
    why = f"no progress for {deadline}: {what}"
    return Decision("rollback", why, {"state": rollout.state, "since": since.isoformat()})


def _blue_green_allowance(policy: policies.RolloutPolicy) -> timedelta:
    """The time SageMaker's own blue/green schedule takes: its waits between traffic shifts."""
    bg = _blue_green(policy)
    if bg is None:
        return timedelta(0)
    shifts = {"ALL_AT_ONCE": 1, "CANARY": 2}.get(bg.routing) or -(-100 // (bg.size_percent or 100)) + 1
    return timedelta(seconds=bg.wait_seconds * shifts)


def _blue_green(policy: policies.RolloutPolicy) -> BlueGreen | None:
    promotion = policy.decisions.promotion
    bg = promotion.blue_green if promotion.mode == "blueGreen" else None
    return BlueGreen(bg.routing, bg.size_percent, bg.wait_seconds, tuple(bg.alarms)) if bg else None
