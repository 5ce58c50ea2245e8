"""kill -9 the daemon at distinct points of a promotion; after a restart the rollout ends the same way,
the endpoint matches the registry, and the history verifies. On SQLite and on PostgreSQL
(tests/crash_support.py says how; rollbacks and shadow steps: tests/test_crash_exits.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from manager.history import audit

from .crash_support import cases, crash_and_recover
from .rollout_support import make_world, platform_matches_registry, policy_text

pytestmark = pytest.mark.slow  # each point restarts a real daemon

PROMOTE_POINTS = [
    "deploy-intent",
    "deploy-call",
    "deployed",
    "set_weight-intent",
    "weight-call",
    "phase",
    "promote-intent",
    "promote-updating",
    "promote-done",
    "promote-recorded",
]


@pytest.mark.parametrize(
    ("backend", "point"), cases(PROMOTE_POINTS, ["deploy-call", "set_weight-intent", "promote-updating"])
)
def test_crash_during_a_promotion(
    tmp_path: Path, artifacts: dict[str, Path], point: str, db_url: str
) -> None:
    with make_world(tmp_path, artifacts, url=db_url) as world:
        rollout_id = world.start(policy_text(min_samples=20))
        crash_and_recover(world, rollout_id, point, "promoted")
        assert platform_matches_registry(world) == {"baseline": "churn:2"}
        state = world.platform.describe("churn-prod")
        assert state is not None and state.shares() == {"baseline": 1.0}
        assert audit.verify(world.database).ok
        actions = [e.action for e in audit.history(world.database, audit.HistoryFilter(limit=200))]
        assert actions.count("rollout.promote") == 1 and actions.count("rollout.promoted") == 1


GUARDED = "  promotion: {mode: blueGreen, blueGreen: {routing: LINEAR, sizePercent: 50, waitSeconds: 1}}\n"
# A guarded promotion: the candidate's weight to 0, the baseline alone, then SageMaker's guarded update.
GUARDED_POINTS = ["promote-weights-zeroed", "promote-updating", "promote-guarded"]


@pytest.mark.parametrize("point", GUARDED_POINTS)
def test_crash_during_a_guarded_promotion(tmp_path: Path, artifacts: dict[str, Path], point: str) -> None:
    text = (policy_text(min_samples=20) + GUARDED).replace(
        "decisions: {maxDuration: 5m}\n", "decisions:\n  maxDuration: 5m\n"
    )
    with make_world(tmp_path, artifacts) as world:
        rollout_id = world.start(text)
        crash_and_recover(world, rollout_id, point, "promoted")
        assert platform_matches_registry(world) == {"baseline": "churn:2"}
        described = world.host.client("sagemaker").describe_endpoint(EndpointName="churn-prod")
        assert (
            described["LastDeploymentConfig"]["BlueGreenUpdatePolicy"]["TrafficRoutingConfiguration"]["Type"]
            == "LINEAR"
        )
        assert audit.verify(world.database).ok
        actions = [e.action for e in audit.history(world.database, audit.HistoryFilter(limit=200))]
        assert actions.count("rollout.promote") == 1 and actions.count("rollout.promoted") == 1
