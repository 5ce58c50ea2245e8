"""Rollouts in the registry: starting one, operator intents, their history events, and the typed
view every surface shows (the CLI's tables, `rollout status`, the demo)."""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from manager.errors import NotFound, UserError
from manager.history import audit
from manager.names import model_name
from manager.registry import models
from manager.registry.tables import AuditEvent, ConfigVariant, Endpoint, ModelVersion, Rollout
from manager.registry.vocabulary import ACTIVE_ROLLOUT_STATES, RolloutIntent


def serving_baseline(endpoint: Endpoint, named: str | None) -> ConfigVariant:
    """The variant serving now: the endpoint's one production variant, or the one `named` among several."""
    config = endpoint.current_config
    if config is None:
        raise UserError(
            f"endpoint {endpoint.name} has no config in the registry; create it with "
            "`variantctl endpoints create`"
        )
    production = [v for v in config.variants if not v.is_shadow]
    if len(production) == 1:
        return production[0]
    names = ", ".join(v.variant_name for v in production)
    found = next((v for v in production if v.variant_name == named), None)
    if found is None:
        raise UserError(
            f"endpoint {endpoint.name} serves {len(production)} variants ({names}); "
            "name the baseline with target.baselineVariant"
        )
    return found


def candidate_variant_name(baseline_variant: str, candidate: ModelVersion, named: str | None) -> str:
    """`named` when given and not the serving variant's name, else `<model>-v<version>`."""
    if named is not None and named != baseline_variant:
        return named
    derived = model_name(candidate.name, candidate.version)
    return derived if derived != baseline_variant else f"{derived[:57]}-next"


def resolve_candidate(
    session: Session, model: str, version: int | None, serving: ModelVersion | None = None
) -> ModelVersion:
    """`model:version`, or the newest approved version of `model` when no version is given. Given the
    version `serving` now, the newest approved never goes backwards: an older one is refused, saying
    how to go back to it on purpose."""
    if version is not None:
        return models.get(session, f"{model}:{version}")
    approved = models.list_versions(session, model, "approved")
    if serving is not None and serving.name == model and approved:
        newer = [v for v in approved if v.version > serving.version]
        if not newer:
            raise UserError(
                f"no approved version of {model} is newer than {serving.ref}, which serves now; the newest "
                f"approved is {approved[0].ref}: name it (candidate: {{model: {model}, version: "
                f"{approved[0].version}}}) to go back to it on purpose"
            )
        return newer[0]
    if not approved:
        if not models.list_versions(session, model):
            known = sorted({v.name for v in models.list_versions(session)})
            close = difflib.get_close_matches(model, known, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise NotFound(f"no model {model!r} in the registry{hint}")
        raise NotFound(f"model {model} has no approved candidate to roll out")
    return approved[0]


def without_rollout(session: Session, name: str, then: str) -> Endpoint:
    """The endpoint `name`, refused when the registry has none or a rollout owns it (`then`: what
    to do about that rollout)."""
    row = session.scalar(select(Endpoint).where(Endpoint.name == name))
    if row is None:
        raise NotFound(f"no endpoint {name!r} in the registry")
    active = active_on(session, name)
    if active is not None:
        raise UserError(f"endpoint {name} has rollout {active.id} ({active.state}); {then}")
    return row


def going_back(baseline: ModelVersion, candidate: ModelVersion) -> bool:
    """Whether `candidate` is an older version of the model `baseline` is a version of."""
    return candidate.name == baseline.name and candidate.version < baseline.version


def active_on(session: Session, endpoint: str) -> Rollout | None:
    """The rollout under way on `endpoint`, if any (at most one: a partial unique index says so)."""
    return session.scalar(
        select(Rollout)
        .join(Endpoint, Endpoint.id == Rollout.endpoint_id)
        .where(Endpoint.name == endpoint, Rollout.state.in_(ACTIVE_ROLLOUT_STATES))
    )


def active_policies(session: Session) -> list[tuple[int, str]]:
    """(id, policy text) of every rollout under way."""
    rows = session.execute(
        select(Rollout.id, Rollout.policy_yaml).where(Rollout.state.in_(ACTIVE_ROLLOUT_STATES))
    )
    return [(rollout_id, text) for rollout_id, text in rows]


def was_rolled_out(session: Session, version: ModelVersion) -> bool:
    """Whether any rollout, of any outcome, has had `version` as its candidate."""
    return (
        session.scalar(select(Rollout.id).where(Rollout.candidate_version_id == version.id).limit(1))
        is not None
    )


def never_rolled_out(session: Session, model: str) -> list[ModelVersion]:
    """The approved versions of `model`, newest first, that no rollout has had as its candidate."""
    return [v for v in models.list_versions(session, model, "approved") if not was_rolled_out(session, v)]


@dataclass(frozen=True)
class StartRequest:
    """What starting a rollout needs from its policy, as plain values."""

    endpoint: str
    baseline_variant: str | None  # None: the one variant serving now
    candidate_variant: str | None  # None: `<model>-v<version>`
    candidate_model: str
    candidate_version: int | None  # None: the newest approved version
    policy_name: str
    policy_yaml: str
    policy_hash: str


def start(session: Session, request: StartRequest, actor: str, now: datetime) -> Rollout:
    endpoint = session.scalar(select(Endpoint).where(Endpoint.name == request.endpoint))
    if endpoint is None:
        raise NotFound(
            f"no endpoint {request.endpoint!r} in the registry; create it with `variantctl endpoints create`"
        )
    active = active_on(session, endpoint.name)
    if active is not None:
        raise UserError(
            f"endpoint {endpoint.name} already has rollout {active.id} ({active.state}); "
            "abort it or wait for it to end"
        )
    serving = serving_baseline(endpoint, request.baseline_variant)
    baseline = serving.model_version
    candidate = resolve_candidate(session, request.candidate_model, request.candidate_version, baseline)
    if candidate.id == baseline.id:
        raise UserError(f"{candidate.ref} is already serving on {endpoint.name}")
    if candidate.status == "rejected":
        raise UserError(
            f"{candidate.ref} is rejected; `variantctl models approve {candidate.ref} --reason ...` "
            "to roll it out anyway"
        )
    rollout = Rollout(
        endpoint_id=endpoint.id,
        baseline_version_id=baseline.id,
        candidate_version_id=candidate.id,
        policy_yaml=request.policy_yaml,
        policy_hash=request.policy_hash,
        baseline_variant=serving.variant_name,
        candidate_variant=candidate_variant_name(serving.variant_name, candidate, request.candidate_variant),
        state="pending",
        created_at=now,
        updated_at=now,
        step_started_at=now,
        started_by=actor,
    )
    session.add(rollout)
    session.flush()
    record_event(
        session,
        rollout,
        actor,
        "rollout.start",
        f"policy {request.policy_name}",
        {
            "baseline": baseline.ref,
            "candidate": candidate.ref,
            # an older version of the serving model, named on purpose: said, never silent
            "older_than_baseline": going_back(baseline, candidate),
            "variants": {"baseline": rollout.baseline_variant, "candidate": rollout.candidate_variant},
            "policy": request.policy_name,
            "policy_hash": rollout.policy_hash,
            # Hook URLs given inline shown redacted: the history is read by more people than the daemon.
            "policy_yaml": _shown_policy(request.policy_yaml),
        },
        at=now,
    )
    return rollout


INTENTS: dict[RolloutIntent, tuple[str, ...]] = {
    "pause": ("running",),
    "resume": ("paused",),
    "abort": ("pending", "running", "paused", "promoting"),
    "promote": ("running", "paused"),
    "skip": ("running", "paused"),  # the current step ends now (Argo's one-step promote)
}


def set_intent(
    session: Session, rollout_id: int, intent: RolloutIntent, reason: str | None, actor: str
) -> Rollout:
    """Write what the operator wants; the daemon acts on it within a tick."""
    rollout = session.get(Rollout, rollout_id)
    if rollout is None:
        raise NotFound(f"no rollout {rollout_id}")
    if intent == "abort" and rollout.state == "rolling_back":
        raise UserError(f"rollout {rollout_id} is already rolling back to the baseline; nothing to abort")
    if rollout.state not in INTENTS[intent]:
        raise UserError(
            f"rollout {rollout_id} is {rollout.state}; {intent} applies to a rollout that is "
            f"{' or '.join(INTENTS[intent])}"
        )
    rollout.intent, rollout.intent_reason, rollout.intent_actor = intent, reason, actor
    rollout.retry_at = None  # an operator's word is acted on at the next tick, not after a backoff
    record_event(
        session,
        rollout,
        actor,
        f"operator.{intent}",
        reason,
        {"state": rollout.state, "step": rollout.step},
    )
    return rollout


def record_event(
    session: Session,
    rollout: Rollout,
    actor: str,
    action: str,
    reason: str | None,
    payload: Mapping[str, Any],
    at: datetime | None = None,
) -> AuditEvent:
    """One history event about `rollout`, in the caller's transaction, with the rollout as it stands
    after the event (what `endpoints show --at` and `rollout report` read)."""
    names = (rollout.endpoint.name, rollout.candidate.name)
    payload = {**payload, SNAPSHOT: snapshot(rollout)}
    return audit.append(
        session, actor, audit.Event(action, "rollout", str(rollout.id), reason, payload, *names), at=at
    )


SNAPSHOT = "rollout"


def snapshot(rollout: Rollout) -> dict[str, Any]:
    """The rollout's position and the humans behind it: the part of the row its events carry."""
    out: dict[str, Any] = {
        "state": rollout.state,
        "step": rollout.step,
        "phase": rollout.phase,
        "weight": float(rollout.weight),
        "started_by": rollout.started_by,
    }
    if rollout.intent is not None:
        out["intent"] = {
            "intent": rollout.intent,
            "actor": rollout.intent_actor,
            "reason": rollout.intent_reason,
        }
    return out


def policy_problems(session: Session, rollout_id: int) -> list[str]:
    """How the stored policy text disagrees with its hash or with its `rollout.start` event; empty
    when all three agree (an event from before the text was recorded is checked by hash only)."""
    import hashlib
    import json

    from manager.registry.tables import AuditEvent

    row = session.get(Rollout, rollout_id)
    if row is None:
        raise NotFound(f"no rollout {rollout_id}")
    problems = []
    if hashlib.sha256(row.policy_yaml.encode()).hexdigest() != row.policy_hash:
        problems.append("the stored text does not hash to the stored policy_hash")
    started = session.scalar(
        select(AuditEvent.payload).where(
            AuditEvent.subject_type == "rollout",
            AuditEvent.subject_id == str(rollout_id),
            AuditEvent.action == "rollout.start",
        )
    )
    if started is None:
        problems.append("the history has no rollout.start event for it")
        return problems
    payload = json.loads(started)
    if payload.get("policy_hash") != row.policy_hash:
        problems.append(f"the history's rollout.start says policy_hash {payload.get('policy_hash')}")
    shown = (row.policy_yaml, _shown_policy(row.policy_yaml))  # (older histories hold the whole text)
    if "policy_yaml" in payload and payload["policy_yaml"] not in shown:
        problems.append("the history's rollout.start holds a different policy text")
    return problems


def _shown_policy(text: str) -> str:
    from manager.history.redaction import redact_urls

    return redact_urls(text)


@dataclass(frozen=True)
class RolloutView:
    """A rollout as every surface shows it."""

    rollout: int
    endpoint: str
    baseline: str
    candidate: str
    state: str
    step: int
    phase: int
    weight: float
    intent: str | None
    reason: str | None
    created_at: datetime
    finished_at: datetime | None
    policy_hash: str
    policy_yaml: str
    baseline_variant: str
    candidate_variant: str
    failures: int  # consecutive ticks that could not evaluate it
    last_error: str | None
    started_by: str | None

    @classmethod
    def of(cls, row: Rollout) -> RolloutView:
        return cls(
            rollout=row.id,
            endpoint=row.endpoint.name,
            baseline=row.baseline.ref,
            candidate=row.candidate.ref,
            state=row.state,
            step=row.step,
            phase=row.phase,
            weight=FINAL_WEIGHT.get(row.state, row.weight),
            intent=row.intent,
            reason=row.reason,
            created_at=row.created_at,
            finished_at=row.finished_at,
            policy_hash=row.policy_hash,
            policy_yaml=row.policy_yaml,
            baseline_variant=row.baseline_variant,
            candidate_variant=row.candidate_variant,
            failures=row.failures,
            last_error=row.last_error,
            started_by=row.started_by,
        )

    def record(self) -> dict[str, Any]:
        """For output: every field but the policy's text (its hash names it), with its age (since it
        started) and duration (how long it ran, or has run so far), as Argo's list shows them."""
        from manager.clock import utcnow

        now = utcnow()
        out = {k: v for k, v in vars(self).items() if k != "policy_yaml"}
        out["age"] = span(now - self.created_at)
        out["duration"] = span((self.finished_at or now) - self.created_at)
        return out


def span(delta: timedelta) -> str:
    """A duration as people read it in a list: 45s, 12m03s, 3h05m, 2d04h."""
    seconds = max(0, int(delta.total_seconds()))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    if seconds < 86400:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d{seconds % 86400 // 3600:02d}h"


# The candidate's weight once a rollout has ended: it serves all traffic, or none (issue 31: a promoted
# rollout was listed at the weight of its last step, "50").
FINAL_WEIGHT = {"promoted": 100.0, "rolled_back": 0.0, "aborted": 0.0}


def view(session: Session, rollout_id: int) -> RolloutView:
    row = session.get(Rollout, rollout_id)
    if row is None:
        raise NotFound(f"no rollout {rollout_id}")
    return RolloutView.of(row)


def views(session: Session, everything: bool = False) -> list[RolloutView]:
    """Rollouts, newest first: the active ones, or all of them."""
    stmt = select(Rollout).order_by(Rollout.id.desc())
    if not everything:
        stmt = stmt.where(Rollout.state.in_(ACTIVE_ROLLOUT_STATES))
    return [RolloutView.of(r) for r in session.scalars(stmt)]


def last_finished(session: Session, endpoint: str | None = None) -> dict[str, RolloutView]:
    """Each endpoint's newest finished rollout (or `endpoint`'s alone), by endpoint name."""
    newest = select(func.max(Rollout.id)).where(Rollout.state.not_in(ACTIVE_ROLLOUT_STATES))
    if endpoint is not None:
        newest = newest.join(Endpoint, Endpoint.id == Rollout.endpoint_id).where(Endpoint.name == endpoint)
    ids = newest.group_by(Rollout.endpoint_id)
    rows = session.scalars(select(Rollout).where(Rollout.id.in_(ids)))
    return {r.endpoint.name: RolloutView.of(r) for r in rows}
