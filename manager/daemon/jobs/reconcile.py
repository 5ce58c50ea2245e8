"""The reconcile tick: every active rollout one step nearer its goal (`manager.rollout.reconcile`)."""

from __future__ import annotations

import logging
import time

from manager.daemon.runtime import RUNTIMES, Runtime

log = logging.getLogger("variantctl.daemon")
# A tick's heartbeat is written at most this often (seconds): a daemon counts as down after two ticks
# or 10 s without one (`registry.liveness`), and a fast tick need not take the write lock each time.
HEARTBEAT_EVERY = 2.0


def reconcile_job(url: str) -> None:
    from manager import telemetry

    runtime = RUNTIMES[url]
    if runtime.tick > 0 and time.monotonic() - runtime.heartbeat_at >= HEARTBEAT_EVERY:
        _heartbeat(runtime)
    with telemetry.TICK_SECONDS.time():
        outcomes = runtime.reconciler.tick()
    for outcome in outcomes:
        telemetry.TICK_RESULTS.labels(outcome.did).inc()
        if outcome.did not in ("wait", "skip"):
            fields = {
                "rollout": outcome.rollout_id,
                "endpoint": outcome.endpoint,
                "action": outcome.did,
                "detail": outcome.detail,
            }
            log.info(
                "rollout %s on %s: %s %s",
                outcome.rollout_id,
                outcome.endpoint,
                outcome.did,
                outcome.detail,
                extra={"fields": fields},
            )


def _heartbeat(runtime: Runtime) -> None:
    """This tick runs (what `rollout pause`, `watch` and the dashboard read to say a daemon is up); a
    registry that cannot take it now is the tick's own problem, met just below."""
    from manager.clock import utcnow
    from manager.registry import liveness

    try:
        with runtime.database.write() as session:
            liveness.ticked(session, runtime.instance, runtime.tick, runtime.started_at or utcnow())
        runtime.heartbeat_at = time.monotonic()
    except Exception as exc:
        log.debug("heartbeat not written: %s", exc)
