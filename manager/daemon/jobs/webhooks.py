"""Event deliveries and gate calls (`manager.webhooks.worker`), apart from the reconcile tick."""

from __future__ import annotations

import logging

from manager.daemon.runtime import RUNTIMES

log = logging.getLogger("variantctl.daemon")


def webhook_job(url: str) -> None:
    from manager.webhooks import worker

    runtime = RUNTIMES[url]
    done = worker.run(
        runtime.database, runtime.webhook_retry, keep=runtime.webhook_keep, link=runtime.dashboard_url
    )
    if done.delivered or done.failed or done.gates or done.pruned:
        log.info(
            "webhooks: %d delivered, %d failed attempts, %d gate calls, %d old deliveries pruned",
            done.delivered,
            done.failed,
            done.gates,
            done.pruned,
            extra={"fields": {"delivered": done.delivered, "failed": done.failed, "gates": done.gates}},
        )
