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

The modules: `scheduler` (the scheduler, its lock, its jobs placed), `leader` (the lease among
several daemons), `runtime` (what jobs share, and the fence), `policies` (the policy files and their
cron jobs), `jobs/` (one module per job), `logs`.

The job store names each job by a reference into this package (`manager.daemon:reconcile_job`, ...),
as every earlier version wrote them: the jobs are re-exported here under those names, so that a
registry's stored jobs keep running after an upgrade.
"""

from manager.daemon.jobs.digests import DigestSchedule, digest_job
from manager.daemon.jobs.ingest import ingest_job
from manager.daemon.jobs.packages import package_job
from manager.daemon.jobs.reconcile import reconcile_job
from manager.daemon.jobs.replay import replay_job
from manager.daemon.jobs.retrain import retrain_job
from manager.daemon.jobs.triggers import trigger_job
from manager.daemon.jobs.webhooks import webhook_job
from manager.daemon.logs import configure_logging
from manager.daemon.runtime import RUNTIMES
from manager.daemon.scheduler import run, start_scheduler

__all__ = [
    "RUNTIMES",
    "DigestSchedule",
    "configure_logging",
    "digest_job",
    "ingest_job",
    "package_job",
    "reconcile_job",
    "replay_job",
    "retrain_job",
    "run",
    "start_scheduler",
    "trigger_job",
    "webhook_job",
]
