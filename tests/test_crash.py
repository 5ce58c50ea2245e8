"""kill -9 the daemon at distinct points of a rollout; after a restart the rollout ends the same way,
the endpoint matches the registry, and the history verifies.

The daemon runs as a real subprocess (`variantctl daemon`), against the local SageMaker in this
process, and dies as by `kill -9` (os._exit) right after the point VARIANTCTL_CRASH_AT names. On a
SQLite registry and on PostgreSQL, where the restarted daemon is a new instance: it takes the dead
one's endpoint over once its lease expires (3 s here), under a new epoch."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import pytest

from manager import audit
from manager.registry.tables import Rollout

from .daemon_support import start_daemon
from .local_sagemaker_support import flaky_artifact
from .rollout_support import World, make_world, platform_matches_registry, policy_text

pytestmark = [pytest.mark.slow, pytest.mark.backends]  # each point restarts a real daemon: 5-9 s apiece
LEASE = "3"  # seconds: the endpoint lease and the scheduler's (PostgreSQL: a restart is a new daemon)

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
ROLLBACK_POINTS = ["rollback-intent", "rollback-weights-zeroed", "rollback-updating", "rollback-recorded"]


def _daemon(world: World, crash_at: str | None = None) -> subprocess.Popen[bytes]:
    extra = {"VARIANTCTL_ENDPOINT_LEASE_SECONDS": LEASE}
    if crash_at:
        extra["VARIANTCTL_CRASH_AT"] = crash_at
    return start_daemon(world.host.url, world.db, "--lease-ttl", LEASE, **extra)


def _state(world: World, rollout_id: int) -> str:
    with world.database.read() as session:
        row = session.get(Rollout, rollout_id)
        assert row is not None
        return row.state


def _wait_ready(process: subprocess.Popen[bytes]) -> None:
    """Until the daemon says it is scheduling (its signal handlers are in place by then)."""
    assert process.stderr is not None
    for line in iter(process.stderr.readline, b""):
        if b"reconcile every" in line:
            return
    raise AssertionError(f"the daemon exited before it started: {process.wait()}")


def _crash_and_recover(world: World, rollout_id: int, point: str, outcome: str) -> None:
    with world.traffic():
        dying = _daemon(world, point)
        try:
            code = dying.wait(timeout=90)
        finally:
            if dying.poll() is None:
                dying.kill()
        assert code == 137, f"the daemon did not die at {point}: exit {code}, {dying.stderr.read()!r}"  # type: ignore[union-attr]
        survivor = _daemon(world)
        _wait_ready(survivor)
        try:
            deadline = time.monotonic() + 90
            while _state(world, rollout_id) != outcome and time.monotonic() < deadline:
                assert survivor.poll() is None, survivor.stderr.read()  # type: ignore[union-attr]
                time.sleep(0.2)
        finally:
            survivor.send_signal(signal.SIGTERM)
            assert survivor.wait(timeout=30) == 0, "SIGTERM lets the tick finish, then exits cleanly"
    assert _state(world, rollout_id) == outcome


@pytest.mark.parametrize("point", PROMOTE_POINTS)
def test_crash_during_a_promotion(
    tmp_path: Path, artifacts: dict[str, Path], point: str, db_url: str
) -> None:
    with make_world(tmp_path, artifacts, url=db_url) as world:
        rollout_id = world.start(policy_text(min_samples=20))
        _crash_and_recover(world, rollout_id, point, "promoted")
        assert platform_matches_registry(world) == {"candidate": "churn:2"}
        state = world.platform.describe("churn-prod")
        assert state is not None and state.shares() == {"candidate": 1.0}
        assert audit.verify(world.database).ok
        actions = [e.action for e in audit.history(world.database, audit.HistoryFilter(limit=200))]
        assert actions.count("rollout.promote") == 1 and actions.count("rollout.promoted") == 1


@pytest.fixture
def flaky(artifacts: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A candidate that fails a third of its requests with a 5xx."""
    path = flaky_artifact(tmp_path_factory.mktemp("flaky") / "flaky.joblib", artifacts["logistic"], 0.35)
    return {**artifacts, "flaky": path}


@pytest.mark.parametrize("point", ROLLBACK_POINTS)
def test_crash_during_a_rollback(tmp_path: Path, flaky: dict[str, Path], point: str, db_url: str) -> None:
    with make_world(tmp_path, flaky, candidate="flaky", url=db_url) as world:
        rollout_id = world.start(policy_text(min_samples=20))
        _crash_and_recover(world, rollout_id, point, "rolled_back")
        assert platform_matches_registry(world) == {"baseline": "churn:1"}
        assert audit.verify(world.database).ok
        actions = [e.action for e in audit.history(world.database, audit.HistoryFilter(limit=200))]
        assert actions.count("rollout.rollback") == 1 and actions.count("rollout.rolled_back") == 1


SHADOW_POINTS = ["shadow-intent", "shadow-call", "shadow-done", "unshadow-intent", "unshadow-done"]
SHADOW_STEPS = "[{shadow: {percent: 50, duration: 1s}}, {setWeight: {percent: 50}}, {analysis: {}}]"


@pytest.mark.parametrize("point", SHADOW_POINTS)
def test_crash_during_a_shadow_step(
    tmp_path: Path, artifacts: dict[str, Path], point: str, db_url: str
) -> None:
    with make_world(tmp_path, artifacts, url=db_url) as world:
        rollout_id = world.start(policy_text(SHADOW_STEPS, min_samples=20))
        _crash_and_recover(world, rollout_id, point, "promoted")
        assert platform_matches_registry(world) == {"candidate": "churn:2"}
        assert audit.verify(world.database).ok
        actions = [e.action for e in audit.history(world.database, audit.HistoryFilter(limit=200))]
        assert actions.count("rollout.shadowing") == 1 and actions.count("rollout.shadow_ended") == 1
