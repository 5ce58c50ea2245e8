"""What the reconciler writes to the registry, apart from the platform calls: a decision's effect on
the rollout row, a new traffic phase, and the conclusion of a promotion or rollback. Each runs in
the caller's write transaction and appends the events that say what happened."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from manager import policy as policies
from manager.platforms.base import ConfigSpec
from manager.registry import models
from manager.registry.rollouts import record_event
from manager.registry.tables import ModelVersion, Rollout, RolloutPhase
from manager.registry.vocabulary import ModelStatus
from manager.rollout import configs, packages
from manager.rollout.pending import Op, PendingChange
from manager.rollout.verdicts import Decision

# The decision that carries out each operator intent.
INTENT_EFFECT = {"abort": "rollback", "promote": "promote", "pause": "pause", "resume": "resume"}
# The decisions that move the endpoint to a new config (built from what it serves now).
CONFIG_ACTIONS = frozenset({"shadow", "unshadow", "promote", "rollback"})
MAX_FAILURES = 8  # consecutive failed ticks before a pending or running rollout is paused
BACKOFF_CAP = timedelta(minutes=10)


def failed(
    session: Session, rollout: Rollout, error: str, actor: str, now: datetime, base: timedelta
) -> None:
    """One more tick that could not evaluate `rollout`: wait longer before the next (`base`, twice that,
    ... up to 10 min). At MAX_FAILURES in a row a pending or running rollout is paused, never promoted
    or rolled back, with the error in its status and the history (a pending one whose stored policy no
    longer parses would otherwise wait for ever); one finishing a promotion or rollback keeps retrying."""
    rollout.failures += 1
    rollout.last_error = error[:2000]
    rollout.retry_at = now + min(base * 2 ** (rollout.failures - 1), BACKOFF_CAP)
    if rollout.failures < MAX_FAILURES:
        return
    payload = {"failures": rollout.failures, "error": rollout.last_error, "state": rollout.state}
    reason = f"{rollout.failures} ticks in a row failed: {rollout.last_error}"
    if rollout.state in ("pending", "running"):  # again after a resume, if it still fails
        rollout.state, rollout.intent, rollout.reason = "paused", None, reason
        record_event(session, rollout, actor, "rollout.paused_on_errors", reason, payload, now)
    elif rollout.failures == MAX_FAILURES:
        record_event(session, rollout, actor, "rollout.failing", reason, payload, now)


def recovered(rollout: Rollout) -> None:
    """A tick went through again: the error count starts over."""
    rollout.failures, rollout.last_error, rollout.retry_at = 0, None, None


def decision(
    session: Session,
    rollout: Rollout,
    target: policies.Target,
    decided: Decision,
    actor: str,
    now: datetime,
    served: ConfigSpec | None = None,
    blue_green: bool = False,
) -> PendingChange | None:
    """The decision's effect on the row and its event; the platform change it intends, if any. A
    decision that carries out an operator's intent names the operator, with their reason. `served`:
    what the endpoint serves now, for a decision in CONFIG_ACTIONS (its new config keeps that hosting)."""
    if decided.action in CONFIG_ACTIONS and served is None:
        raise ValueError(f"a {decided.action} decision needs what the endpoint serves now")
    asked = None
    if rollout.intent is not None and INTENT_EFFECT.get(rollout.intent) == decided.action:
        asked = {"intent": rollout.intent, "actor": rollout.intent_actor, "reason": rollout.intent_reason}
    if rollout.intent == "skip":  # a one-step promote is spent by the decision it causes, whichever
        asked = {"intent": "skip", "actor": rollout.intent_actor, "reason": rollout.intent_reason}
        rollout.intent = None
    pending: PendingChange | None = None
    if decided.action == "set_weight":
        assert decided.weight is not None
        pending = PendingChange("set_weight", weight=decided.weight)
    elif decided.action in ("shadow", "unshadow"):
        op: Op = "shadow" if decided.action == "shadow" else "unshadow"
        assert served is not None
        spec, versions = configs.shadow_spec(target, rollout, op, decided.weight, now, served)
        configs.record(session, rollout.endpoint, spec, versions, False, actor, now)
        pending = PendingChange(op, spec.name, decided.weight)
    elif decided.action == "advance":
        rollout.step = decided.next_step if decided.next_step is not None else rollout.step + 1
        rollout.step_started_at = now
    elif decided.action == "pause":
        rollout.state, rollout.intent, rollout.reason = "paused", None, decided.reason
    elif decided.action == "resume":
        # A rollout paused before its deployment goes back to deploying, never straight to running.
        deployed = session.get(RolloutPhase, (rollout.id, 0)) is not None
        rollout.state, rollout.intent, rollout.reason = ("running" if deployed else "pending"), None, None
        rollout.step = decided.next_step if decided.next_step is not None else rollout.step
        rollout.step_started_at = now
        if decided.restart_phase:
            new_phase(session, rollout, rollout.weight, actor, now)
    else:
        promoting = decided.action == "promote"
        keep = configs.survivor(rollout, promoting)
        assert served is not None
        label = "promoted" if promoting else "rolledback"
        spec = configs.config_spec(target, [keep], label, now, served, rollout.baseline_variant)
        configs.record(session, rollout.endpoint, spec, configs.versions_of([keep]), False, actor, now)
        via = None
        if promoting and blue_green:
            back = configs.survivor(rollout, False)
            staged = configs.config_spec(target, [back], "blue", now, served, rollout.baseline_variant)
            configs.record(session, rollout.endpoint, staged, configs.versions_of([back]), False, actor, now)
            via = staged.name
        rollout.state, rollout.reason = ("promoting" if promoting else "rolling_back"), decided.reason
        rollout.step_started_at = now  # the progress deadline of the promotion counts from here
        aborted = not promoting and rollout.intent == "abort"
        pending = PendingChange("promote" if promoting else "rollback", spec.name, aborted=aborted, via=via)
    if pending is not None:
        rollout.pending = pending.to_json()
    payload = {"decision": decided.action, **decided.evidence}
    # The flags are recorded as the history always had them, beside the evidence.
    payload.update({flag: True for flag in ("forced", "restart_phase") if getattr(decided, flag)})
    if asked is not None:
        payload["requested_by"] = asked
    record_event(session, rollout, actor, f"rollout.{decided.action}", decided.reason, payload, now)
    return pending


def new_phase(
    session: Session,
    rollout: Rollout,
    weight: float,
    actor: str,
    now: datetime,
    first: bool = False,
) -> None:
    """The candidate at `weight` percent from now: the previous phase ends and the next begins
    (statistics are kept per phase, because weights are fixed within one). The first phase begins
    when both variants serve, and its event is the deployment's."""
    previous = session.get(RolloutPhase, (rollout.id, rollout.phase))
    if previous is not None and previous.ended_at is None:
        previous.ended_at = now
    rollout.phase = 0 if first else rollout.phase + 1
    rollout.weight, rollout.pending, rollout.phase_started_at = weight, None, now
    session.add(
        RolloutPhase(
            rollout_id=rollout.id,
            phase=rollout.phase,
            started_at=now,
            weights={rollout.baseline_variant: 100.0 - weight, rollout.candidate_variant: weight},
        )
    )
    if not first:
        reason = f"phase {rollout.phase}: candidate at {weight:g}%"
        payload = {"phase": rollout.phase, "weight": weight}
        record_event(session, rollout, actor, "rollout.phase", reason, payload, now)


def conclusion(
    session: Session, rollout: Rollout, pending: PendingChange, config: str, actor: str, now: datetime
) -> None:
    """The final state, the versions' new statuses and the events that say so."""
    phase = session.get(RolloutPhase, (rollout.id, rollout.phase))
    if phase is not None and phase.ended_at is None:
        phase.ended_at = now
    rollout.pending, rollout.finished_at = None, now
    endpoint = rollout.endpoint.name
    why = f"rollout {rollout.id} on {endpoint}"
    moves: list[tuple[ModelVersion, ModelStatus, str]]
    if pending.op == "promote":
        rollout.state = rollout.outcome = "promoted"
        served = rollout.candidate
        moves = [(rollout.candidate, "serving", f"promoted by {why}")]
        if rollout.baseline.status == "serving":
            moves.append((rollout.baseline, "retired", f"replaced by {why}"))
    else:
        rollout.state = rollout.outcome = "aborted" if pending.aborted else "rolled_back"
        served = rollout.baseline
        # A candidate that serves on another endpoint keeps serving there. An operator's abort says
        # nothing about the model: it stays as it is (`rollout abort --reject-candidate` rejects it).
        moves = (
            []
            if rollout.candidate.status in ("serving", "rejected") or pending.aborted
            else [(rollout.candidate, "rejected", f"{rollout.state} by {why}")]
        )
    for version, status, reason in moves:
        models.transition(session, version, status, actor, reason=reason, endpoint=endpoint, at=now)
    reason = f"{served.ref} serves all traffic"
    event = record_event(session, rollout, actor, f"rollout.{rollout.state}", reason, {"config": config}, now)
    packages.queue_writeback(session, rollout, event, now)


def row(session: Session, rollout_id: int) -> Rollout:
    """The rollout's row, which a tick knows exists (rollouts are never deleted while active)."""
    rollout = session.get(Rollout, rollout_id)
    assert rollout is not None, f"rollout {rollout_id} vanished"
    return rollout
