"""The policy files the daemon watches: read (a bad file skipped with one clear error, logged once),
their cron retrain jobs kept in step with them, and the history events their triggers write."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC
from pathlib import Path
from typing import Any

from manager.errors import UserError
from manager.history import audit

log = logging.getLogger("variantctl.daemon")

# Job references as the job store holds them: `manager.daemon` re-exports every job under these names
# (stores written by earlier versions name them so; keep both in step).
RETRAIN_JOB = "manager.daemon:retrain_job"


@dataclass(frozen=True)
class PolicyFile:
    path: Path
    policy: Any  # RolloutPolicy
    text: str


def policy_event(action: str, policy: Any, reason: str, payload: dict[str, Any]) -> audit.Event:
    """A `trigger.*` history event about `policy`, on its endpoint."""
    return audit.Event(action, "policy", policy.name, reason, payload, policy.target.endpoint)


REPORTED: dict[str, str] = {}  # a bad policy file's error, logged once until the file changes


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
        if REPORTED.pop(str(path), None) is not None:
            log.info("%s: valid again", path)
        found.append(PolicyFile(path, policy, text))
    return found


def _report(path: str, error: str) -> None:
    if REPORTED.get(path) == error:
        return
    REPORTED[path] = error
    log.error("policy %s skipped: %s", path, error, extra={"fields": {"policy": path, "error": error}})


def sync_jobs(scheduler: Any, url: str, files: list[PolicyFile]) -> dict[str, list[str]]:
    """The cron retrain jobs exactly as the policies say: added, changed or removed, each logged. An
    unchanged job is left alone, so its next run time (and a run missed while the daemon was down)
    is kept."""
    done: dict[str, list[str]] = {"added": [], "changed": [], "removed": []}
    desired = {
        f"retrain:{f.policy.name}": f
        for f in files
        if f.policy.trigger.type in ("cron", "modelPackageApproved") and f.policy.trigger.cron is not None
    }
    existing = {job.id: job for job in scheduler.get_jobs() if job.id.startswith("retrain:")}
    for job_id in existing.keys() - desired.keys():
        scheduler.remove_job(job_id)
        done["removed"].append(job_id)
        log.info("job %s removed: no policy asks for it any more", job_id, extra={"fields": {"job": job_id}})
    for job_id, found in sorted(desired.items()):
        job = existing.get(job_id)
        if _place_retrain(scheduler, url, job_id, found, job):
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


def _place_retrain(scheduler: Any, url: str, job_id: str, found: PolicyFile, job: Any) -> bool:
    """(Re)place one cron retrain job unless it is already as the policy says; whether it was."""
    from apscheduler.triggers.cron import CronTrigger

    from manager.clock import parse_duration

    trigger = CronTrigger.from_crontab(found.policy.trigger.cron, timezone=UTC)
    grace = max(1, int(parse_duration(found.policy.trigger.misfire_grace).total_seconds()))
    args = [url, str(found.path), job_id]
    if (
        job is not None
        and str(job.trigger) == str(trigger)
        and list(job.args) == args
        and job.misfire_grace_time == grace
    ):
        return False
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
    return True
