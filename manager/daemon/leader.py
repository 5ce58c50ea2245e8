"""Leader election among daemons sharing a PostgreSQL registry: the scheduler's lease, kept or
waited for, and the leader's scheduler started and stopped with it."""

from __future__ import annotations

import logging
import threading
from typing import Any

from manager.daemon.runtime import RUNTIMES

log = logging.getLogger("variantctl.daemon")


class Elector:
    """Keeps (or waits for) the scheduler's leader lease: renews it every third of its time to live;
    starts the leader's scheduler on gaining it and stops it on losing it, or on failing to renew for
    `ttl - renew_every` (before anyone else can take it over)."""

    def __init__(self, url: str, instance: str, ttl: float, start: Any) -> None:
        from manager.clock import utcnow

        self.url, self.instance, self.ttl, self.start = url, instance, ttl, start
        self.renew_every = ttl / 3
        self.scheduler: Any = None
        self.epoch: int | None = None
        self.renewed = 0.0
        self.started_at = utcnow()
        self.last_problem: str | None = None

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                self.tick()
            except Exception:  # this thread must outlive anything a tick meets
                log.exception("leader lease: unexpected error; trying again in %gs", self.renew_every)
            stop.wait(self.renew_every)

    def tick(self) -> None:
        import time
        from datetime import timedelta

        from manager.registry import leader

        runtime = RUNTIMES[self.url]
        asked = time.monotonic()  # the lease runs from no earlier than this, whatever the wait
        try:
            with runtime.database.write() as session:
                got = leader.claim(session, self.instance, timedelta(seconds=self.ttl))
                leader.heartbeat(session, self.instance, self.started_at, got.epoch if got else None)
        except Exception as exc:  # the registry is unreachable: keep leading only while safe
            problem = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            if problem != self.last_problem:
                log.warning("leader lease: cannot reach the registry: %s", problem)
                self.last_problem = problem
            if self.scheduler is not None and time.monotonic() - self.renewed > self.ttl - self.renew_every:
                self.stop_leading(f"the lease could not be renewed for {self.ttl - self.renew_every:g}s")
            return
        if self.last_problem is not None:
            log.info("leader lease: the registry answers again")
            self.last_problem = None
        if got is None:
            if self.scheduler is not None:
                self.stop_leading("another daemon holds the lease")
            return
        self.renewed = asked
        if self.scheduler is None or got.epoch != self.epoch:
            if self.scheduler is not None:
                self.stop_leading(f"the lease moved to epoch {got.epoch}")
            runtime.epoch = got.epoch  # before any job of the new scheduler can run
            try:
                scheduler = self.start()
            except Exception as exc:  # e.g. the registry went away while the job store was read
                runtime.epoch = None
                log.warning(
                    "leader lease: could not start the scheduler under epoch %d (trying again in %gs): %s",
                    got.epoch,
                    self.renew_every,
                    f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}",
                )
                return
            self.epoch, self.scheduler = got.epoch, scheduler
            log.info(
                "leading the scheduler under epoch %d (lease until %s)", got.epoch, got.expires_at.isoformat()
            )

    def stop_leading(self, why: str) -> None:
        log.warning("no longer leading the scheduler (epoch %s): %s", self.epoch, why)
        scheduler, self.scheduler = self.scheduler, None
        RUNTIMES[self.url].scheduler = None
        RUNTIMES[self.url].epoch = None  # a job still running is fenced from here on
        scheduler.shutdown(wait=False)

    def resign(self) -> None:
        """A clean stop: the lease is given up at once, so another daemon need not wait for it."""
        from manager.registry import leader

        if self.scheduler is None or self.epoch is None:
            return
        self.scheduler.shutdown(wait=True)
        self.scheduler = None
        RUNTIMES[self.url].epoch = None
        try:
            with RUNTIMES[self.url].database.write() as session:
                leader.release(session, self.instance, self.epoch)
        except Exception as exc:
            log.warning("leader lease: could not give it up (it expires by itself): %s", exc)
