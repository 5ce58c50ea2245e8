"""The model package job, on the leader: for each `modelPackageApproved` policy, read its event queue
(if it has one), list its group's approved versions when an event names the group or its poll is
due, and take the newest (`rollout.packages.take`); then send the outcomes waiting to be written back.

Events only say "look now": what is rolled out is decided from ListModelPackages and the registry's
claims, so a duplicated, late or out-of-order event changes nothing, and a lost one is caught by the
next poll. A message is deleted only after the decision it prompted is committed: a daemon killed in
between leaves it to come back after its visibility timeout, to this daemon or the next leader.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from pathlib import Path
from typing import Any

from manager.crashpoints import crash_point
from manager.daemon import runtime as rt
from manager.daemon.policies import read_policies
from manager.errors import UserError

log = logging.getLogger("variantctl.daemon")
LAST_POLL: dict[tuple[str, str], float] = {}  # (registry URL, policy) -> monotonic time of its last poll
MALFORMED: Counter[str] = Counter()  # queue URL -> messages that were not Model Package events
QUEUE_ERRORS: dict[str, str] = {}  # queue URL -> the error reading it last met (logged once, not each tick)


def package_job(url: str, policies_dir: str) -> None:
    runtime = rt.RUNTIMES[url]
    registry = runtime.model_registry
    if registry is None:
        return
    files = read_policies(Path(policies_dir)) if policies_dir else []
    watching = [f for f in files if f.policy.trigger.type == "modelPackageApproved"]
    events, receipts = _read_queues(registry, watching)
    if events:
        crash_point("packages.read")  # tests: killed between reading events and acting on them
    for found in watching:
        settings = found.policy.trigger.model_package_approved
        key = (url, found.policy.name)
        due = time.monotonic() - LAST_POLL.get(key, float("-inf")) >= settings.poll_seconds
        if not due and settings.group.lower() not in events:
            continue
        try:
            _poll(url, registry, found.policy, found.text)
            LAST_POLL[key] = time.monotonic()
        except Exception as exc:  # one policy's trouble never stops the others
            log.error(
                "packages:%s failed: %s: %s",
                found.policy.name,
                type(exc).__name__,
                exc,
                exc_info=not isinstance(exc, UserError),
                extra={"fields": {"job": f"packages:{found.policy.name}"}},
            )
            receipts = [r for r in receipts if r[2] != settings.group.lower()]  # back later, not lost
    for queue_url, receipt, _group in receipts:
        registry.delete(queue_url, receipt)
    _write_back(url, registry)


def _read_queues(registry: Any, watching: list[Any]) -> tuple[set[str], list[tuple[str, str, str]]]:
    """The groups the queues' events name, and every message read (queue, receipt, group)."""
    groups: set[str] = set()
    receipts: list[tuple[str, str, str]] = []
    queues: dict[str, int] = {}
    for found in watching:
        settings = found.policy.trigger.model_package_approved
        if settings.queue_url:
            queues[settings.queue_url] = max(queues.get(settings.queue_url, 0), settings.visibility_seconds)
    for queue_url, visibility in sorted(queues.items()):
        try:
            events = registry.receive(queue_url, visibility=visibility)
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            if QUEUE_ERRORS.get(queue_url) != error:
                QUEUE_ERRORS[queue_url] = error
                log.warning("packages: cannot read the queue %s: %s (polling goes on)", queue_url, error)
            continue
        if QUEUE_ERRORS.pop(queue_url, None) is not None:
            log.info("packages: the queue %s is readable again", queue_url)
        for event in events:
            if event.group is None:
                MALFORMED[queue_url] += 1
                log.warning(
                    "packages: a message on %s is not a Model Package State Change event; deleted "
                    "(%d so far)",
                    queue_url,
                    MALFORMED[queue_url],
                )
                receipts.append((queue_url, event.receipt, ""))
                continue
            groups.add(event.group.lower())
            receipts.append((queue_url, event.receipt, event.group.lower()))
    return groups, receipts


def _poll(url: str, registry: Any, policy: Any, text: str) -> None:
    from manager.clock import utcnow
    from manager.config import scheduler_actor
    from manager.daemon.jobs.triggers import record_refusal
    from manager.rollout import packages

    approved = registry.approved(policy.trigger.model_package_approved.group)
    if not approved:
        return
    actor = scheduler_actor(f"packages:{policy.name}")
    database = rt.RUNTIMES[url].database
    try:
        with database.write() as session:
            rt.fence(url, session)
            taken = packages.take(session, policy, text, approved, actor, utcnow(), registry.describe)
    except UserError as exc:
        log.warning("packages:%s: cannot start a rollout of %s: %s", policy.name, approved[0].ref, exc)
        with database.write() as session:
            record_refusal(session, actor, policy, approved[0].ref, str(exc))
        return
    for ref in taken.skipped:
        log.info("packages:%s: skipped %s", policy.name, ref)
    if taken.rollout is not None:
        log.info(
            "packages:%s: %s approved: started rollout %s",
            policy.name,
            taken.package.ref,
            taken.rollout.id,
            extra={"fields": {"rollout": taken.rollout.id, "package": taken.package.arn}},
        )


def _write_back(url: str, registry: Any) -> None:
    """Each due write-back sent once; a failure is counted, logged with the package, and retried."""
    from manager.clock import utcnow
    from manager.history import audit
    from manager.registry import packages as rows

    database = rt.RUNTIMES[url].database
    with database.read() as session:
        due = [(w.rollout_id, w.package_arn, w.request) for w in rows.due_writebacks(session, utcnow())]
    for rollout_id, arn, request in due:
        try:
            registry.update(arn, request)
            error = None
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
        with database.write() as session:
            rt.fence(url, session)
            row = rows.writeback(session, rollout_id)
            if row is None or row.state != "pending":
                continue
            if error is None:
                row.state, row.done_at = "done", utcnow()
                event = audit.Event(
                    "package.updated",
                    "rollout",
                    str(rollout_id),
                    f"rollout {rollout_id}'s outcome written to model package {arn}",
                    {"package": arn, "request": request, "attempts": row.attempts + 1},
                )
                audit.append(session, "daemon", event)
            else:
                rows.failed_attempt(row, error, utcnow())
        if error is not None:
            log.warning(
                "packages: writing rollout %s's outcome to %s failed (attempt %s, retried): %s",
                rollout_id,
                arn,
                row.attempts if row is not None else "?",
                error,
                extra={"fields": {"rollout": rollout_id, "package": arn}},
            )
