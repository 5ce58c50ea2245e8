"""The reconcile tick: every active rollout one step nearer its goal (`manager.rollout.reconcile`)."""

from __future__ import annotations

import logging

from manager.daemon.runtime import RUNTIMES

log = logging.getLogger("variantctl.daemon")


def reconcile_job(url: str) -> None:
    from manager import telemetry

    with telemetry.TICK_SECONDS.time():
        outcomes = RUNTIMES[url].reconciler.tick()
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
