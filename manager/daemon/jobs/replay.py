"""Replay steps (`manager.rollout.replay`): plan, then send queued requests to candidates at weight 0."""

from __future__ import annotations

import logging
from datetime import timedelta

from manager.daemon.runtime import RUNTIMES

log = logging.getLogger("variantctl.daemon")
COUNTED = ("planned", "sent", "errors", "retried", "given_up")


def replay_job(url: str, budget: float = 20.0) -> None:
    """Send for up to `budget` seconds (less than the job's interval, so runs never pile up)."""
    runtime = RUNTIMES[url]
    if runtime.replayer is None:
        return
    runtime.replayer.budget = timedelta(seconds=budget)
    for report in runtime.replayer.run():
        if not (report.planned or report.refused or report.sent or report.given_up):
            continue
        fields = {k: v for k, v in vars(report).items() if v}
        counts = ", ".join(f"{n} {k.replace('_', ' ')}" for k, n in fields.items() if k in COUNTED)
        log.log(
            logging.WARNING if report.refused or report.given_up else logging.INFO,
            "replay for rollout %s: %s",
            report.rollout_id,
            report.refused or counts,
            extra={"fields": {"job": "replay", **fields}},
        )
