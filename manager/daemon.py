"""`variantctl daemon`: APScheduler 3 runs the reconcile tick, ground-truth ingestion and the cron
retrains that policies ask for, with one scheduler per registry (an flock beside the database).

Jobs live in the registry's database (SQLAlchemyJobStore) with fixed ids and `replace_existing`,
so restarts never duplicate them. SIGTERM lets the current job finish, then exits.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import signal
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from manager.db import Database
from manager.errors import UserError

log = logging.getLogger("variantctl.daemon")


class JsonLines(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(
            {
                "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
                "level": record.levelname.lower(),
                "logger": record.name,
                "message": record.getMessage(),
                **getattr(record, "fields", {}),
            }
        )


def configure_logging(fmt: str) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(
        JsonLines() if fmt == "json" else logging.Formatter("%(asctime)s %(levelname)s %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    # Alembic says which context and DDL mode it uses each time the schema is checked: noise here.
    logging.getLogger("alembic").setLevel(logging.WARNING)


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


@dataclass
class Runtime:
    """What jobs need, built once per process (jobs are stored by reference, without it)."""

    database: Database
    reconciler: Any
    ingestor: Any


_RUNTIMES: dict[str, Runtime] = {}


def build_runtime(url: str, owner: str) -> Runtime:
    import boto3

    from manager.config import DaemonTuning
    from manager.metrics.cloudwatch import CloudWatchSource
    from manager.metrics.groundtruth import GroundTruthIngestor
    from manager.platforms.sagemaker import RETRIES, SageMakerPlatform
    from manager.rollout.reconcile import Reconciler

    tuning = DaemonTuning.from_env()
    database = Database(url)
    platform = SageMakerPlatform.connect()
    metrics = CloudWatchSource(
        boto3.client("cloudwatch", config=RETRIES), lag=tuning.metrics_lag, period=tuning.metrics_period
    )
    return Runtime(
        database,
        Reconciler(database, platform, metrics, owner=owner, actor="daemon"),
        GroundTruthIngestor(
            database, s3_client=boto3.client("s3", config=RETRIES), settle=tuning.capture_settle
        ),
    )


def reconcile_job(url: str) -> None:
    for outcome in _RUNTIMES[url].reconciler.tick():
        if outcome.did not in ("wait", "skip"):
            log.info(
                "rollout %s on %s: %s %s",
                outcome.rollout_id,
                outcome.endpoint,
                outcome.did,
                outcome.detail,
                extra={
                    "fields": {
                        "rollout": outcome.rollout_id,
                        "endpoint": outcome.endpoint,
                        "action": outcome.did,
                        "detail": outcome.detail,
                    }
                },
            )


def ingest_job(url: str) -> None:
    from sqlalchemy import select

    from manager import policy as policies
    from manager.metrics.groundtruth import QualitySpec
    from manager.registry.tables import Rollout
    from manager.registry.vocabulary import ACTIVE_ROLLOUT_STATES

    runtime = _RUNTIMES[url]
    with runtime.database.read() as session:
        texts = list(
            session.scalars(select(Rollout.policy_yaml).where(Rollout.state.in_(ACTIVE_ROLLOUT_STATES)))
        )
    for text in texts:
        policy = policies.parse(text)
        target = policy.target
        if (
            target.capture_destination
            and target.ground_truth
            and any(m.source == "quality" for m in policy.metrics)
        ):
            report = runtime.ingestor.run(
                QualitySpec(target.endpoint, target.capture_destination, target.ground_truth)
            )
            if report.joined or report.malformed or report.file_errors:
                log.info(
                    "ingested %s: %s joined, %s malformed", target.endpoint, report.joined, report.malformed
                )


def retrain_job(url: str, policy_path: str, job_id: str) -> None:
    """A cron trigger: retrain, gate offline, then start the rollout, with no human in the loop."""
    from manager import policy as policies
    from manager import yamlconfig
    from manager.clock import utcnow
    from manager.config import scheduler_actor
    from manager.rollout import launch
    from trainers.config import TrainConfig
    from trainers.datasets import load
    from trainers.gate import local_scorer
    from trainers.pipeline import retrain
    from trainers.sklearn_local import SklearnTrainer

    actor = scheduler_actor(job_id)
    policy, text = policies.load(Path(policy_path))
    spec = policy.trigger.retrain
    assert spec is not None
    if not within_windows(policy.trigger.windows, utcnow()):
        log.info("%s: outside the allowed windows; not retraining", job_id)
        return
    config = yamlconfig.load(Path(spec.config), TrainConfig)
    data = load(spec.data, spec.shift)
    database = _RUNTIMES[url].database
    done = retrain(database, SklearnTrainer(), local_scorer(data.task), config, data, actor)
    if done.approved:
        with database.write() as session:
            launch.start(session, policy, text, actor, utcnow())
        log.info("%s: started a rollout of the new candidate %s", job_id, done.ref)
    else:
        log.info("%s: %s %s: %s", job_id, done.ref, done.status, done.gate)


def trigger_job(url: str, policies_dir: str) -> None:
    """`trigger: newApprovedCandidate`: roll out the newest approved version of the policy's model when it is
    neither serving nor already tried, and the endpoint has no rollout under way. One policy's trouble
    never stops the others."""
    from manager import policy as policies
    from manager.clock import utcnow

    for path in sorted(Path(policies_dir).glob("*.yaml")):
        try:
            policy, text = policies.load(path)
        except UserError as exc:
            log.error("%s: skipped: %s", path, str(exc).splitlines()[0])
            continue
        if policy.trigger.type != "newApprovedCandidate" or not within_windows(
            policy.trigger.windows, utcnow()
        ):
            continue
        _trigger(url, policy, text)


def _trigger(url: str, policy: Any, text: str) -> None:
    from sqlalchemy import select

    from manager.clock import utcnow
    from manager.config import scheduler_actor
    from manager.registry.rollouts import active_on
    from manager.registry.tables import Rollout
    from manager.rollout import launch

    job_id = f"trigger:{policy.name}"
    actor = scheduler_actor(job_id)
    database = _RUNTIMES[url].database
    with database.write() as session:
        try:
            candidate = launch.candidate(session, policy)
        except UserError:
            return  # nothing approved yet: the usual state between retrains
        tried = session.scalar(
            select(Rollout.id).where(Rollout.candidate_version_id == candidate.id).limit(1)
        )
        if tried is not None or active_on(session, policy.target.endpoint) is not None:
            return  # already rolled out, or a rollout is under way: its turn comes after
        try:
            rollout = launch.start(session, policy, text, actor, utcnow())
        except UserError as exc:
            refused = str(exc)
        else:
            log.info("%s: started rollout %s of %s", job_id, rollout.id, candidate.ref)
            return
    log.warning("%s: cannot start a rollout of %s: %s", job_id, candidate.ref, refused)
    with database.write() as session:
        record_refusal(session, actor, policy, candidate.ref, refused)


def record_refusal(session: Any, actor: str, policy: Any, candidate: str, reason: str) -> None:
    """`trigger.refused` in the history, once per policy, candidate and reason (not every 30 s)."""
    from sqlalchemy import select

    from manager import audit
    from manager.registry.tables import AuditEvent

    last = session.scalar(
        select(AuditEvent)
        .where(AuditEvent.action == "trigger.refused", AuditEvent.subject_id == policy.name)
        .order_by(AuditEvent.seq.desc())
        .limit(1)
    )
    if last is not None and last.reason == reason and json.loads(last.payload).get("candidate") == candidate:
        return
    payload = {"candidate": candidate, "trigger": policy.trigger.type}
    event = audit.Event("trigger.refused", "policy", policy.name, reason, payload, policy.target.endpoint)
    audit.append(session, actor, event)


DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def within_windows(windows: list[str], now: datetime) -> bool:
    """`Mon-Fri 09:00-17:00` (UTC) style windows; none means always."""
    if not windows:
        return True
    for window in windows:
        days, _, hours = window.strip().partition(" ")
        first, _, last = days.lower().partition("-")
        start, _, end = hours.partition("-")
        lo, hi = DAYS.index(first[:3]), DAYS.index((last or first)[:3])
        day_ok = lo <= now.weekday() <= hi if lo <= hi else now.weekday() >= lo or now.weekday() <= hi
        clock = now.strftime("%H:%M")
        if day_ok and start <= clock < end:
            return True
    return False


def run(url: str, tick: float, ingest_every: float, policies_dir: Path | None, once: bool) -> None:
    from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
    from apscheduler.schedulers.background import BackgroundScheduler
    from apscheduler.triggers.cron import CronTrigger

    from manager import policy as policies
    from manager.db import sqlite_path

    lock_path = (
        Path(f"{sqlite_path(url)}.daemon.lock")
        if sqlite_path(url)
        else Path.home() / ".variantctl-daemon.lock"
    )
    with scheduler_lock(lock_path):
        # Stable across restarts on this host (the lock admits one daemon at a time), so a daemon that
        # restarts after a crash takes its own leases back at once; daemons elsewhere still wait.
        owner = f"{socket.gethostname()}:{lock_path}"
        _RUNTIMES[url] = build_runtime(url, owner)
        if once:
            ingest_job(url)
            reconcile_job(url)
            return
        stop = threading.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: stop.set())
        scheduler = BackgroundScheduler(
            timezone=UTC,
            jobstores={"default": SQLAlchemyJobStore(engine=_RUNTIMES[url].database.writer)},
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": 30},
        )
        scheduler.add_job(
            reconcile_job, "interval", seconds=tick, id="reconcile", replace_existing=True, args=[url]
        )
        scheduler.add_job(
            ingest_job, "interval", seconds=ingest_every, id="ingest", replace_existing=True, args=[url]
        )
        if policies_dir is not None:
            scheduler.add_job(
                trigger_job,
                "interval",
                seconds=max(tick, 30.0),
                id="triggers",
                replace_existing=True,
                args=[url, str(policies_dir)],
            )
        for path in sorted(policies_dir.glob("*.yaml")) if policies_dir else []:
            policy, _ = policies.load(path)
            if policy.trigger.type == "cron" and policy.trigger.cron:
                job_id = f"retrain:{policy.name}"
                scheduler.add_job(
                    retrain_job,
                    CronTrigger.from_crontab(policy.trigger.cron, timezone=UTC),
                    id=job_id,
                    replace_existing=True,
                    args=[url, str(path), job_id],
                )
        scheduler.start()
        log.info("daemon %s: reconcile every %gs, ingest every %gs", owner, tick, ingest_every)
        stop.wait()
        log.info("stopping: letting the current job finish")
        scheduler.shutdown(wait=True)
