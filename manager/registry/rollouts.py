"""Rollouts in the registry: starting one, operator intents, and what the reconciler reads."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from manager import audit
from manager import policy as policies
from manager.errors import NotFound, UserError
from manager.registry import models
from manager.registry.tables import (
    ConfigVariant,
    Endpoint,
    ModelVersion,
    Observation,
    Rollout,
    RolloutPhase,
)
from manager.registry.vocabulary import ACTIVE_ROLLOUT_STATES
from manager.rollout.decide import PhaseData
from manager.stats.evalues import ErrorWindow
from manager.stats.sequences import Arm


def serving_version(session: Session, endpoint: Endpoint, variant: str) -> ModelVersion:
    config = endpoint.current_config
    if config is None:
        raise UserError(
            f"endpoint {endpoint.name} has no config in the registry; create it with "
            "`variantctl endpoints create`"
        )
    found = next((v for v in config.variants if v.variant_name == variant), None)
    if found is None:
        names = ", ".join(v.variant_name for v in config.variants)
        raise UserError(f"endpoint {endpoint.name} has no variant {variant!r} (it has {names})")
    return found.model_version


def resolve_candidate(session: Session, spec: policies.Candidate) -> ModelVersion:
    if spec.version is not None:
        return models.get(session, f"{spec.model}:{spec.version}")
    approved = models.list_versions(session, spec.model, "approved")
    if not approved:
        raise NotFound(f"model {spec.model} has no approved candidate to roll out")
    return approved[0]


def start(session: Session, policy: policies.RolloutPolicy, text: str, actor: str, now: datetime) -> Rollout:
    endpoint = session.scalar(select(Endpoint).where(Endpoint.name == policy.target.endpoint))
    if endpoint is None:
        raise NotFound(
            f"no endpoint {policy.target.endpoint!r} in the registry; create it with "
            "`variantctl endpoints create`"
        )
    active = session.scalar(
        select(Rollout).where(Rollout.endpoint_id == endpoint.id, Rollout.state.in_(ACTIVE_ROLLOUT_STATES))
    )
    if active is not None:
        raise UserError(
            f"endpoint {endpoint.name} already has rollout {active.id} ({active.state}); "
            "abort it or wait for it to end"
        )
    baseline = serving_version(session, endpoint, policy.target.baseline_variant)
    candidate = resolve_candidate(session, policy.target.candidate)
    if candidate.id == baseline.id:
        raise UserError(f"{candidate.ref} is already serving on {endpoint.name}")
    if candidate.status == "rejected":
        raise UserError(f"{candidate.ref} was rejected by its offline gate; it cannot be rolled out")
    rollout = Rollout(
        endpoint_id=endpoint.id,
        baseline_version_id=baseline.id,
        candidate_version_id=candidate.id,
        policy_yaml=text,
        policy_hash=policies.digest(text),
        state="pending",
        created_at=now,
        updated_at=now,
        step_started_at=now,
    )
    session.add(rollout)
    session.flush()
    audit.append(
        session,
        actor,
        audit.Event(
            action="rollout.start",
            subject_type="rollout",
            subject_id=str(rollout.id),
            endpoint=endpoint.name,
            model=candidate.name,
            reason=f"policy {policy.name}",
            payload={
                "baseline": baseline.ref,
                "candidate": candidate.ref,
                "policy": policy.name,
                "policy_hash": rollout.policy_hash,
            },
        ),
        at=now,
    )
    return rollout


INTENTS = {
    "pause": ("running",),
    "resume": ("paused",),
    "abort": ("pending", "running", "paused"),
    "promote": ("running", "paused"),
}


def set_intent(session: Session, rollout_id: int, intent: str, reason: str | None, actor: str) -> Rollout:
    """Write what the operator wants; the daemon acts on it within a tick."""
    rollout = session.get(Rollout, rollout_id)
    if rollout is None:
        raise NotFound(f"no rollout {rollout_id}")
    if rollout.state not in INTENTS[intent]:
        raise UserError(
            f"rollout {rollout_id} is {rollout.state}; {intent} applies to a rollout that is "
            f"{' or '.join(INTENTS[intent])}"
        )
    rollout.intent, rollout.intent_reason = intent, reason
    audit.append(
        session,
        actor,
        audit.Event(
            action=f"operator.{intent}",
            subject_type="rollout",
            subject_id=str(rollout.id),
            endpoint=rollout.endpoint.name,
            model=rollout.candidate.name,
            reason=reason,
            payload={"state": rollout.state, "step": rollout.step},
        ),
    )
    return rollout


@dataclass(frozen=True)
class Wanted:
    """Which measures a rollout's policy reads, which of them keep per-window counts, and its variants."""

    measures: tuple[str, ...]
    windowed: tuple[str, ...]
    baseline: str
    candidate: str


def phase_data_many(session: Session, wanted: dict[int, Wanted]) -> dict[int, dict[str, list[PhaseData]]]:
    """Observations for many rollouts at once: sums per measure, phase and arm (aggregated in SQL), and
    per-window counts for the measures that need them (error counts). Two queries in all."""
    if not wanted:
        return {}
    ids = list(wanted)
    sums: dict[tuple[int, str, int, str], tuple[float, float, float]] = {}
    for rid, metric, phase, variant, n, total, total_sq in session.execute(
        select(
            Observation.rollout_id,
            Observation.metric,
            Observation.phase,
            Observation.variant_name,
            func.sum(Observation.n),
            func.sum(Observation.total),
            func.sum(Observation.total_sq),
        )
        .where(Observation.rollout_id.in_(ids))
        .group_by(Observation.rollout_id, Observation.metric, Observation.phase, Observation.variant_name)
    ):
        sums[(rid, metric, phase, variant)] = (float(n or 0), float(total or 0), float(total_sq or 0))
    windowed = sorted({m for w in wanted.values() for m in w.windowed})
    windows: dict[tuple[int, str, int, datetime], dict[str, tuple[float, float]]] = defaultdict(dict)
    if windowed:
        for rid, metric, phase, variant, start, n, total in session.execute(
            select(
                Observation.rollout_id,
                Observation.metric,
                Observation.phase,
                Observation.variant_name,
                Observation.window_start,
                Observation.n,
                Observation.total,
            ).where(Observation.rollout_id.in_(ids), Observation.metric.in_(windowed))
        ):
            windows[(rid, metric, phase, start)][variant] = (n, total)
    out: dict[int, dict[str, list[PhaseData]]] = {rid: {} for rid in ids}
    by_rollout: dict[tuple[int, str, int], list[tuple[datetime, dict[str, tuple[float, float]]]]] = (
        defaultdict(list)
    )
    for (rid, metric, phase, start), arms in windows.items():
        by_rollout[(rid, metric, phase)].append((start, arms))
    for rid, metric, phase, _variant in sorted(sums):
        spec = wanted[rid]
        if metric not in spec.measures or any(p.phase == phase for p in out[rid].get(metric, [])):
            continue
        b = sums.get((rid, metric, phase, spec.baseline), (0.0, 0.0, 0.0))
        c = sums.get((rid, metric, phase, spec.candidate), (0.0, 0.0, 0.0))
        paired = tuple(
            ErrorWindow(
                arms[spec.baseline][0],
                arms[spec.baseline][1],
                arms[spec.candidate][0],
                arms[spec.candidate][1],
            )
            for _, arms in sorted(by_rollout.get((rid, metric, phase), []), key=lambda item: item[0])
            if spec.baseline in arms and spec.candidate in arms
        )
        out[rid].setdefault(metric, []).append(PhaseData(phase, Arm(*b), Arm(*c), paired))
    return out


def phase_data(
    session: Session,
    rollout_id: int,
    measures: Sequence[str],
    baseline_variant: str,
    candidate_variant: str,
    windowed: Sequence[str] = (),
) -> dict[str, list[PhaseData]]:
    wanted = Wanted(tuple(measures), tuple(windowed or measures), baseline_variant, candidate_variant)
    return phase_data_many(session, {rollout_id: wanted})[rollout_id]


def current_phases(session: Session, rollout_id: int) -> list[RolloutPhase]:
    return list(
        session.scalars(
            select(RolloutPhase).where(RolloutPhase.rollout_id == rollout_id).order_by(RolloutPhase.phase)
        )
    )


def config_variant_models(session: Session, config_id: int) -> dict[str, ModelVersion]:
    rows = session.scalars(select(ConfigVariant).where(ConfigVariant.config_id == config_id))
    return {r.variant_name: r.model_version for r in rows}
