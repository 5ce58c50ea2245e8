"""A cron trigger: retrain, gate offline, then start the rollout, with no human in the loop. Each run
is claimed once per scheduled time in the registry (`scheduled_runs`) and its writes are fenced by the
leader's epoch, so a failover never runs one twice; a run missed beyond its grace is recorded."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from manager.daemon import runtime as rt
from manager.daemon.policies import policy_event
from manager.history import audit
from manager.policy import windows

log = logging.getLogger("variantctl.daemon")


def retrain_job(url: str, policy_path: str, job_id: str) -> None:
    from manager import policy as policies
    from manager.clock import utcnow
    from manager.config import scheduler_actor

    actor = scheduler_actor(job_id)
    policy, text = policies.load(Path(policy_path))
    if policy.trigger.retrain is None or policy.trigger.cron is None or not _scheduled(policy):
        log.warning("%s: %s no longer has a cron trigger; not retraining", job_id, policy_path)
        return
    if not _claim(url, policy, job_id, actor):
        return
    if not windows.within(policy.trigger.windows, utcnow()):
        log.info("%s: outside the allowed windows; not retraining", job_id)
        return
    if not _packaged(policy) and _resume_own(url, policy, text, job_id, actor):
        return
    database = rt.RUNTIMES[url].database
    with database.read() as session:
        waiting = _why_not_retrain(session, policy)
    if waiting is not None:
        log.info("%s: not retraining: %s", job_id, waiting, extra={"fields": {"job": job_id}})
        with database.write() as session:
            audit.append(
                session,
                actor,
                policy_event("trigger.skipped", policy, f"not retraining: {waiting}", {"job": job_id}),
            )
        return
    _retrain(url, policy, text, job_id, actor)


def _scheduled(policy: Any) -> bool:
    return bool(policy.trigger.type in ("cron", "modelPackageApproved"))


def _packaged(policy: Any) -> bool:
    """The retrain registers a model package, and the package's approval starts the rollout."""
    return bool(policy.trigger.type == "modelPackageApproved")


def _claim(url: str, policy: Any, job_id: str, actor: str) -> bool:
    """Claim the run due now (`trigger.fired`); False when another run of this time claimed it."""
    from manager.clock import parse_duration, utcnow
    from manager.registry import leader

    runtime = rt.RUNTIMES[url]
    grace = parse_duration(policy.trigger.misfire_grace)
    scheduled = rt.last_fire_time(policy.trigger.cron, utcnow(), grace + timedelta(minutes=1))
    with runtime.database.write() as session:
        rt.fence(url, session)
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
            audit.append(session, actor, policy_event("trigger.fired", policy, fired, payload))
    if ran_by is not None:
        log.info("%s: the run due at %s was already claimed by %s", job_id, scheduled.isoformat(), ran_by)
    return ran_by is None


def _resume_own(url: str, policy: Any, text: str, job_id: str, actor: str) -> bool:
    """This job trained and approved a version, then stopped short of its rollout (fenced, or killed):
    roll it out now rather than skip night after night, or train yet another version."""
    from manager.clock import utcnow
    from manager.registry.rollouts import active_on
    from manager.rollout import launch

    database = rt.RUNTIMES[url].database
    with database.read() as session:
        orphan = _own_waiting(session, policy, actor)
    if orphan is None:
        return False
    with database.write() as session:
        rt.fence(url, session)
        if active_on(session, policy.target.endpoint) is not None:
            return False
        rollout = launch.start(session, policy, text, actor, utcnow())
        why = f"{orphan}, approved by an earlier run of {job_id} that did not start its rollout"
        audit.append(
            session,
            actor,
            policy_event("trigger.resumed", policy, why, {"job": job_id, "rollout": rollout.id}),
        )
    log.info("%s: started rollout %s of %s", job_id, rollout.id, why, extra={"fields": {"job": job_id}})
    return True


def _retrain(url: str, policy: Any, text: str, job_id: str, actor: str) -> None:
    from manager.clock import utcnow
    from manager.config import yamlfile
    from manager.rollout import launch
    from trainers.config import TrainConfig
    from trainers.datasets import load
    from trainers.gate import local_scorer
    from trainers.pipeline import retrain
    from trainers.sklearn_local import SklearnTrainer

    spec = policy.trigger.retrain
    database = rt.RUNTIMES[url].database
    config = yamlfile.load(Path(spec.config), TrainConfig)
    if _packaged(policy) and config.model_package is None:
        from trainers.config import ModelPackage

        group = policy.trigger.model_package_approved.group
        config = config.model_copy(update={"model_package": ModelPackage(group=group)})
    data = load(spec.data, spec.shift)
    log.info("%s: retraining %s on %s", job_id, config.model, spec.data, extra={"fields": {"job": job_id}})
    registry = rt.RUNTIMES[url].model_registry
    done = retrain(
        database, SklearnTrainer(), local_scorer(data.task), config, data, actor, registry=registry
    )
    log.info(
        "%s: trained %s; gate: %s (%s)",
        job_id,
        done.ref,
        done.status,
        done.gate,
        extra={"fields": {"job": job_id}},
    )
    if done.package is not None:
        log.info(
            "%s: registered %s as model package %s (%s): its approval starts the rollout",
            job_id,
            done.ref,
            done.package,
            done.package_status,
            extra={"fields": {"job": job_id, "package": done.package}},
        )
    if not done.approved or _packaged(policy):
        return
    with database.write() as session:
        rt.fence(url, session)  # training took a while: lead still, or leave the rollout to the leader
        rollout_id = launch.start(session, policy, text, actor, utcnow()).id
    log.info(
        "%s: started rollout %s of the new candidate %s",
        job_id,
        rollout_id,
        done.ref,
        extra={"fields": {"job": job_id, "rollout": rollout_id}},
    )


def _own_waiting(session: Any, policy: Any, actor: str) -> str | None:
    """The newest approved version of the policy's model, when this job's own run approved it and it
    was never rolled out, and the policy rolls out the newest approved version."""
    from manager.registry import models
    from manager.registry.rollouts import was_rolled_out

    if not policy.target.candidate.newest_approved:
        return None
    approved = models.list_versions(session, policy.target.candidate.model, "approved")
    if not approved or was_rolled_out(session, approved[0]):
        return None
    return approved[0].ref if models.gated_by(session, approved[0].ref) == actor else None


def _why_not_retrain(session: Any, policy: Any) -> str | None:
    """A retrain that could only pile up versions is skipped: while a rollout runs on the endpoint,
    or while an approved version of the model waits, never rolled out."""
    from manager.registry.rollouts import active_on, never_rolled_out

    active = active_on(session, policy.target.endpoint)
    if active is not None:
        return f"rollout {active.id} is {active.state} on {policy.target.endpoint}"
    if _packaged(policy):  # what waits is in the Model Registry, for a person: training goes on
        return None
    waiting = never_rolled_out(session, policy.target.candidate.model)
    return f"{waiting[0].ref} is approved and was never rolled out" if waiting else None


def record_missed(url: str, job_id: str, scheduled: datetime) -> None:
    """`trigger.missed` in the history, once per scheduled time (claimed like a run: a new leader that
    finds the same run missed does not record it again)."""
    from manager.config import scheduler_actor
    from manager.registry import leader

    runtime = rt.RUNTIMES[url]
    name = job_id.removeprefix("retrain:")
    due = scheduled.isoformat()
    reason = f"the scheduled retrain due at {due} was missed (the daemon was not running) and skipped"
    event = audit.Event("trigger.missed", "policy", name, reason, {"scheduled": due, "job": job_id})
    with runtime.database.write() as session:
        rt.fence(url, session)
        if leader.claim_run(session, job_id, scheduled, runtime.instance, runtime.epoch) is None:
            audit.append(session, scheduler_actor(job_id), event)
