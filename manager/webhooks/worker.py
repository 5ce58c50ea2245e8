"""The daemon's webhook job: fan the history out into deliveries, send what is due, ask the gates.
It runs on its own schedule (never inside the reconcile tick), on the scheduler's leader alone when
several daemons share a registry; a delivery a dying leader had sent is sent again by the next one,
under the same idempotency key."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta

from manager.db import Database
from manager.webhooks import deliveries, gates

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Round:
    events: int
    delivered: int
    failed: int
    gates: int
    pruned: int = 0


def run(
    database: Database,
    retry: timedelta,
    rounds: int = 10,
    keep: timedelta | None = None,
    link: str | None = None,
) -> Round:
    """Catch up with the history (up to `rounds` batches), then send and ask, and forget deliveries
    delivered longer than `keep` ago. Each part's failure is logged and leaves the others to run."""
    read = 0
    try:
        for _ in range(rounds):
            n = deliveries.fan_out(database, link=link)
            read += n
            if n < deliveries.BATCH:
                break
    except Exception:
        log.exception("webhooks: could not fan out the history's events")
    sent = deliveries.Sent()
    try:
        sent = deliveries.deliver_due(database, retry)
    except Exception:
        log.exception("webhooks: could not send deliveries")
    asked = 0
    try:
        asked = gates.call_due(database)
    except Exception:
        log.exception("webhooks: could not ask the gates")
    pruned = 0
    if keep is not None:
        try:
            pruned = deliveries.prune(database, keep)
        except Exception:
            log.exception("webhooks: could not prune old deliveries")
    return Round(read, sent.delivered, sent.failed, asked, pruned)
