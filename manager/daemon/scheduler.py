"""The scheduler: APScheduler 3 on the registry's job store, one per registry (an flock beside a
SQLite file, or the leader lease of a PostgreSQL registry that several daemons share, `run_shared`).
The fixed jobs are (re)placed and the cron jobs synced with the policy files before any runs."""

from __future__ import annotations

import fcntl
import logging
import os
import signal
import socket
import threading
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, timedelta
from pathlib import Path
from typing import Any, TextIO

from manager.clock import utcnow
from manager.daemon.jobs.digests import DigestSchedule
from manager.daemon.jobs.ingest import ingest_job
from manager.daemon.jobs.reconcile import reconcile_job
from manager.daemon.jobs.replay import replay_job
from manager.daemon.jobs.retrain import record_missed
from manager.daemon.leader import Elector
from manager.daemon.policies import read_policies, sync_jobs
from manager.daemon.runtime import RUNTIMES, build_runtime
from manager.errors import UserError

log = logging.getLogger("variantctl.daemon")


@contextmanager
def scheduler_lock(path: Path) -> Iterator[TextIO]:
    """One scheduler per registry: two sharing a job store would run every job twice."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(path, "a+")  # noqa: SIM115 - held for the daemon's lifetime
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        raise UserError(f"another daemon ({holder}) holds the scheduler lock {path}; exiting") from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"pid {os.getpid()} on {socket.gethostname()}")
    handle.flush()
    try:
        yield handle
    finally:
        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
        handle.close()


def _on_job_event(url: str, event: Any) -> None:
    """A job's exception, logged with the job and the error; a cron run missed beyond its grace,
    recorded in the history (a scheduled retrain that did not happen is something auditors ask about)."""
    from apscheduler.events import EVENT_JOB_MISSED

    if event.code != EVENT_JOB_MISSED:
        error = event.exception
        log.error(
            "job %s failed: %s: %s",
            event.job_id,
            type(error).__name__,
            error,
            extra={
                "fields": {
                    "job": event.job_id,
                    "error_type": type(error).__name__,
                    "error": str(error),
                    "traceback": "".join(traceback.format_exception(error)),
                }
            },
        )
        return
    scheduled = event.scheduled_run_time.astimezone(UTC).isoformat()
    log.warning(
        "job %s: the run due at %s was missed beyond its grace; skipped",
        event.job_id,
        scheduled,
        extra={"fields": {"job": event.job_id, "scheduled": scheduled}},
    )
    if event.job_id.startswith("retrain:"):
        from manager.registry.leader import NotLeading

        try:
            record_missed(url, event.job_id, event.scheduled_run_time.astimezone(UTC))
        except NotLeading as exc:
            log.warning("job %s: the missed run is left to the leader: %s", event.job_id, exc)


def run(
    url: str,
    tick: float,
    ingest_every: float,
    policies_dir: Path | None,
    once: bool,
    digests: DigestSchedule | None = None,
    instance: str | None = None,
    lease_ttl: float = 30.0,
) -> None:
    from manager.db import sqlite_path

    if sqlite_path(url) is None and not once:
        # A server database: several daemons may share it; the scheduler's leader is elected in it.
        from manager.registry import leader

        return run_shared(
            url, tick, ingest_every, policies_dir, digests, instance or leader.default_instance(), lease_ttl
        )

    lock_path = (
        Path(f"{sqlite_path(url)}.daemon.lock")
        if sqlite_path(url)
        else Path.home() / ".variantctl-daemon.lock"
    )
    with scheduler_lock(lock_path):
        # Stable across restarts on this host (the lock admits one daemon at a time), so a daemon that
        # restarts after a crash takes its own leases back at once; daemons elsewhere still wait.
        owner = f"{socket.gethostname()}:{lock_path}"
        RUNTIMES[url] = build_runtime(url, owner)
        if not once:
            RUNTIMES[url].tick, RUNTIMES[url].started_at = tick, utcnow()
        if once:
            ingest_job(url)
            reconcile_job(url)
            replay_job(url)
            return
        stop = threading.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: stop.set())
        scheduler = start_scheduler(url, tick, ingest_every, policies_dir, digests)
        log.info("daemon %s: reconcile every %gs, ingest every %gs", owner, tick, ingest_every)
        stop.wait()
        log.info("stopping: letting the current job finish")
        scheduler.shutdown(wait=True)


def own_jobs(url: str, tick: float, ingest_every: float) -> dict[str, tuple[str, float, list[Any]]]:
    """The interval jobs every daemon runs: reconcile, ingest, replay (each replay run lasts at most
    0.8 of its interval, so runs never pile up). Job id: (function reference, seconds, arguments)."""
    replay_every = max(tick, 1.0)
    return {
        "reconcile": ("manager.daemon:reconcile_job", tick, [url]),
        "ingest": ("manager.daemon:ingest_job", ingest_every, [url]),
        "replay": ("manager.daemon:replay_job", replay_every, [url, replay_every * 0.8]),
    }


def run_shared(
    url: str,
    tick: float,
    ingest_every: float,
    policies_dir: Path | None,
    digests: DigestSchedule | None,
    instance: str,
    lease_ttl: float,
) -> None:
    """One of several daemons on a PostgreSQL registry: every daemon reconciles, ingests and replays
    (each rollout worked by the daemon holding its endpoint's lease); only the elected leader runs the
    scheduled jobs (cron retrains, triggers, digests) in the registry's job store."""
    from apscheduler.schedulers.background import BackgroundScheduler

    from manager.registry import leader

    runtime = RUNTIMES[url] = build_runtime(url, instance)
    runtime.shared, runtime.tick, runtime.started_at = True, tick, utcnow()
    with runtime.database.read() as session:
        other = leader.in_use(session, instance, timedelta(seconds=lease_ttl))
    if other is not None:
        raise UserError(
            f"instance id {instance!r} is in use by another daemon ({other}): give each daemon its own"
            f" --instance-id, or wait {lease_ttl:g}s if that one has stopped"
        )
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    local = BackgroundScheduler(
        timezone=UTC, job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": 30}
    )
    for job_id, (ref, seconds, args) in own_jobs(url, tick, ingest_every).items():
        local.add_job(ref, "interval", seconds=seconds, args=args, id=job_id)
    local.start()
    elector = Elector(
        url,
        instance,
        lease_ttl,
        lambda: start_scheduler(url, tick, ingest_every, policies_dir, digests, shared=True),
    )
    thread = threading.Thread(target=elector.run, args=(stop,), name="leader-lease", daemon=True)
    thread.start()
    log.info(
        "daemon %s: reconcile every %gs, ingest every %gs; scheduler leader lease %gs in the registry",
        instance,
        tick,
        ingest_every,
        lease_ttl,
    )
    stop.wait()
    log.info("stopping: letting the current job finish")
    thread.join(timeout=lease_ttl)
    local.shutdown(wait=True)
    elector.resign()


def start_scheduler(
    url: str,
    tick: float,
    ingest_every: float,
    policies_dir: Path | None,
    digests: DigestSchedule | None = None,
    shared: bool = False,
) -> Any:
    """The scheduler on the registry's job store, its jobs reconciled against the policies before any
    runs: it starts paused, the fixed jobs are (re)placed, the cron jobs synced, then it resumes, and a
    cron run missed while the daemon was down runs now if within its `misfireGrace`. `shared`: the
    leader's among several daemons, without the jobs every daemon runs for itself."""
    from apscheduler.events import EVENT_JOB_ERROR, EVENT_JOB_MISSED
    from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
    from apscheduler.schedulers.background import BackgroundScheduler

    runtime = RUNTIMES[url]
    scheduler = BackgroundScheduler(
        timezone=UTC,
        jobstores={"default": SQLAlchemyJobStore(engine=runtime.database.writer)},
        job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": 30},
    )
    scheduler.add_listener(lambda event: _on_job_event(url, event), EVENT_JOB_ERROR | EVENT_JOB_MISSED)
    scheduler.start(paused=True)
    try:
        _place_jobs(scheduler, url, tick, ingest_every, policies_dir, digests, shared)
    except BaseException:
        scheduler.shutdown(wait=False)  # never left half set up, its threads running
        runtime.scheduler = None
        raise
    runtime.scheduler = scheduler
    scheduler.resume()
    return scheduler


def _place_jobs(
    scheduler: Any,
    url: str,
    tick: float,
    ingest_every: float,
    policies_dir: Path | None,
    digests: DigestSchedule | None,
    shared: bool,
) -> None:
    """The fixed jobs (re)placed and the cron jobs synced with the policies, in a paused scheduler."""
    runtime = RUNTIMES[url]
    runtime.scheduler = scheduler
    fixed: dict[str, tuple[str, float, list[Any]]] = {}
    if not shared:  # with several daemons each runs these itself (run_shared); the leader the rest
        fixed.update(own_jobs(url, tick, ingest_every))
    if policies_dir is not None:
        fixed["triggers"] = ("manager.daemon:trigger_job", max(tick, 30.0), [url, str(policies_dir)])
    # Model package approvals (queue reads, polls when due) and outcome write-backs: often, each cheap.
    package_tick = min(max(tick, 0.5), 2.0)
    fixed["packages"] = ("manager.daemon:package_job", package_tick, [url, str(policies_dir or "")])
    # Deliveries and gate calls: on the leader alone, so that two daemons do not send each one twice.
    fixed["webhooks"] = ("manager.daemon:webhook_job", min(max(tick, 0.2), 5.0), [url])
    if digests is not None:
        fixed["digest"] = (
            "manager.daemon:digest_job",
            digests.every,
            [url, digests.location, digests.key_path],
        )
    for job in scheduler.get_jobs():
        if not job.id.startswith("retrain:") and job.id not in fixed:
            scheduler.remove_job(job.id)  # e.g. `triggers` from a run that had --policies
    for job_id, (ref, seconds, args) in fixed.items():
        scheduler.add_job(ref, "interval", seconds=seconds, id=job_id, replace_existing=True, args=args)
    sync_jobs(scheduler, url, read_policies(policies_dir))
