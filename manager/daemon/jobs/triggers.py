"""The policies job: keeps the cron jobs in step with the policy files, then, for `trigger:
newApprovedCandidate`, rolls out the newest approved version of the policy's model when it is neither
serving nor already tried, and the endpoint has no rollout under way. One policy's trouble never
stops the others."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from manager.daemon import runtime as rt
from manager.daemon.policies import policy_event, read_policies, sync_jobs
from manager.errors import UserError
from manager.history import audit
from manager.policy import windows

log = logging.getLogger("variantctl.daemon")


def trigger_job(url: str, policies_dir: str) -> None:
    from manager.clock import utcnow

    files = read_policies(Path(policies_dir))
    runtime = rt.RUNTIMES[url]
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


def _trigger(url: str, policy: Any, text: str) -> None:
    from manager.clock import utcnow
    from manager.config import scheduler_actor
    from manager.registry.rollouts import active_on, was_rolled_out
    from manager.rollout import launch

    job_id = f"trigger:{policy.name}"
    actor = scheduler_actor(job_id)
    database = rt.RUNTIMES[url].database
    with database.write() as session:
        rt.fence(url, session)
        try:
            candidate = launch.candidate(session, policy)
        except UserError:
            return  # nothing approved yet: the usual state between retrains
        if was_rolled_out(session, candidate) or active_on(session, policy.target.endpoint) is not None:
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
    last = audit.latest(session, "trigger.refused", policy.name)
    if last is not None and last.reason == reason and json.loads(last.payload).get("candidate") == candidate:
        return
    payload = {"candidate": candidate, "trigger": policy.trigger.type}
    audit.append(session, actor, policy_event("trigger.refused", policy, reason, payload))
