"""Approved model packages become rollouts, and rollouts' outcomes go back to the packages.

`take` decides, in one transaction, what a `modelPackageApproved` policy does with the approved
versions of its group: the newest one neither taken nor older than one already rolled out starts the
rollout (imported into the registry first), and every older one still untaken is recorded as skipped
with the reason. The (policy, package) claim is unique, so each version starts one rollout at most,
whatever the events say and however many daemons read them. `queue_writeback` turns a finished
rollout into an UpdateModelPackage request kept in the registry until it is sent.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from manager import policy as policies
from manager.errors import UserError
from manager.history import audit
from manager.registry import models, rollouts
from manager.registry import packages as claims
from manager.registry.tables import AuditEvent, ModelVersion, Rollout
from manager.registry.vocabulary import ModelStatus

METADATA_SYMBOLS = set("_.:/=+-@ ")
PREFIX = "variantctl-"


@dataclass(frozen=True)
class Taken:
    """What `take` did: the rollout it started (if any), the versions it skipped, or why it waits."""

    rollout: Rollout | None = None
    package: Any = None
    skipped: tuple[str, ...] = ()
    waiting: str | None = None


def take(
    session: Session,
    policy: policies.RolloutPolicy,
    text: str,
    approved: list[Any],
    actor: str,
    now: datetime,
    describe: Callable[[str], Any] | None = None,
) -> Taken:
    """Roll out the newest approved, untaken version of the policy's group, or say why not. `approved`
    are ListModelPackages' summaries; `describe` gives the chosen one's containers."""
    taken = claims.claims(session, policy.name)
    rolled = [c.package_version for c in taken.values() if c.state == "started"]
    newest_rolled = max(rolled, default=0)
    fresh = sorted((p for p in approved if p.arn not in taken), key=lambda p: p.version, reverse=True)
    if not fresh:
        return Taken()
    active = rollouts.active_on(session, policy.target.endpoint)
    if active is not None:
        return Taken(waiting=f"rollout {active.id} is {active.state} on {policy.target.endpoint}")
    chosen = fresh[0] if fresh[0].version > newest_rolled else None
    skipped = []
    for package in fresh:
        if package is chosen:
            continue
        if chosen is None or package.version < newest_rolled:
            why = f"approved after version {newest_rolled}, which is newer, was rolled out"
        else:
            why = f"version {chosen.version} was approved too and is newer: it was rolled out instead"
        claims.claim(session, policy.name, package, "skipped", why, now)
        _record(session, actor, policy, "package.skipped", f"{package.ref}: {why}", package)
        skipped.append(package.ref)
    if chosen is None:
        return Taken(skipped=tuple(skipped))
    version = import_package(session, chosen, policy.target.candidate.model, actor, describe)
    if version.status == "serving" and _serves(session, version, policy.target.endpoint):
        why = f"{version.ref} already serves on {policy.target.endpoint}: nothing to roll out"
        claims.claim(session, policy.name, chosen, "skipped", why, now)
        _record(session, actor, policy, "package.skipped", f"{chosen.ref}: {why}", chosen)
        return Taken(skipped=(*skipped, chosen.ref))
    pinned = policy.model_copy(
        update={"target": policy.target.model_copy(update={"candidate": _pinned(policy, version)})}
    )
    rollout = rollouts.start(session, _request(pinned, text), actor, now)
    why = f"{chosen.ref} was approved: rollout {rollout.id} of {version.ref}"
    claims.claim(session, policy.name, chosen, "started", why, now, rollout.id)
    _record(session, actor, policy, "package.rollout", why, chosen, rollout=rollout.id, model=version.ref)
    return Taken(rollout=rollout, package=chosen, skipped=tuple(skipped))


def _serves(session: Session, version: ModelVersion, endpoint: str) -> bool:
    from sqlalchemy import select

    from manager.registry.tables import Endpoint

    row = session.scalar(select(Endpoint).where(Endpoint.name == endpoint))
    config = row.current_config if row is not None else None
    return config is not None and any(v.model_version_id == version.id for v in config.variants)


def _pinned(policy: policies.RolloutPolicy, version: ModelVersion) -> Any:
    return policies.Candidate.model_validate({"model": version.name, "version": version.version})


def _request(policy: policies.RolloutPolicy, text: str) -> rollouts.StartRequest:
    from manager.rollout import launch

    return launch.request(policy, text)


def _record(
    session: Session, actor: str, policy: Any, action: str, reason: str, package: Any, **extra: Any
) -> None:
    payload = {"package": package.arn, "group": package.group, "version": package.version, **extra}
    audit.append(
        session, actor, audit.Event(action, "policy", policy.name, reason, payload, policy.target.endpoint)
    )


def import_package(
    session: Session, package: Any, model: str, actor: str, describe: Callable[[str], Any] | None = None
) -> ModelVersion:
    """The registry's version for `package`: the one registered with it (trained here), approved if it
    was not; else a new version of `model` with the package's container and its ARN as lineage."""
    found = claims.by_arn(session, package.arn)
    if found is not None:
        if found.status in ("candidate", "rejected"):
            why = f"model package {package.ref} was approved in the SageMaker Model Registry"
            models.transition(session, found, "approved", actor, reason=why, payload={"package": package.arn})
        return found
    if not package.artifact and describe is not None:
        package = describe(package.arn)
    return _register(session, package, model, "approved", actor)


def _register(session: Session, package: Any, model: str, status: ModelStatus, actor: str) -> ModelVersion:
    """A new version of `model` with the package's container, and its ARN as lineage."""
    if not package.artifact:
        raise UserError(f"model package {package.ref} has no ModelDataUrl in its first container")
    spec = models.NewVersion(
        name=model,
        artifact_uri=package.artifact,
        framework=_framework(package),
        image_uri=package.image,
        description=f"imported from SageMaker model package {package.ref}",
        status=status,
        model_package_arn=package.arn,
    )
    return models.register(session, spec, actor)


def _framework(package: Any) -> str:
    image = (package.image or "").lower()
    return next((f for f in ("xgboost", "sklearn", "pytorch", "tensorflow") if f in image), "sklearn")


# ---- the outcome, back to the package ----------------------------------------------------------


def metadata_text(text: str, limit: int = 256) -> str:
    """`text` reduced to what CustomerMetadataProperties allows ([\\p{L}\\p{Z}\\p{N}_.:/=+\\-@], 1-256):
    other characters become spaces, runs of spaces one."""
    kept = "".join(c if unicodedata.category(c)[0] in "LZN" or c in METADATA_SYMBOLS else " " for c in text)
    reduced = " ".join(kept.split())[:limit].strip()
    return reduced or "-"


def outcome_request(rollout: Rollout, event: AuditEvent) -> dict[str, Any]:
    """UpdateModelPackage's request for a finished rollout, as its policy says."""
    trigger = _package_settings(rollout.policy_yaml)
    state = rollout.state
    life = {"promoted": trigger.on_promote, "rolled_back": trigger.on_rollback}.get(state, trigger.on_abort)
    reason = rollout.reason or event.reason or state
    request: dict[str, Any] = {
        "CustomerMetadataProperties": {
            f"{PREFIX}rollout": str(rollout.id),
            f"{PREFIX}endpoint": rollout.endpoint.name,
            f"{PREFIX}outcome": state,
            f"{PREFIX}reason": metadata_text(reason),
            f"{PREFIX}evidence": f"{event.seq}:{event.hash}",
        },
        "ModelLifeCycle": {
            "Stage": life.stage,
            "StageStatus": life.status,
            "StageDescription": f"rollout {rollout.id} on {rollout.endpoint.name}: {state}: {reason}"[:1024],
        },
    }
    if state == "rolled_back" and trigger.reject_on_rollback:
        request["ModelApprovalStatus"] = "Rejected"
        request["ApprovalDescription"] = f"rolled back by rollout {rollout.id}: {reason}"[:1024]
    return request


def _package_settings(text: str | None) -> policies.PackageTrigger:
    """The policy's `modelPackageApproved` settings, or the defaults (a rollout started some other way
    of a version that has a package)."""
    try:
        parsed = policies.parse(text or "")
    except Exception:  # an old or unreadable stored policy still gets the default write-back
        parsed = None
    found = parsed.trigger.model_package_approved if parsed is not None else None
    return found or policies.PackageTrigger.model_validate({"group": "unknown"})


def queue_writeback(session: Session, rollout: Rollout, event: AuditEvent, now: datetime) -> None:
    """In the transaction that ends the rollout: the write-back to its candidate's package, if it has one."""
    arn = rollout.candidate.model_package_arn
    if arn:
        claims.add_writeback(session, rollout.id, arn, outcome_request(rollout, event), now)


def import_existing(session: Session, package: Any, model: str, actor: str) -> tuple[ModelVersion, bool]:
    """`models import --model-package-arn`: the version already carrying the package, or a new one whose
    status follows the package's approval. (version, whether it is new)"""
    found = claims.by_arn(session, package.arn)
    if found is not None:
        return found, False
    status: ModelStatus = {"Approved": "approved", "Rejected": "rejected"}.get(package.approval, "candidate")  # type: ignore[assignment]
    return _register(session, package, model, status, actor), True
