"""What an endpoint served at any instant, read from the history alone.

One reducer (`Replay`) folds events, oldest first, into each endpoint's state: the config it served,
each variant's model version with its lineage and weight, the rollout under way with its state and
step, and for each of these the event that put it in place. Two ways feed it:

- `replay_all` reads the whole history (what the property test and the benchmark's baseline use);
- `state_at` reads only the events that can matter for one endpoint at one instant (its latest
  `endpoint.serves`, that config's `endpoint.config`, its latest rollout's events, its models'
  lineage), through indexes, so it answers in milliseconds on a registry of millions of events.

Both give the same answer, and at the history's head they give the registry's own rows
(`registry_state`); the tests hold all three to that.

Since migration 0010 each rollout event carries the rollout after it (`payload["rollout"]`). A
registry upgraded from before has one `history.timeline` event: for instants before it, a rollout's
step is derived from the decisions (`advance` moves one step on), and the answer says so.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from manager.history.timeline_records import EndpointAt, RolloutAt, Source, VariantAt
from manager.registry.tables import AuditEvent, Endpoint, RolloutPhase
from manager.registry.vocabulary import is_final

MARKER_EVENT = "history.timeline"
LIFECYCLE = ("endpoint.create", "endpoint.adopt", "endpoint.failed", "endpoint.forget")
SERVES = "endpoint.serves"
CONFIG = "endpoint.config"
WEIGHTS = "endpoint.weights"  # an operator's weights, until the next `endpoint.serves`
# Before 0009 a config change was recorded only on these events (their payload's "config").
LEGACY_SERVES = (
    "endpoint.create",
    "rollout.deployed",
    "rollout.promoted",
    "rollout.rolled_back",
    "rollout.aborted",
)
LEGACY_STATE = {
    "rollout.deploy": "pending",
    "rollout.deployed": "running",
    "rollout.pause": "paused",
    "rollout.paused_on_errors": "paused",
    "rollout.resume": "running",
    "rollout.promote": "promoting",
    "rollout.rollback": "rolling_back",
    "rollout.promoted": "promoted",
    "rollout.rolled_back": "rolled_back",
    "rollout.aborted": "aborted",
    "rollout.failed": "failed",
}


@dataclass
class _Endpoint:
    name: str
    status: str = "creating"
    status_by: Source | None = None
    config: str | None = None
    config_by: Source | None = None
    rollout: RolloutAt | None = None
    legacy: bool = False
    weights: dict[str, float] | None = None  # an operator's (`endpoints set-weights`)
    weights_by: Source | None = None


# The events that say where a model version came from: registered, trained, registered as a package.
LINEAGE_ACTIONS = ("model.register", "model.train", "model.package")


class Replay:
    """Folds events oldest first; `state(name, at)` is each endpoint as of the last event fed.
    Events before `exact_from` (a registry's history from before migration 0010) use the older
    events' meaning."""

    def __init__(self, exact_from: int = 1) -> None:
        self.exact_from = exact_from
        self.configs: dict[str, dict[str, Any]] = {}
        self.lineage: dict[str, dict[str, Any]] = {}
        self.endpoints: dict[str, _Endpoint] = {}
        self.rollouts: dict[int, RolloutAt] = {}

    def feed_all(self, rows: Iterable[Any]) -> None:
        for row in rows:
            self.feed(row)

    def feed(self, row: Any) -> None:
        action = row.action
        source = Source(row.seq, row.at, row.actor, action, row.reason)
        legacy = row.seq < self.exact_from
        if action == CONFIG:
            self.configs[row.subject_id] = json.loads(row.payload)
        elif row.subject_type == "model_version":
            self._model(row, action, source)
        elif row.subject_type == "rollout":
            self._rollout(row, action, source, legacy)
        elif row.subject_type == "endpoint":
            self._endpoint(row, action, source, legacy)

    def _model(self, row: Any, action: str, source: Source) -> None:
        if action not in LINEAGE_ACTIONS:
            return
        payload = json.loads(row.payload)
        lineage = self.lineage.setdefault(row.subject_id, {})
        if action == "model.register":
            lineage.update(
                {
                    "artifact_uri": payload.get("artifact_uri"),
                    "dataset_fingerprint": payload.get("dataset_fingerprint"),
                    "registered": source.record(),
                }
            )
            if payload.get("training_run") is not None:
                lineage["training_run"] = payload["training_run"]
            if payload.get("model_package_arn"):
                lineage["model_package"] = payload["model_package_arn"]
        elif action == "model.package":
            lineage["model_package"] = payload.get("package")
        else:
            lineage["training_run"] = payload.get("training_run")
            lineage.setdefault("dataset_fingerprint", payload.get("fingerprint"))
            lineage["trained"] = source.record()

    def _endpoint(self, row: Any, action: str, source: Source, legacy: bool) -> None:
        endpoint = self.endpoints.setdefault(row.subject_id, _Endpoint(row.subject_id))
        if action == WEIGHTS:
            endpoint.weights, endpoint.weights_by = json.loads(row.payload)["weights"], source
            return
        if action == SERVES:
            endpoint.config = json.loads(row.payload).get("config")
            endpoint.config_by, endpoint.weights, endpoint.weights_by = source, None, None
            if endpoint.config is not None:
                endpoint.status, endpoint.status_by = "serving", source
            return
        if action not in LIFECYCLE:
            return
        if action == "endpoint.create":
            endpoint.status, endpoint.status_by = "creating", source
            if legacy:  # before settle existed, a created endpoint was recorded as serving
                endpoint.config, endpoint.config_by = json.loads(row.payload).get("config"), source
                endpoint.status, endpoint.legacy = "serving", True
        elif action == "endpoint.failed":
            endpoint.status, endpoint.status_by = "failed", source
        elif action == "endpoint.forget":
            endpoint.status, endpoint.status_by = "forgotten", source
            endpoint.config, endpoint.rollout = None, None
        elif action == "endpoint.adopt":
            endpoint.status_by = source

    def _rollout(self, row: Any, action: str, source: Source, legacy: bool) -> None:
        payload = json.loads(row.payload)
        rollout_id = int(row.subject_id)
        if action == "rollout.start":
            variants = payload.get("variants") or {}
            rollout = RolloutAt(
                rollout=rollout_id,
                baseline=payload.get("baseline", ""),
                candidate=payload.get("candidate", ""),
                baseline_variant=variants.get("baseline", "baseline"),
                candidate_variant=variants.get("candidate", "candidate"),
                policy=payload.get("policy"),
                policy_hash=payload.get("policy_hash"),
                started_by=row.actor,
                started=source,
            )
            self.rollouts[rollout_id] = rollout
            if row.endpoint is not None:
                self.endpoints.setdefault(row.endpoint, _Endpoint(row.endpoint)).rollout = rollout
        found = self.rollouts.get(rollout_id)
        if found is None:
            return
        rollout = found
        rollout.last = source
        snap = payload.get("rollout")
        before = (rollout.phase, rollout.weight)
        if snap is not None:
            rollout.state, rollout.step = snap["state"], snap["step"]
            rollout.weight = float(snap["weight"])
            rollout.started_by = snap.get("started_by") or rollout.started_by
            rollout.phase = snap["phase"] if rollout.state != "pending" else None
        else:
            self._derive(rollout, action, payload)
            rollout.derived = rollout.derived or legacy
        if (rollout.phase, rollout.weight) != before:
            rollout.weight_by = source
        if legacy and action in LEGACY_SERVES and payload.get("config") and row.endpoint is not None:
            endpoint = self.endpoints.setdefault(row.endpoint, _Endpoint(row.endpoint))
            endpoint.config, endpoint.config_by, endpoint.status, endpoint.legacy = (
                payload["config"],
                source,
                "serving",
                True,
            )

    @staticmethod
    def _derive(rollout: RolloutAt, action: str, payload: dict[str, Any]) -> None:
        """A rollout event from before 0010: its effect from its name."""
        if action in LEGACY_STATE:
            rollout.state = LEGACY_STATE[action]
        if action == "rollout.deployed":
            rollout.step, rollout.phase, rollout.weight = 0, 0, 0.0
        elif action == "rollout.phase":
            rollout.phase, rollout.weight = payload.get("phase", (rollout.phase or 0) + 1), payload["weight"]
        elif action in ("rollout.advance", "rollout.shadow_ended"):
            rollout.step += 1

    def names(self) -> list[str]:
        return sorted(self.endpoints)

    def state(self, name: str, at: datetime | None = None) -> EndpointAt | None:
        endpoint = self.endpoints.get(name)
        if endpoint is None:
            return None
        out = EndpointAt(name, at, endpoint.status, status_by=endpoint.status_by)
        out.config, out.config_by = endpoint.config, endpoint.config_by
        rollout = endpoint.rollout
        if rollout is not None and not is_final(rollout.state):
            out.rollout = replace(rollout)
        config = self.configs.get(endpoint.config) if endpoint.config else None
        if config is not None:
            out.capture = config.get("capture")
            out.variants = self._variants(config, out.rollout, endpoint.config_by, endpoint)
        elif endpoint.config is not None:
            out.exact, out.note = False, f"the history does not describe config {endpoint.config}"
        if endpoint.legacy or (out.rollout is not None and out.rollout.derived):
            out.exact = False
            out.note = (
                "derived from events recorded before this registry's history held every rollout's "
                f"state (seq {self.exact_from}): the config from the rollout's events, the step from "
                "its decisions"
            )
        return out

    def _variants(
        self, config: dict[str, Any], rollout: RolloutAt | None, config_by: Source | None, endpoint: _Endpoint
    ) -> list[VariantAt]:
        weights = {v["variant"]: float(v["weight"]) for v in config["variants"]}
        sources: dict[str, Source | None] = dict.fromkeys(weights, config_by)
        production = {v["variant"] for v in config["variants"] if not v["shadow"]}
        for name, weight in (endpoint.weights or {}).items():
            if name in production:
                weights[name], sources[name] = float(weight), endpoint.weights_by
        if (
            rollout is not None
            and rollout.phase is not None
            and {rollout.baseline_variant, rollout.candidate_variant} <= production
        ):
            weights[rollout.baseline_variant] = 100.0 - rollout.weight
            weights[rollout.candidate_variant] = rollout.weight
            sources[rollout.baseline_variant] = sources[rollout.candidate_variant] = rollout.weight_by
        total = sum(w for name, w in weights.items() if name in production) or 1.0
        out = []
        for v in config["variants"]:
            name = v["variant"]
            share = 0.0 if v["shadow"] else 100.0 * weights[name] / total
            out.append(
                VariantAt(
                    name,
                    v["model"],
                    weights[name],
                    share,
                    bool(v["shadow"]),
                    v.get("instance_type"),
                    v.get("instance_count"),
                    dict(self.lineage.get(v["model"], {})),
                    sources[name],
                )
            )
        return out


def exact_from(session: Session) -> int:
    """The first seq from which every rollout event records the rollout (1 unless upgraded)."""
    payload = session.scalar(
        select(AuditEvent.payload).where(AuditEvent.action == MARKER_EVENT).order_by(AuditEvent.seq).limit(1)
    )
    return int(json.loads(payload)["exact_from"]) if payload else 1


def _events(session: Session, *where: Any) -> Iterator[Any]:
    table = AuditEvent.__table__
    yield from session.execute(select(table).where(*where).order_by(table.c.seq))


def replay_all(session: Session, until: datetime | None = None) -> Replay:
    """Every event (up to `until`, inclusive), oldest first."""
    replay = Replay(exact_from(session))
    table = AuditEvent.__table__
    where = [table.c.at <= until] if until is not None else []
    stmt = select(table).where(*where).order_by(table.c.seq).execution_options(yield_per=10_000)
    replay.feed_all(session.execute(stmt))
    return replay


def state_at(session: Session, name: str, at: datetime, first_exact: int | None = None) -> EndpointAt | None:
    """`name` as of `at` (every event at or before it), from the few events that decide it.
    `first_exact`: `exact_from(session)`, when the caller already has it."""
    table = AuditEvent.__table__
    c = table.c
    first_exact = first_exact or exact_from(session)

    def latest(*where: Any) -> Any:
        return session.execute(
            select(table).where(*where, c.at <= at).order_by(c.at.desc(), c.seq.desc()).limit(1)
        ).first()

    serves = latest(c.endpoint == name, c.action == SERVES, c.subject_type == "endpoint")
    # One query per action: each is a range of the (endpoint, action, at) index; an IN list would
    # walk the endpoint's events back to its creation.
    lifecycle = max(
        (
            r
            for r in (
                latest(c.endpoint == name, c.action == a, c.subject_type == "endpoint") for a in LIFECYCLE
            )
            if r
        ),
        key=lambda r: (r.at, r.seq),
        default=None,
    )
    started = latest(c.endpoint == name, c.action == "rollout.start", c.subject_type == "rollout")
    weighted = latest(c.endpoint == name, c.action == WEIGHTS, c.subject_type == "endpoint")
    picked = [r for r in (serves, lifecycle, started, weighted) if r is not None]
    if not picked:
        return None
    if min(r.seq for r in picked) < first_exact:
        # Older events carry their meaning differently: fold everything about this endpoint.
        rows = list(_events(session, c.endpoint == name, c.at <= at))
        rows += list(_events(session, c.action == CONFIG))
    else:
        rows = picked
        if started is not None:
            # By subject alone, time filtered here: with `at` in the query a planner without statistics
            # may walk the time index instead (every event before `at`).
            own = _events(session, c.subject_type == "rollout", c.subject_id == started.subject_id)
            rows += [r for r in own if r.at <= at]
        if serves is not None:
            config = json.loads(serves.payload).get("config")
            if config is not None:
                rows += list(_events(session, c.subject_type == "endpoint_config", c.subject_id == config))
    replay = Replay(first_exact)
    seen: set[int] = set()
    for row in sorted(rows, key=lambda r: r.seq):
        if row.seq not in seen:
            seen.add(row.seq)
            replay.feed(row)
    models = {m for config in replay.configs.values() for m in (v["model"] for v in config["variants"])}
    if models:  # lineage is about the models alone: fed after the rest, it changes nothing else
        lineage = _events(session, c.subject_type == "model_version", c.subject_id.in_(sorted(models)))
        replay.feed_all(r for r in lineage if r.at <= at and r.action in LINEAGE_ACTIONS)
    return replay.state(name, at)


def endpoints_at(session: Session, at: datetime) -> list[EndpointAt]:
    """Every endpoint the history knew of at `at`, as of then."""
    c = AuditEvent.__table__.c
    names = session.scalars(
        select(c.endpoint)
        .where(c.subject_type == "endpoint", c.action.in_((*LIFECYCLE, SERVES)), c.at <= at)
        .distinct()
        .order_by(c.endpoint)
    )
    first_exact = exact_from(session)
    found = [state_at(session, name, at, first_exact) for name in list(names) if name is not None]
    return [s for s in found if s is not None]


def registry_state(session: Session, name: str) -> EndpointAt | None:
    """`name` as the registry's rows say now: what replaying the history must reproduce."""
    from manager.registry.rollouts import active_on

    endpoint = session.scalar(select(Endpoint).where(Endpoint.name == name))
    if endpoint is None:
        return None
    out = EndpointAt(name, None, "serving" if endpoint.current_config else "creating")
    config = endpoint.current_config
    active = active_on(session, name)
    if active is not None:
        out.rollout = RolloutAt(
            active.id,
            active.baseline.ref,
            active.candidate.ref,
            active.baseline_variant,
            active.candidate_variant,
            None,
            active.policy_hash,
            state=active.state,
            step=active.step,
            phase=active.phase if active.state != "pending" else None,
            weight=float(active.weight),
        )
    if config is not None:
        out.config = config.name
        weights = {v.variant_name: float(v.initial_weight) for v in config.variants}
        weights.update({k: float(w) for k, w in (endpoint.weights or {}).items() if k in weights})
        phase = session.get(RolloutPhase, (active.id, active.phase)) if active is not None else None
        production = {v.variant_name for v in config.variants if not v.is_shadow}
        # The weights the rollout's current phase set, where both its variants serve.
        if (
            phase is not None
            and active is not None
            and active.state != "pending"
            and set(phase.weights) <= production
        ):
            weights.update({k: float(w) for k, w in phase.weights.items()})
        total = sum(weights[name] for name in production) or 1.0
        out.variants = [
            VariantAt(
                v.variant_name,
                v.model_version.ref,
                weights[v.variant_name],
                0.0 if v.is_shadow else 100.0 * weights[v.variant_name] / total,
                bool(v.is_shadow),
                v.instance_type,
                v.instance_count,
                {},
                None,
            )
            for v in config.variants
        ]
    return out
