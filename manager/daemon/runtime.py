"""What the daemon's jobs share, built once per process: the registry, the reconciler, the ground-truth
ingestor and the replayer (jobs are stored in the job store by reference, without any of it), and the
fence a scheduled job's writes go through."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from manager.db import Database


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
    model_registry: Any = None  # the SageMaker Model Registry and its event queue (platforms.packages)
    dashboard_url: str | None = None  # where a webhook event's link points (DaemonTuning)
    tick: float = 0.0  # seconds between reconcile ticks (0: a `--once` run, which is no daemon)
    started_at: datetime | None = None
    heartbeat_at: float = 0.0  # when this daemon last wrote its tick (monotonic): at most every 2 s


RUNTIMES: dict[str, Runtime] = {}  # by registry URL: the jobs' only argument is the URL


def fence(url: str, session: Any) -> None:
    """A scheduled job's write goes through only while this daemon leads the scheduler under the epoch
    it holds (checked in the write's own transaction); a lone daemon is the only one (its lock)."""
    from manager.registry import leader

    runtime = RUNTIMES[url]
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


def build_runtime(url: str, owner: str) -> Runtime:
    """The runtime on AWS's (or the local SageMaker's) clients, from `manager.platforms.aws`."""
    from manager.config import DaemonTuning
    from manager.groundtruth.ingest import GroundTruthIngestor
    from manager.metrics.cloudwatch import CloudWatchSource
    from manager.platforms import aws, factory
    from manager.platforms.packages import ModelRegistry
    from manager.platforms.sagemaker import SageMakerPlatform
    from manager.rollout.reconcile import Reconciler
    from manager.rollout.replay import Replayer
    from manager.telemetry import TimedPlatform

    tuning = DaemonTuning.from_env()
    database = Database(url)
    platform = cast(SageMakerPlatform, TimedPlatform(factory.platform()))
    metrics = CloudWatchSource(aws.client("cloudwatch"), lag=tuning.metrics_lag, period=tuning.metrics_period)
    s3 = aws.client("s3")
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
        dashboard_url=tuning.dashboard_url,
        model_registry=ModelRegistry(aws.client("sagemaker"), aws.client("sqs"), s3),
    )
