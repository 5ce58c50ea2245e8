"""The daemon's scheduled jobs are exact: reconciled against the policy files (added, changed,
removed), a bad file skips only itself, a missed cron run runs once within its grace or is recorded
as skipped, and JSON logs carry a failing job's error. A real APScheduler on the registry's job
store; the retrain itself is replaced by a recorder (training is tested elsewhere)."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from apscheduler.job import Job
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger

from manager import daemon
from manager.db import Database
from manager.history import audit

pytestmark = pytest.mark.backends  # the job store on SQLite and on PostgreSQL

CRON_POLICY = """
name: {name}
target: {{endpoint: ep-{name}, candidate: {{model: churn, newestApproved: true}}}}
stepWeights: [50]
metrics:
  - {{name: 5xx, role: primary, source: cloudwatch, measure: errors_5xx, kind: errors, higherIsBetter: false}}
trigger:
  type: cron
  cron: "{cron}"
  misfireGrace: {grace}
  retrain: {{data: "sklearn:breast_cancer", config: train.yaml}}
"""


def write_policy(folder: Path, name: str, cron: str = "0 3 * * *", grace: str = "1h") -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(CRON_POLICY.format(name=name, cron=cron, grace=grace))
    return path


@pytest.fixture
def runtime(database: Database) -> Iterator[daemon.runtime.Runtime]:
    url = database.url
    daemon.RUNTIMES[url] = daemon.runtime.Runtime(database, None, None)
    daemon.policies.REPORTED.clear()
    yield daemon.RUNTIMES[url]
    if daemon.RUNTIMES[url].scheduler is not None:
        daemon.RUNTIMES[url].scheduler.shutdown(wait=False)
    del daemon.RUNTIMES[url]


@pytest.fixture
def ran(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Retrain runs, recorded instead of training (jobs name `manager.daemon:retrain_job`)."""
    calls: list[str] = []
    done = threading.Event()

    def record(url: str, policy_path: str, job_id: str) -> None:
        calls.append(job_id)
        done.set()

    monkeypatch.setattr(daemon, "retrain_job", record)
    return calls


def retrain_jobs(scheduler: BackgroundScheduler) -> dict[str, str]:
    return {j.id: str(j.trigger) for j in scheduler.get_jobs() if j.id.startswith("retrain:")}


def test_jobs_follow_the_policy_files(
    runtime: daemon.runtime.Runtime, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / "policies"
    folder.mkdir()
    write_policy(folder, "a")
    write_policy(folder, "b", cron="0 4 * * *")
    caplog.set_level(logging.INFO, "variantctl.daemon")
    scheduler = daemon.start_scheduler(runtime.database.url, 3600, 3600, folder)
    assert set(retrain_jobs(scheduler)) == {"retrain:a", "retrain:b"}
    before = scheduler.get_job("retrain:a").next_run_time

    write_policy(folder, "b", cron="30 5 * * *")  # changed
    (folder / "a.yaml").unlink()  # removed
    write_policy(folder, "c")  # added
    (folder / "bad.yaml").write_text(CRON_POLICY.format(name="bad", cron="61 * * * *", grace="1h"))
    done = daemon.policies.sync_jobs(scheduler, runtime.database.url, daemon.policies.read_policies(folder))
    assert done == {"added": ["retrain:c"], "changed": ["retrain:b"], "removed": ["retrain:a"]}
    assert "hour='5', minute='30'" in retrain_jobs(scheduler)["retrain:b"]
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "bad.yaml skipped" in errors[0] and "cron '61 * * * *'" in errors[0]

    # Nothing changed: nothing is touched, and the bad file's error is not logged again.
    caplog.clear()
    c_next = scheduler.get_job("retrain:c").next_run_time
    again = daemon.policies.sync_jobs(scheduler, runtime.database.url, daemon.policies.read_policies(folder))
    assert again == {"added": [], "changed": [], "removed": []}
    assert scheduler.get_job("retrain:c").next_run_time == c_next
    assert not [r for r in caplog.records if r.levelno == logging.ERROR]
    assert before is not None


def test_a_bad_policy_file_at_start_skips_only_itself(
    runtime: daemon.runtime.Runtime, tmp_path: Path
) -> None:
    folder = tmp_path / "policies"
    folder.mkdir()
    write_policy(folder, "good")
    (folder / "window.yaml").write_text(
        CRON_POLICY.format(name="w", cron="0 3 * * *", grace="1h").replace(
            "trigger:\n", "trigger:\n  windows: [Funday 09:00-17:00]\n"
        )
    )
    (folder / "twin.yaml").write_text(CRON_POLICY.format(name="good", cron="0 5 * * *", grace="1h"))
    scheduler = daemon.start_scheduler(runtime.database.url, 3600, 3600, folder)
    assert set(retrain_jobs(scheduler)) == {"retrain:good"}
    assert "Funday" in daemon.policies.REPORTED[str(folder / "window.yaml")]
    assert "already used by" in daemon.policies.REPORTED[str(folder / "twin.yaml")]


def far_cron() -> str:
    """A daily cron whose fire time is 12 hours from now: no run of its own falls within hours of
    the test, whatever the time of day (a fixed `0 3 * * *` made these tests fail from 03:00 to
    04:00 UTC, when the coalesced run due at 03:00 was within its grace and ran)."""
    return f"0 {(datetime.now(UTC).hour + 12) % 24} * * *"


def _persist_overdue_job(
    database: Database, policy: Path, job_id: str, late: timedelta, grace: int, cron: str
) -> None:
    """What a daemon that stopped before a nightly run leaves in the job store. Written through the
    store itself: a scheduler shut down with an overdue job may run it on the way out (APScheduler 3
    processes jobs once more after `shutdown`)."""
    holder = BackgroundScheduler(timezone=UTC)
    store = SQLAlchemyJobStore(engine=database.writer)
    store.start(holder, "default")
    store.add_job(
        Job(
            holder,
            id=job_id,
            func=daemon.policies.RETRAIN_JOB,
            trigger=CronTrigger.from_crontab(cron, timezone=UTC),
            executor="default",
            args=[database.url, str(policy), job_id],
            kwargs={},
            name=job_id,
            misfire_grace_time=grace,
            coalesce=True,
            max_instances=1,
            next_run_time=datetime.now(UTC) - late,
        )
    )


def test_a_run_missed_within_its_grace_runs_once_at_start(
    runtime: daemon.runtime.Runtime, tmp_path: Path, ran: list[str]
) -> None:
    folder = tmp_path / "policies"
    folder.mkdir()
    cron = far_cron()
    policy = write_policy(folder, "nightly", cron=cron)
    _persist_overdue_job(runtime.database, policy, "retrain:nightly", timedelta(minutes=20), 3600, cron)
    scheduler = daemon.start_scheduler(runtime.database.url, 3600, 3600, folder)
    deadline = time.monotonic() + 30
    while not ran and time.monotonic() < deadline:
        time.sleep(0.05)
    assert ran == ["retrain:nightly"]
    assert scheduler.get_job("retrain:nightly").next_run_time > datetime.now(UTC)


def test_a_run_missed_beyond_its_grace_is_skipped_and_recorded(
    runtime: daemon.runtime.Runtime, tmp_path: Path, ran: list[str]
) -> None:
    folder = tmp_path / "policies"
    folder.mkdir()
    cron = far_cron()
    policy = write_policy(folder, "nightly", cron=cron)
    _persist_overdue_job(runtime.database, policy, "retrain:nightly", timedelta(hours=3), 3600, cron)
    daemon.start_scheduler(runtime.database.url, 3600, 3600, folder)
    deadline = time.monotonic() + 30
    missed: list[audit.HistoryEvent] = []
    while not missed and time.monotonic() < deadline:
        missed = audit.history(runtime.database, audit.HistoryFilter(action="trigger.missed"))
        time.sleep(0.05)
    assert [e.subject_id for e in missed] == ["nightly"] and ran == []
    assert "was missed (the daemon was not running) and skipped" in (missed[0].reason or "")
    assert audit.verify(runtime.database).ok


def test_json_logs_carry_a_failing_jobs_error(
    runtime: daemon.runtime.Runtime, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lines: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(daemon.logs.JsonLines().format(record))

    def broken(url: str, policy_path: str, job_id: str) -> None:
        raise RuntimeError("the training data vanished")

    monkeypatch.setattr(daemon, "retrain_job", broken)
    handler = Collect()
    logging.getLogger("variantctl.daemon").addHandler(handler)
    try:
        folder = tmp_path / "policies"
        folder.mkdir()
        cron = far_cron()
        policy = write_policy(folder, "nightly", cron=cron)
        _persist_overdue_job(runtime.database, policy, "retrain:nightly", timedelta(minutes=1), 3600, cron)
        daemon.start_scheduler(runtime.database.url, 3600, 3600, folder)
        deadline = time.monotonic() + 30
        while not any("failed" in line for line in lines) and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        logging.getLogger("variantctl.daemon").removeHandler(handler)
    [failed] = [json.loads(line) for line in lines if "failed" in line]
    assert failed["job"] == "retrain:nightly" and failed["error_type"] == "RuntimeError"
    assert failed["error"] == "the training data vanished" and "Traceback" in failed["traceback"]


def test_a_retrain_that_would_pile_up_versions_is_skipped_and_recorded(
    runtime: daemon.runtime.Runtime, tmp_path: Path, artifact: Path
) -> None:
    from manager.registry import models

    with runtime.database.write() as session:
        models.register(session, models.NewVersion("churn", str(artifact), "sklearn", status="approved"), "t")
    policy = write_policy(tmp_path, "nightly")
    daemon.retrain_job(runtime.database.url, str(policy), "retrain:nightly")
    [skipped] = audit.history(runtime.database, audit.HistoryFilter(action="trigger.skipped"))
    assert "churn:1 is approved and was never rolled out" in (skipped.reason or "")
    assert not audit.history(runtime.database, audit.HistoryFilter(action="model.train")), "nothing trained"


def test_the_scheduled_time_of_a_cron_run_is_its_latest_fire_time() -> None:
    at = datetime(2026, 12, 3, 3, 0, 20, 500, tzinfo=UTC)
    hour = timedelta(hours=1)
    assert daemon.runtime.last_fire_time("0 3 * * *", at, hour) == datetime(2026, 12, 3, 3, tzinfo=UTC)
    assert daemon.runtime.last_fire_time("*/5 * * * *", at + timedelta(minutes=7), hour) == datetime(
        2026, 12, 3, 3, 5, tzinfo=UTC
    )
    assert daemon.runtime.last_fire_time("0 3 * * *", at, timedelta(0)) == at.replace(microsecond=0), (
        "none: now"
    )


@pytest.fixture
def nightly(
    runtime: daemon.runtime.Runtime, tmp_path: Path, artifact: Path, monkeypatch: pytest.MonkeyPatch
) -> Path:
    """A nightly retrain policy run at 03:00:20 (the clock fixed), with an approved version waiting,
    so each run that goes through is recorded and skipped without training."""
    from manager import clock
    from manager.registry import models

    monkeypatch.setattr(clock, "utcnow", lambda: datetime(2026, 12, 3, 3, 0, 20, tzinfo=UTC))
    with runtime.database.write() as session:
        models.register(session, models.NewVersion("churn", str(artifact), "sklearn", status="approved"), "t")
    return write_policy(tmp_path, "nightly")


def test_a_cron_run_is_claimed_once_per_scheduled_time(
    runtime: daemon.runtime.Runtime, nightly: Path
) -> None:
    """A second run for the same scheduled time (another leader after a failover) does nothing."""
    from manager.registry.tables import ScheduledRun

    for _ in range(2):
        daemon.retrain_job(runtime.database.url, str(nightly), "retrain:nightly")
    [fired] = audit.history(runtime.database, audit.HistoryFilter(action="trigger.fired"))
    assert json.loads(fired.payload)["scheduled"] == "2026-12-03T03:00:00+00:00"
    assert len(audit.history(runtime.database, audit.HistoryFilter(action="trigger.skipped"))) == 1
    with runtime.database.read() as session:
        [run] = session.query(ScheduledRun).all()
        assert (run.job_id, run.scheduled_for) == ("retrain:nightly", datetime(2026, 12, 3, 3, tzinfo=UTC))


def test_a_scheduled_job_of_a_daemon_that_no_longer_leads_writes_nothing(
    runtime: daemon.runtime.Runtime, nightly: Path
) -> None:
    """Several daemons share the registry: a job whose daemon lost the scheduler's lease (another holds
    it under a newer epoch) is refused at its first write; under its own unexpired lease it runs."""
    from manager.registry import leader
    from manager.registry.tables import LeaderLease

    now = datetime.now(UTC)
    with runtime.database.write() as session:
        session.add(
            LeaderLease(
                name="scheduler",
                holder="daemon-b",
                epoch=2,
                acquired_at=now,
                expires_at=now + timedelta(minutes=5),
            )
        )
    runtime.shared, runtime.instance, runtime.epoch = True, "daemon-a", 1
    with pytest.raises(leader.NotLeading, match="held by daemon-b under epoch 2"):
        daemon.retrain_job(runtime.database.url, str(nightly), "retrain:nightly")
    assert not audit.history(runtime.database, audit.HistoryFilter(action="trigger.fired"))
    runtime.instance, runtime.epoch = "daemon-b", 2
    daemon.retrain_job(runtime.database.url, str(nightly), "retrain:nightly")
    [fired] = audit.history(runtime.database, audit.HistoryFilter(action="trigger.fired"))
    assert json.loads(fired.payload) | {"scheduled": None} == {
        "job": "retrain:nightly",
        "scheduled": None,
        "daemon": "daemon-b",
        "epoch": 2,
    }
    with runtime.database.write() as session:
        lease = session.get(LeaderLease, "scheduler")
        assert lease is not None
        lease.expires_at = now - timedelta(seconds=1)
    with pytest.raises(leader.NotLeading, match="expired"):
        daemon.retrain_job(runtime.database.url, str(nightly), "retrain:nightly")
