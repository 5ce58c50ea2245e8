"""kill -9 a daemon at a point of a rollout, restart it, and wait for the rollout's end state: the
crash tests' common part (tests/test_crash.py, tests/test_crash_exits.py; two files, so that the two
test workers share them).

The daemon runs as a real subprocess (`variantctl daemon`), against the local SageMaker in the test's
process, and dies as by `kill -9` (os._exit) right after the point VARIANTCTL_CRASH_AT names. On
PostgreSQL the restarted daemon runs under the same `--instance-id`, as a systemd unit or a pod would:
it finds the dead process's id free and takes its endpoint lease back at once (a new daemon taking a
dead one's endpoints over is tests/test_scale_out.py's)."""

from __future__ import annotations

import os
import signal
import subprocess
import time

from manager.registry.tables import Rollout

from .daemon_support import died_at, start_daemon
from .rollout_support import World

LEASE = "3"  # seconds: the endpoint lease and the scheduler's


def cases(points: list[str], on_postgres: list[str]) -> list[tuple[str, str]]:
    """(backend, point): every point on SQLite, and on PostgreSQL those named (one of each kind of
    step: what differs on PostgreSQL is its transactions and locks, the same at every point of a
    kind); all of them with VARIANTCTL_CRASH_EVERYWHERE=1. Each case restarts two real daemons
    (about 12 s), and `make test` keeps to about 15 minutes on 2 cores."""
    everywhere = os.environ.get("VARIANTCTL_CRASH_EVERYWHERE") == "1"
    return [("sqlite", p) for p in points] + [
        ("postgresql", p) for p in points if everywhere or p in on_postgres
    ]


def _daemon(world: World, crash_at: str | None = None) -> subprocess.Popen[bytes]:
    extra = {"VARIANTCTL_ENDPOINT_LEASE_SECONDS": LEASE}
    if crash_at:
        extra["VARIANTCTL_CRASH_AT"] = crash_at
    return start_daemon(
        world.host.url, world.db, "--lease-ttl", LEASE, "--instance-id", "crash-test", **extra
    )


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


def crash_and_recover(world: World, rollout_id: int, point: str, outcome: str) -> None:
    with world.traffic():
        died_at(_daemon(world, point), point)
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
