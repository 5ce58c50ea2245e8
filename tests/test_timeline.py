"""Point in time: what an endpoint served at any instant, from the history alone.

The property: over randomly generated sequences of rollouts (promoted, rolled back, aborted, forced
through, paused and resumed by hand, stopped at manual gates), model approvals and rejections, and an
endpoint forgotten and created again, all driven through the real reconciler against the local
SageMaker,
- after every tick and every operator action, the registry's own rows are recorded with the time;
- `state_at` (the indexed path) at each such time equals what the registry said then;
- replaying the whole history up to that time (`replay_all`) says the same;
- and at the end, replaying everything reproduces the registry's current state.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from manager.clock import utcnow
from manager.history import timeline
from manager.registry import models, rollouts
from manager.registry.vocabulary import is_final
from manager.rollout import endpoints

from .rollout_support import ENDPOINT, World, make_world

EMPTY = {"config": None, "variants": [], "rollout": None}
STEPS = (
    "{setWeight: {percent: 20}}",
    "{setWeight: {percent: 60}}",
    "{pause: {}}",
    "{analysis: {final: false}}",
)


def policy(version: int, steps: list[str], no_data: str) -> str:
    return f"""
name: random-{version}
target:
  endpoint: {ENDPOINT}
  candidate: {{model: churn, version: {version}}}
steps: [{", ".join(steps)}]
metrics:
  - {{name: 5xx, role: primary, source: cloudwatch, measure: errors_5xx, kind: errors, higherIsBetter: false,
     minSamples: 0, onNoData: pass}}
  - {{name: latency, role: guardrail, source: cloudwatch, measure: model_latency_ms, kind: mean,
     higherIsBetter: false, minSamples: 0, onNoData: {no_data},
     test: {{type: relative, maxIncrease: 0.5}}}}
decisions: {{maxDuration: 10m}}
"""


@dataclass
class Recorder:
    """The registry's rows at each instant the test looked."""

    world: World
    seen: list[tuple[datetime, dict[str, Any]]] = field(default_factory=list)

    def look(self) -> None:
        with self.world.database.read() as session:
            state = timeline.registry_state(session, ENDPOINT)
        self.seen.append((utcnow(), state.essence() if state is not None else EMPTY))


# How a rollout is driven: left alone (gates resumed), or an operator acts once it reaches a state.
# Chosen by the seeded generator; what happens then does not depend on timing.
PLANS: dict[str, tuple[str, str] | None] = {
    "alone": None,
    "forced": ("running", "promote"),
    "abort": ("running", "abort"),
    "abort-early": ("pending", "abort"),
    "pause": ("running", "pause"),
}


def _operate(world: World, rng: random.Random, rec: Recorder, artifact: Path) -> None:
    """One random rollout, driven by a random plan, until it ends."""
    with world.database.write() as session:
        version = models.register(
            session, models.NewVersion("churn", str(artifact), "sklearn", status="approved"), "trainer"
        ).version
    steps = rng.sample(STEPS, rng.randint(1, 3))
    plan = PLANS[rng.choice(list(PLANS))]
    guardrail = rng.choice(("pass", "fail"))  # fail: no latency data counts as harm once traffic flows
    rollout_id = world.start(policy(version, steps, guardrail))
    rec.look()
    reconciler = world.reconciler()
    for _ in range(200):
        row = world.rollout(rollout_id)
        if is_final(row.state):
            return
        intent = None
        if plan is not None and row.state == plan[0]:
            intent, plan = plan[1], None
        elif row.state == "paused":
            intent = "resume"
        if intent is not None and row.intent is None:
            with world.database.write() as session:
                actor = rng.choice(("ana", "bo"))
                rollouts.set_intent(session, rollout_id, intent, f"planned {intent}", actor)  # type: ignore[arg-type]
            rec.look()
        reconciler.tick()
        rec.look()
    raise AssertionError(f"rollout {rollout_id} did not end: {world.rollout(rollout_id).state}")


def _gate(world: World, rng: random.Random, rec: Recorder) -> None:
    with world.database.write() as session:
        waiting = [v for v in models.list_versions(session, "churn") if v.status in ("approved", "rejected")]
        if waiting:
            version = rng.choice(waiting)
            to = "rejected" if version.status == "approved" else "approved"
            models.transition(session, version, to, "auditor", reason="random gate", action=f"model.{to}")
    rec.look()


def _recreate(world: World, rec: Recorder) -> None:
    """Forget the endpoint (deleting it on the platform), then create it again on what served."""
    with world.database.read() as session:
        serving = [v.ref for v in models.list_versions(session, "churn", "serving")]
    endpoints.forget(world.database, world.platform, ENDPOINT, "ops", "random forget")
    rec.look()
    endpoints.create_and_wait(world.database, world.platform, ENDPOINT, serving[0], "ops", poll=0.05)
    rec.look()


@pytest.fixture(params=[11, 12, 13], ids=lambda s: f"seed{s}")
def random_history(
    request: pytest.FixtureRequest, tmp_path: Path, artifacts: dict[str, Path]
) -> Iterator[tuple[World, Recorder]]:
    rng = random.Random(request.param)
    with make_world(tmp_path, artifacts) as world:
        rec = Recorder(world)
        rec.look()
        # The world starts with an approved churn:2: roll it out first, then random moves.
        for move in ["rollout", *rng.choices(("rollout", "rollout", "gate", "recreate"), k=7)]:
            if move == "rollout":
                _operate(world, rng, rec, artifacts[rng.choice(("logistic", "prior"))])
            elif move == "gate":
                _gate(world, rng, rec)
            else:
                _recreate(world, rec)
        yield world, rec


def test_the_history_at_every_instant_equals_the_registry_then(
    random_history: tuple[World, Recorder],
) -> None:
    world, rec = random_history
    with world.database.read() as session:
        full = timeline.replay_all(session)
        now = timeline.registry_state(session, ENDPOINT)
        assert now is not None
        replayed = full.state(ENDPOINT)
        assert replayed is not None and replayed.essence() == now.essence()
        assert replayed.exact
        mismatches = []
        for at, expected in rec.seen:
            fast = timeline.state_at(session, ENDPOINT, at)
            slow = timeline.replay_all(session, until=at).state(ENDPOINT, at)
            got_fast = fast.essence() if fast is not None else EMPTY
            got_slow = slow.essence() if slow is not None else EMPTY
            if got_fast != expected or got_slow != expected:
                mismatches.append((at, expected, got_fast, got_slow))
        # And at the time of every event, the indexed answer is the state just after it.
        from manager.history import audit

        for event in audit.history(world.database, audit.HistoryFilter(limit=None)):
            fast = timeline.state_at(session, ENDPOINT, event.at)
            slow = timeline.replay_all(session, until=event.at).state(ENDPOINT, event.at)
            got_fast = fast.essence() if fast is not None else EMPTY
            got_slow = slow.essence() if slow is not None else EMPTY
            if got_fast != got_slow:
                mismatches.append((event.at, event.seq, got_fast, got_slow))
    assert not mismatches, mismatches[:3]
    # The sequence did what it was generated to do: more than one rollout, each state seen.
    states = {e["rollout"][1] for _, e in rec.seen if e["rollout"] is not None}
    assert {"pending", "running", "promoting", "rolling_back"} <= states
    assert len(rec.seen) > 20
    finals = {e for e in (s.rollout.state for s in [full.state(ENDPOINT)] if s and s.rollout)} | {
        r.state for r in full.rollouts.values()
    }
    assert {"promoted", "aborted"} <= finals


def test_every_variant_names_its_lineage_and_the_event_behind_it(
    random_history: tuple[World, Recorder],
) -> None:
    world, _ = random_history
    with world.database.read() as session:
        state = timeline.state_at(session, ENDPOINT, utcnow())
    assert state is not None and state.config is not None
    assert state.config_by is not None and state.config_by.action == "endpoint.serves"
    for variant in state.variants:
        assert variant.lineage["registered"]["action"] == "model.register"
        assert variant.lineage["artifact_uri"]


def test_a_registry_from_before_0010_says_from_which_seq_it_is_exact(tmp_path: Path, artifact: Path) -> None:
    """Events an earlier release wrote carry no rollout state: after the upgrade, `--at` derives the
    step from the decisions and says so; who started each rollout is backfilled from its event."""
    from datetime import UTC, timedelta

    from sqlalchemy import text

    from manager.db import Database
    from manager.history import audit
    from manager.registry import migrate

    database = Database(f"sqlite:///{tmp_path / 'old.db'}")
    migrate.upgrade(database, "0009")
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    config = {
        "variants": [
            {
                "variant": "a",
                "model": "m:1",
                "instance_type": "ml.m5.large",
                "instance_count": 1,
                "weight": 1.0,
                "shadow": False,
            }
        ],
        "capture": None,
    }
    ab = {
        "variants": [
            {**config["variants"][0]},
            {
                "variant": "b",
                "model": "m:2",
                "instance_type": "ml.m5.large",
                "instance_count": 1,
                "weight": 0.0,
                "shadow": False,
            },
        ],
        "capture": None,
    }
    legacy = [  # (minutes after t0, actor, action, subject type, subject id, payload)
        (0, "alice", "model.register", "model_version", "m:1", {"artifact_uri": str(artifact)}),
        (1, "alice", "model.register", "model_version", "m:2", {"artifact_uri": str(artifact)}),
        (2, "alice", "endpoint.config", "endpoint_config", "c1", config),
        (3, "alice", "endpoint.serves", "endpoint", "ep", {"config": "c1", "variants": {"a": "m:1"}}),
        (
            4,
            "carol",
            "rollout.start",
            "rollout",
            "1",
            {"baseline": "m:1", "candidate": "m:2", "variants": {"baseline": "a", "candidate": "b"}},
        ),
        (5, "daemon", "endpoint.config", "endpoint_config", "c2", ab),
        (
            6,
            "daemon",
            "endpoint.serves",
            "endpoint",
            "ep",
            {"config": "c2", "variants": {"a": "m:1", "b": "m:2"}},
        ),
        (6, "daemon", "rollout.deployed", "rollout", "1", {"config": "c2"}),
        (7, "daemon", "rollout.phase", "rollout", "1", {"phase": 1, "weight": 20.0}),
        (7, "daemon", "rollout.advance", "rollout", "1", {"decision": "advance"}),
    ]
    with database.write() as session:
        for minutes, actor, action, kind, subject, payload in legacy:
            event = audit.Event(
                action, kind, subject, None, payload, "ep" if kind != "model_version" else None
            )
            audit.append(session, actor, event, at=t0 + timedelta(minutes=minutes))
    with database.writer.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO model_versions (id, name, version, framework, artifact_uri, status, "
                "metrics, created_at) VALUES (1, 'm', 1, 'sklearn', :a, 'serving', '{}', '2026-01-01'), "
                "(2, 'm', 2, 'sklearn', :a, 'candidate', '{}', '2026-01-01')"
            ),
            {"a": str(artifact)},
        )
        conn.execute(
            text(
                "INSERT INTO endpoints (id, name, platform, created_at) VALUES (1, 'ep', 'sagemaker', "
                "'2026-01-01')"
            )
        )
        conn.execute(
            text(
                "INSERT INTO rollouts (id, endpoint_id, baseline_version_id, candidate_version_id, "
                "policy_yaml, policy_hash, state, step, phase, weight, created_at, updated_at, "
                "baseline_variant, candidate_variant) VALUES (1, 1, 1, 2, '', 'h', 'running', 1, 1, "
                "20.0, '2026-01-01', '2026-01-01', 'a', 'b')"
            )
        )
    migrate.upgrade(database)
    with database.read() as session:
        assert timeline.exact_from(session) == len(legacy) + 1
        assert session.execute(text("SELECT started_by FROM rollouts WHERE id = 1")).scalar() == "carol"
        state = timeline.state_at(session, "ep", t0 + timedelta(minutes=8))
        before = timeline.state_at(session, "ep", t0 + timedelta(minutes=3, seconds=30))
    assert state is not None and before is not None
    assert state.rollout is not None and (state.rollout.state, state.rollout.step) == ("running", 1)
    assert {v.variant: v.share for v in state.variants} == {"a": 80.0, "b": 20.0}
    assert not state.exact and f"seq {len(legacy) + 1}" in (state.note or "")
    assert before.rollout is None and before.config == "c1" and before.exact
    database.dispose()
