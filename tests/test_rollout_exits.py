"""Every non-final state has a way out: abort in `pending` (after the deployment was asked for) and
in `promoting`, and the progress deadline in both. Against the local SageMaker."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from manager.errors import UserError
from manager.history import audit
from manager.registry import rollouts
from manager.registry.tables import ModelVersion, Rollout

from .rollout_support import CANARY, ENDPOINT, make_world, platform_matches_registry, policy_text

pytestmark = pytest.mark.backends  # the reconciler on SQLite and on PostgreSQL

SLOW_BLUE_GREEN = (
    "  promotion: {mode: blueGreen, blueGreen: {routing: CANARY, sizePercent: 10, waitSeconds: 5}}\n"
)


def blue_green_policy() -> str:
    text = policy_text(CANARY, min_samples=10_000) + SLOW_BLUE_GREEN
    return text.replace("decisions: {maxDuration: 5m}\n", "decisions:\n  maxDuration: 5m\n")


def statuses(world: object) -> dict[str, str]:
    with world.database.read() as session:  # type: ignore[attr-defined]
        return {v.ref: v.status for v in session.scalars(select(ModelVersion))}


def actions(world: object) -> list[str]:
    events = audit.history(world.database, audit.HistoryFilter(endpoint=ENDPOINT, limit=200))  # type: ignore[attr-defined]
    return [e.action for e in events]


def force_promotion(world: object, rollout_id: int) -> None:
    """Into `promoting`, with SageMaker's blue/green update under way for a minute or more."""
    world.tick_until(rollout_id, ("running",))  # type: ignore[attr-defined]
    with world.database.write() as session:  # type: ignore[attr-defined]
        rollouts.set_intent(session, rollout_id, "promote", "ship it", "carol")
    world.tick_until(rollout_id, ("promoting",))  # type: ignore[attr-defined]
    state = world.platform.describe(ENDPOINT)  # type: ignore[attr-defined]
    assert state is not None and state.busy, "the blue/green update is under way"


def test_abort_while_promoting_ends_on_the_baseline_alone(
    tmp_path: Path, artifacts: dict[str, Path], db_url: str
) -> None:
    with make_world(tmp_path, artifacts, url=db_url) as world:
        rollout_id = world.start(blue_green_policy())
        force_promotion(world, rollout_id)
        with world.database.write() as session:
            rollouts.set_intent(session, rollout_id, "abort", "pager went off", "bob")
        done = world.tick_until(rollout_id, ("aborted",), timeout=150)
        assert "while promoting: pager went off" in (done.reason or "")
        assert platform_matches_registry(world) == {"baseline": "churn:1"}
        assert statuses(world) == {"churn:1": "serving", "churn:2": "approved"}
        seen = actions(world)
        assert "operator.abort" in seen and seen.count("rollout.rollback") == 1
        assert "rollout.promoted" not in seen
        assert audit.verify(world.database).ok


def test_a_promotion_past_its_deadline_is_reverted(
    tmp_path: Path, artifacts: dict[str, Path], db_url: str
) -> None:
    with make_world(tmp_path, artifacts, url=db_url) as world:
        rollout_id = world.start(blue_green_policy())
        force_promotion(world, rollout_id)
        # 30m of progress deadline plus 2 x 5 s of SageMaker's blue/green waits: an hour is past both.
        late = replace(world.reconciler(), clock=lambda: datetime.now(UTC) + timedelta(hours=1))
        done = world.tick_until(rollout_id, ("rolled_back",), reconciler=late, timeout=150)
        assert "no progress for 30m: the promotion did not complete" in (done.reason or "")
        assert platform_matches_registry(world) == {"baseline": "churn:1"}


def test_abort_is_refused_while_rolling_back_with_a_clear_line(
    tmp_path: Path, artifacts: dict[str, Path], db_url: str
) -> None:
    with make_world(tmp_path, artifacts, url=db_url) as world:
        rollout_id = world.start(policy_text(CANARY, min_samples=10_000))
        world.tick_until(rollout_id, ("running",))
        with world.database.write() as session:
            row = session.get(Rollout, rollout_id)
            assert row is not None
            row.state = "rolling_back"
        with pytest.raises(UserError, match="already rolling back"), world.database.write() as s:
            rollouts.set_intent(s, rollout_id, "abort", "again", "bob")


@pytest.fixture
def broken_candidate(artifacts: dict[str, Path], tmp_path: Path) -> dict[str, Path]:
    broken = tmp_path / "broken-model.tar.gz"
    broken.write_bytes(b"this is not a model archive")
    return {**artifacts, "broken": broken}


def test_a_deployment_that_never_completes_rolls_back_at_the_deadline(
    tmp_path: Path, broken_candidate: dict[str, Path]
) -> None:
    with make_world(tmp_path, broken_candidate, candidate="broken") as world:
        rollout_id = world.start(policy_text(CANARY))
        reconciler = world.reconciler()
        reconciler.tick()  # the deployment is asked for; the candidate cannot load
        assert world.rollout(rollout_id).pending is not None
        late = replace(reconciler, clock=lambda: datetime.now(UTC) + timedelta(hours=1))
        done = world.tick_until(rollout_id, ("rolled_back",), reconciler=late, timeout=90)
        assert "no progress for 30m: the candidate was not deployed" in (done.reason or "")
        assert platform_matches_registry(world) == {"baseline": "churn:1"}
        assert statuses(world)["churn:1"] == "serving"
