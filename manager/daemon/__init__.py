"""`variantctl daemon`: APScheduler 3 runs the reconcile tick, ground-truth ingestion, replay steps
and the cron retrains that policies ask for, with one scheduler per registry: an flock beside a SQLite
file, or a leader lease in a PostgreSQL registry that several daemons share (`run_shared`).

Jobs live in the registry's database (SQLAlchemyJobStore) with fixed ids, so restarts never
duplicate them. The cron jobs are reconciled against the policy files at start and every policies
tick: added, changed, removed, each logged; one left unchanged keeps its next run time, so a run
missed while the daemon was down runs once at start within its `misfireGrace`, or is skipped and
recorded. A cron run is claimed once per scheduled time in the registry (`scheduled_runs`), and a
scheduled job's writes are fenced by the leader's epoch, so a failover never runs one twice. SIGTERM
lets the current job finish, then exits.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import signal
import socket
import threading
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TextIO, cast

from manager.db import Database
from manager.errors import UserError
from manager.history import audit
from manager.policy import windows

log = logging.getLogger("variantctl.daemon")


class JsonLines(logging.Formatter):
    """One JSON object per line; an exception comes with its type, message and traceback."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            **getattr(record, "fields", {}),
        }
        if record.exc_info and record.exc_info[1] is not None:
            error = record.exc_info[1]
            line.setdefault("error_type", type(error).__name__)
            line.setdefault("error", str(error))
            line.setdefault("traceback", self.formatException(record.exc_info))
        return json.dumps(line, default=str)


class OneLine(logging.Formatter):
    """Text logs: one line per event; an exception adds its type and message, and its traceback
    only with VARIANTCTL_DEBUG=1 (the JSON format always carries it, in a field)."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        exc_info, record.exc_info, record.exc_text = record.exc_info, None, None
        try:
            line = super().format(record)
        finally:
            record.exc_info = exc_info
        if exc_info and exc_info[1] is not None:
            error = exc_info[1]
            detail = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
            if detail not in line:
                line += f" [{detail}]"
            if os.environ.get("VARIANTCTL_DEBUG"):
                line += "\n" + self.formatException(exc_info)
        return line


def configure_logging(fmt: str) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(JsonLines() if fmt == "json" else OneLine())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    # A job's exception is logged by `_on_job_event`, with the job and the error as fields.
    logging.getLogger("apscheduler.executors").setLevel(logging.CRITICAL)
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
    replayer: Any = None
    scheduler: Any = None  # set once the scheduler runs: the policies job keeps its cron jobs in step
    instance: str = ""  # this daemon, as the registry's leases and scheduled runs name it
    shared: bool = False  # one of several daemons (PostgreSQL): scheduled jobs are fenced by `epoch`
    epoch: int | None = None  # the scheduler lease's epoch while this daemon leads
    webhook_retry: timedelta = timedelta(seconds=2)  # the first wait before a failed delivery is retried
    webhook_keep: timedelta = timedelta(days=30)  # how long a delivered delivery is kept


def fence(url: str, session: Any) -> None:
    """A scheduled job's write goes through only while this daemon leads the scheduler under the epoch
    it holds (checked in the write's own transaction); a lone daemon is the only one (its lock)."""
    from manager.registry import leader

    runtime = _RUNTIMES[url]
    if runtime.shared:
        leader.check(session, runtime.instance, runtime.epoch)


def last_fire_time(cron: str, now: datetime, lookback: timedelta) -> datetime:
    """The scheduled time a cron run at `now` is for: its latest fire time at or before `now`, looking
    back at most `lookback` (a run is never later than its misfire grace); `now` itself if none."""
    from apscheduler.triggers.cron import CronTrigger

    trigger = CronTrigger.from_crontab(cron, timezone=UTC)
    fire = trigger.get_next_fire_time(None, now - lookback)
    latest = None
    while fire is not None and fire <= now:
        latest = fire
        fire = trigger.get_next_fire_time(fire, fire + timedelta(microseconds=1))
    return (latest or now.replace(microsecond=0)).astimezone(UTC)


_RUNTIMES: dict[str, Runtime] = {}


def build_runtime(url: str, owner: str) -> Runtime:
    import boto3

    from manager.config import DaemonTuning
    from manager.groundtruth.ingest import GroundTruthIngestor
    from manager.metrics.cloudwatch import CloudWatchSource
    from manager.platforms.sagemaker import RETRIES, SageMakerPlatform
    from manager.rollout.reconcile import Reconciler
    from manager.rollout.replay import Replayer

    tuning = DaemonTuning.from_env()
    database = Database(url)
    from manager.daemon.telemetry import TimedPlatform

    platform = cast(SageMakerPlatform, TimedPlatform(SageMakerPlatform.connect()))
    metrics = CloudWatchSource(
        boto3.client("cloudwatch", config=RETRIES), lag=tuning.metrics_lag, period=tuning.metrics_period
    )
    s3 = boto3.client("s3", config=RETRIES)
    return Runtime(
        database=database,
        instance=owner,
        reconciler=Reconciler(
            database, platform, metrics, owner=owner, actor="daemon", lease_ttl=tuning.endpoint_lease
        ),
        ingestor=GroundTruthIngestor(
            database, s3_client=s3, settle=tuning.capture_settle, lookback=tuning.ingest_lookback
        ),
        replayer=Replayer(database, platform, s3_client=s3, owner=owner),
        webhook_retry=tuning.webhook_retry,
        webhook_keep=tuning.webhook_keep,
    )


def reconcile_job(url: str) -> None:
    from manager.daemon import telemetry

    with telemetry.TICK_SECONDS.time():
        outcomes = _RUNTIMES[url].reconciler.tick()
    for outcome in outcomes:
        telemetry.TICK_RESULTS.labels(outcome.did).inc()
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


def webhook_job(url: str) -> None:
    """Event deliveries and gate calls (`manager.webhooks.worker`), apart from the reconcile tick."""
    from manager.webhooks import worker

    runtime = _RUNTIMES[url]
    done = worker.run(runtime.database, runtime.webhook_retry, keep=runtime.webhook_keep)
    if done.delivered or done.failed or done.gates or done.pruned:
        log.info(
            "webhooks: %d delivered, %d failed attempts, %d gate calls, %d old deliveries pruned",
            done.delivered,
            done.failed,
            done.gates,
            done.pruned,
            extra={"fields": {"delivered": done.delivered, "failed": done.failed, "gates": done.gates}},
        )


def replay_job(url: str, budget: float = 20.0) -> None:
    """Replay steps: plan, then send queued requests to candidates at weight 0 for up to `budget`
    seconds (less than the job's interval, so runs never pile up)."""
    from datetime import timedelta

    runtime = _RUNTIMES[url]
    if runtime.replayer is None:
        return
    runtime.replayer.budget = timedelta(seconds=budget)
    for report in runtime.replayer.run():
        if report.planned or report.refused or report.sent or report.given_up:
            fields = {k: v for k, v in vars(report).items() if v}
            log.log(
                logging.WARNING if report.refused or report.given_up else logging.INFO,
                "replay for rollout %s: %s",
                report.rollout_id,
                report.refused
                or ", ".join(
                    f"{n} {k.replace('_', ' ')}"
                    for k, n in fields.items()
                    if k in ("planned", "sent", "errors", "retried", "given_up")
                ),
                extra={"fields": {"job": "replay", **fields}},
            )


def ingest_job(url: str) -> None:
    """Ground truth for every active rollout with quality metrics; one endpoint's trouble (a policy
    that no longer parses, an unreachable bucket) is logged and never stops the others."""
    from sqlalchemy import select

    from manager import policy as policies
    from manager.groundtruth.ingest import QualitySpec
    from manager.registry.tables import Rollout
    from manager.registry.vocabulary import ACTIVE_ROLLOUT_STATES

    runtime = _RUNTIMES[url]
    with runtime.database.read() as session:
        rows = list(
            session.execute(
                select(Rollout.id, Rollout.policy_yaml).where(Rollout.state.in_(ACTIVE_ROLLOUT_STATES))
            )
        )
    for rollout_id, text in rows:
        fields = {"rollout": rollout_id, "job": "ingest"}
        try:
            policy = policies.parse(text, f"rollout {rollout_id}'s policy")
            target = policy.target
            if not (
                target.capture_destination
                and target.ground_truth
                and any(m.source == "quality" for m in policy.metrics)
            ):
                continue
            fields["endpoint"] = target.endpoint
            report = runtime.ingestor.run(
                QualitySpec(
                    target.endpoint, target.capture_destination, target.ground_truth, kind=policy.quality_kind
                )
            )
        except Exception as exc:
            expected = isinstance(exc, UserError | OSError) or type(exc).__module__.startswith("botocore")
            log.error(
                "ingest for rollout %s failed: %s: %s",
                rollout_id,
                type(exc).__name__,
                str(exc).splitlines()[0] if str(exc) else "",
                exc_info=not expected,
                extra={"fields": {**fields, "error_type": type(exc).__name__, "error": str(exc)}},
            )
            continue
        if (
            report.predictions
            or report.labels
            or report.malformed
            or report.file_errors
            or report.shadow_answers
            or report.expired_shadow_answers
        ):
            counts = {
                "predictions": report.predictions,
                "labels": report.labels,
                "joined": report.joined,
                "duplicates": report.duplicates,
                "malformed": report.malformed,
                "outside_rollout": report.outside_rollout,
                "replayed": report.replayed,
                "shadow_answers": report.shadow_answers,
                "shadow_pairs": report.shadow_pairs,
                "expired_shadow_answers": report.expired_shadow_answers,
                "expired": report.expired_predictions + report.expired_labels,
                "unreadable_files": len(report.file_errors),
            }
            log.log(
                logging.WARNING if report.file_errors else logging.INFO,
                "ingested %s: %s%s",
                target.endpoint,
                ", ".join(f"{n} {k.replace('_', ' ')}" for k, n in counts.items() if n),
                f"; {report.file_errors[0]}" if report.file_errors else "",
                extra={"fields": {**fields, **counts}},
            )


def retrain_job(url: str, policy_path: str, job_id: str) -> None:
    """A cron trigger: retrain, gate offline, then start the rollout, with no human in the loop."""
    from manager import policy as policies
    from manager.clock import parse_duration, utcnow
    from manager.config import scheduler_actor
    from manager.config import yamlfile as yamlconfig
    from manager.registry import leader
    from manager.registry.rollouts import active_on
    from manager.rollout import launch
    from trainers.config import TrainConfig
    from trainers.datasets import load
    from trainers.gate import local_scorer
    from trainers.pipeline import retrain
    from trainers.sklearn_local import SklearnTrainer

    actor = scheduler_actor(job_id)
    policy, text = policies.load(Path(policy_path))
    spec = policy.trigger.retrain
    if spec is None or policy.trigger.type != "cron" or policy.trigger.cron is None:
        log.warning("%s: %s no longer has a cron trigger; not retraining", job_id, policy_path)
        return
    runtime = _RUNTIMES[url]
    database = runtime.database
    grace = parse_duration(policy.trigger.misfire_grace)
    scheduled = last_fire_time(policy.trigger.cron, utcnow(), grace + timedelta(minutes=1))
    with database.write() as session:
        fence(url, session)
        ran_by = leader.claim_run(session, job_id, scheduled, runtime.instance, runtime.epoch)
        if ran_by is None:
            payload: dict[str, Any] = {
                "job": job_id,
                "scheduled": scheduled.isoformat(),
                "daemon": runtime.instance,
            }
            if runtime.epoch is not None:
                payload["epoch"] = runtime.epoch
            fired = f"the scheduled retrain due at {scheduled.isoformat()} runs"
            event = audit.Event(
                "trigger.fired", "policy", policy.name, fired, payload, policy.target.endpoint
            )
            audit.append(session, actor, event)
    if ran_by is not None:
        log.info("%s: the run due at %s was already claimed by %s", job_id, scheduled.isoformat(), ran_by)
        return
    if not windows.within(policy.trigger.windows, utcnow()):
        log.info("%s: outside the allowed windows; not retraining", job_id)
        return
    orphan = _own_waiting(database, policy, actor)
    if orphan is not None:
        # This job trained and approved it, then stopped short of its rollout (fenced, or killed):
        # roll it out now rather than skip night after night, or train yet another version.
        with database.write() as session:
            fence(url, session)
            if active_on(session, policy.target.endpoint) is None:
                rollout = launch.start(session, policy, text, actor, utcnow())
                why = f"{orphan}, approved by an earlier run of {job_id} that did not start its rollout"
                event = audit.Event(
                    "trigger.resumed",
                    "policy",
                    policy.name,
                    why,
                    {"job": job_id, "rollout": rollout.id},
                    policy.target.endpoint,
                )
                audit.append(session, actor, event)
                log.info(
                    "%s: started rollout %s of %s", job_id, rollout.id, why, extra={"fields": {"job": job_id}}
                )
                return
    waiting = _why_not_retrain(database, policy)
    if waiting is not None:
        log.info("%s: not retraining: %s", job_id, waiting, extra={"fields": {"job": job_id}})
        with database.write() as session:
            event = audit.Event(
                "trigger.skipped",
                "policy",
                policy.name,
                f"not retraining: {waiting}",
                {"job": job_id},
                policy.target.endpoint,
            )
            audit.append(session, actor, event)
        return
    config = yamlconfig.load(Path(spec.config), TrainConfig)
    data = load(spec.data, spec.shift)
    log.info("%s: retraining %s on %s", job_id, config.model, spec.data, extra={"fields": {"job": job_id}})
    done = retrain(database, SklearnTrainer(), local_scorer(data.task), config, data, actor)
    log.info(
        "%s: trained %s; gate: %s (%s)",
        job_id,
        done.ref,
        done.status,
        done.gate,
        extra={"fields": {"job": job_id}},
    )
    if done.approved:
        with database.write() as session:
            fence(url, session)  # training took a while: lead still, or leave the rollout to the leader
            rollout = launch.start(session, policy, text, actor, utcnow())
            rollout_id = rollout.id
        log.info(
            "%s: started rollout %s of the new candidate %s",
            job_id,
            rollout_id,
            done.ref,
            extra={"fields": {"job": job_id, "rollout": rollout_id}},
        )


def _own_waiting(database: Database, policy: Any, actor: str) -> str | None:
    """The newest approved version of the policy's model, when this job's own run approved it and it
    was never rolled out, and the policy rolls out the newest approved version."""
    from sqlalchemy import select

    from manager.registry import models
    from manager.registry.tables import AuditEvent, Rollout

    if not policy.target.candidate.newest_approved:
        return None
    with database.read() as session:
        approved = models.list_versions(session, policy.target.candidate.model, "approved")
        if not approved:
            return None
        newest = approved[0]
        tried = session.scalar(select(Rollout.id).where(Rollout.candidate_version_id == newest.id).limit(1))
        gated_by = session.scalar(
            select(AuditEvent.actor)
            .where(
                AuditEvent.subject_type == "model_version",
                AuditEvent.subject_id == newest.ref,
                AuditEvent.action == "model.gate",
            )
            .order_by(AuditEvent.seq.desc())
            .limit(1)
        )
        return newest.ref if tried is None and gated_by == actor else None


def _why_not_retrain(database: Database, policy: Any) -> str | None:
    """A retrain that could only pile up versions is skipped: while a rollout runs on the endpoint,
    or while an approved version of the model waits, never rolled out."""
    from sqlalchemy import select

    from manager.registry import models
    from manager.registry.rollouts import active_on
    from manager.registry.tables import Rollout

    with database.read() as session:
        active = active_on(session, policy.target.endpoint)
        if active is not None:
            return f"rollout {active.id} is {active.state} on {policy.target.endpoint}"
        for version in models.list_versions(session, policy.target.candidate.model, "approved"):
            tried = session.scalar(
                select(Rollout.id).where(Rollout.candidate_version_id == version.id).limit(1)
            )
            if tried is None:
                return f"{version.ref} is approved and was never rolled out"
    return None


def trigger_job(url: str, policies_dir: str) -> None:
    """The policies job: keeps the cron jobs in step with the policy files, then, for
    `trigger: newApprovedCandidate`, rolls out the newest approved version of the policy's model when
    it is neither serving nor already tried, and the endpoint has no rollout under way. One policy's
    trouble never stops the others."""
    from manager.clock import utcnow

    files = read_policies(Path(policies_dir))
    runtime = _RUNTIMES[url]
    if runtime.scheduler is not None:
        sync_jobs(runtime.scheduler, url, files)
    for found in files:
        policy = found.policy
        if policy.trigger.type != "newApprovedCandidate" or not windows.within(
            policy.trigger.windows, utcnow()
        ):
            continue
        try:
            _trigger(url, policy, found.text)
        except Exception as exc:
            log.error(
                "trigger:%s failed: %s: %s",
                policy.name,
                type(exc).__name__,
                exc,
                exc_info=True,
                extra={"fields": {"job": f"trigger:{policy.name}", "policy": str(found.path)}},
            )


@dataclass(frozen=True)
class PolicyFile:
    path: Path
    policy: Any  # RolloutPolicy
    text: str


_REPORTED: dict[str, str] = {}  # a bad policy file's error, logged once until the file changes


def read_policies(policies_dir: Path | None) -> list[PolicyFile]:
    """Every valid policy in the directory. A file that is not a valid policy, or repeats another's
    name, is skipped with one clear error (logged once, again only if the error changes)."""
    from manager import policy as policies

    if policies_dir is None:
        return []
    found: list[PolicyFile] = []
    names: dict[str, Path] = {}
    try:
        paths = sorted([*policies_dir.glob("*.yaml"), *policies_dir.glob("*.yml")])
    except OSError as exc:
        _report(str(policies_dir), f"cannot list the policies: {exc.strerror or exc}")
        return []
    for path in paths:
        try:
            policy, text = policies.load(path)
        except UserError as exc:
            _report(str(path), str(exc).splitlines()[0])
            continue
        if policy.name in names:
            _report(str(path), f"policy name {policy.name!r} is already used by {names[policy.name]}")
            continue
        names[policy.name] = path
        if _REPORTED.pop(str(path), None) is not None:
            log.info("%s: valid again", path)
        found.append(PolicyFile(path, policy, text))
    return found


def _report(path: str, error: str) -> None:
    if _REPORTED.get(path) == error:
        return
    _REPORTED[path] = error
    log.error("policy %s skipped: %s", path, error, extra={"fields": {"policy": path, "error": error}})


RETRAIN_JOB = "manager.daemon:retrain_job"


def sync_jobs(scheduler: Any, url: str, files: list[PolicyFile]) -> dict[str, list[str]]:
    """The cron retrain jobs exactly as the policies say: added, changed or removed, each logged. An
    unchanged job is left alone, so its next run time (and a run missed while the daemon was down)
    is kept."""
    from apscheduler.triggers.cron import CronTrigger

    from manager.clock import parse_duration

    done: dict[str, list[str]] = {"added": [], "changed": [], "removed": []}
    desired = {f"retrain:{f.policy.name}": f for f in files if f.policy.trigger.type == "cron"}
    existing = {job.id: job for job in scheduler.get_jobs() if job.id.startswith("retrain:")}
    for job_id in existing.keys() - desired.keys():
        scheduler.remove_job(job_id)
        done["removed"].append(job_id)
        log.info("job %s removed: no policy asks for it any more", job_id, extra={"fields": {"job": job_id}})
    for job_id, found in sorted(desired.items()):
        trigger = CronTrigger.from_crontab(found.policy.trigger.cron, timezone=UTC)
        grace = max(1, int(parse_duration(found.policy.trigger.misfire_grace).total_seconds()))
        args = [url, str(found.path), job_id]
        job = existing.get(job_id)
        if (
            job is not None
            and str(job.trigger) == str(trigger)
            and list(job.args) == args
            and job.misfire_grace_time == grace
        ):
            continue
        scheduler.add_job(
            RETRAIN_JOB,
            trigger,
            id=job_id,
            args=args,
            replace_existing=True,
            misfire_grace_time=grace,
            coalesce=True,
            max_instances=1,
        )
        what = "changed" if job is not None else "added"
        done[what].append(job_id)
        log.info(
            "job %s %s: cron %r from %s",
            job_id,
            what,
            found.policy.trigger.cron,
            found.path,
            extra={"fields": {"job": job_id, "policy": str(found.path)}},
        )
    return done


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


def record_missed(url: str, job_id: str, scheduled: datetime) -> None:
    """`trigger.missed` in the history, once per scheduled time (claimed like a run: a new leader that
    finds the same run missed does not record it again)."""
    from manager.config import scheduler_actor
    from manager.history import audit
    from manager.registry import leader

    runtime = _RUNTIMES[url]
    name = job_id.removeprefix("retrain:")
    due = scheduled.isoformat()
    reason = f"the scheduled retrain due at {due} was missed (the daemon was not running) and skipped"
    event = audit.Event("trigger.missed", "policy", name, reason, {"scheduled": due, "job": job_id})
    with runtime.database.write() as session:
        fence(url, session)
        if leader.claim_run(session, job_id, scheduled, runtime.instance, runtime.epoch) is None:
            audit.append(session, scheduler_actor(job_id), event)


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
        fence(url, session)
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

    from manager.history import audit
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


@dataclass(frozen=True)
class DigestSchedule:
    """Where the daemon writes signed digests of the history, how often, with which key."""

    location: str
    every: float = 3600.0
    key_path: str | None = None  # None: the default signing key


def digest_job(url: str, location: str, key_path: str | None) -> None:
    """Sign the history's head, chained to the previous digest at `location`."""
    from manager.history import digests

    runtime = _RUNTIMES[url]
    with runtime.database.write() as session:
        fence(url, session)
    private = digests.load_private(Path(key_path) if key_path else digests.default_key_path())
    made = digests.write_digest(runtime.database, digests.store_for(location), private)
    log.info("digest %s: seqs %d..%d signed, in %s", made.name, made.first_seq, made.last_seq, location)


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
        _RUNTIMES[url] = build_runtime(url, owner)
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

    runtime = _RUNTIMES[url] = build_runtime(url, instance)
    runtime.shared = True
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

        runtime = _RUNTIMES[self.url]
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
        _RUNTIMES[self.url].scheduler = None
        _RUNTIMES[self.url].epoch = None  # a job still running is fenced from here on
        scheduler.shutdown(wait=False)

    def resign(self) -> None:
        """A clean stop: the lease is given up at once, so another daemon need not wait for it."""
        from manager.registry import leader

        if self.scheduler is None or self.epoch is None:
            return
        self.scheduler.shutdown(wait=True)
        self.scheduler = None
        _RUNTIMES[self.url].epoch = None
        try:
            with _RUNTIMES[self.url].database.write() as session:
                leader.release(session, self.instance, self.epoch)
        except Exception as exc:
            log.warning("leader lease: could not give it up (it expires by itself): %s", exc)


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

    runtime = _RUNTIMES[url]
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
    runtime = _RUNTIMES[url]
    runtime.scheduler = scheduler
    fixed: dict[str, tuple[str, float, list[Any]]] = {}
    if not shared:  # with several daemons each runs these itself (run_shared); the leader the rest
        fixed.update(own_jobs(url, tick, ingest_every))
    if policies_dir is not None:
        fixed["triggers"] = ("manager.daemon:trigger_job", max(tick, 30.0), [url, str(policies_dir)])
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
