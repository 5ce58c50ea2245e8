"""kill -9 the daemon at distinct points of a rollback and of a shadow step; after a restart the
rollout ends the same way, the endpoint matches the registry, and the history verifies. On SQLite and
on PostgreSQL (tests/crash_support.py says how)."""

from __future__ import annotations

from pathlib import Path

import pytest

from manager.history import audit

from .crash_support import cases, crash_and_recover
from .local_sagemaker_support import flaky_artifact
from .rollout_support import make_world, platform_matches_registry, policy_text

pytestmark = pytest.mark.slow  # each point restarts a real daemon

ROLLBACK_POINTS = ["rollback-intent", "rollback-weights-zeroed", "rollback-updating", "rollback-recorded"]


@pytest.fixture
def flaky(artifacts: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A candidate that fails a third of its requests with a 5xx."""
    path = flaky_artifact(tmp_path_factory.mktemp("flaky") / "flaky.joblib", artifacts["logistic"], 0.35)
    return {**artifacts, "flaky": path}


@pytest.mark.parametrize(("backend", "point"), cases(ROLLBACK_POINTS, ["rollback-weights-zeroed"]))
def test_crash_during_a_rollback(tmp_path: Path, flaky: dict[str, Path], point: str, db_url: str) -> None:
    with make_world(tmp_path, flaky, candidate="flaky", url=db_url) as world:
        rollout_id = world.start(policy_text(min_samples=20))
        crash_and_recover(world, rollout_id, point, "rolled_back")
        assert platform_matches_registry(world) == {"baseline": "churn:1"}
        assert audit.verify(world.database).ok
        actions = [e.action for e in audit.history(world.database, audit.HistoryFilter(limit=200))]
        assert actions.count("rollout.rollback") == 1 and actions.count("rollout.rolled_back") == 1


SHADOW_POINTS = ["shadow-intent", "shadow-call", "shadow-done", "unshadow-intent", "unshadow-done"]
SHADOW_STEPS = "[{shadow: {percent: 50, duration: 1s}}, {setWeight: {percent: 50}}, {analysis: {}}]"


@pytest.mark.parametrize(("backend", "point"), cases(SHADOW_POINTS, ["shadow-call"]))
def test_crash_during_a_shadow_step(
    tmp_path: Path, artifacts: dict[str, Path], point: str, db_url: str
) -> None:
    with make_world(tmp_path, artifacts, url=db_url) as world:
        rollout_id = world.start(policy_text(SHADOW_STEPS, min_samples=20))
        crash_and_recover(world, rollout_id, point, "promoted")
        assert platform_matches_registry(world) == {"baseline": "churn:2"}
        assert audit.verify(world.database).ok
        actions = [e.action for e in audit.history(world.database, audit.HistoryFilter(limit=200))]
        assert actions.count("rollout.shadowing") == 1 and actions.count("rollout.shadow_ended") == 1
