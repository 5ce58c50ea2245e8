"""Model versions: register, find, list, and move between statuses (always with a history event)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from manager.errors import NotFound, UserError
from manager.history import audit
from manager.names import check_name
from manager.registry.tables import ModelVersion
from manager.registry.vocabulary import MODEL_STATUSES, MODEL_TRANSITIONS, ModelStatus

ARTIFACT_SCHEMES = ("s3", "file")


@dataclass(frozen=True)
class NewVersion:
    """What registering a model version takes."""

    name: str
    artifact_uri: str
    framework: str
    framework_version: str | None = None
    image_uri: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    dataset_fingerprint: str | None = None
    training_run_id: int | None = None
    description: str | None = None
    status: ModelStatus = "candidate"
    version: int | None = None
    model_package_arn: str | None = None  # lineage: the SageMaker model package this version is


def _bounded(field: str, value: str | None, limit: int, required: bool = False) -> None:
    if value is None and not required:
        return
    if value is None or not value.strip():
        raise UserError(f"{field} is empty")
    if len(value) > limit:
        raise UserError(f"{field} is {len(value)} characters; at most {limit}")
    if not value.isprintable():
        raise UserError(f"{field} holds a control character (a newline?)")


def _check_fields(spec: NewVersion) -> None:
    """What the columns can hold, refused with one line instead of truncated or a database error."""
    _bounded("the artifact URI", spec.artifact_uri, 1024, required=True)
    _bounded("--framework", spec.framework, 32, required=True)
    _bounded("--framework-version", spec.framework_version, 32)
    _bounded("--image-uri", spec.image_uri, 1024)
    _bounded("--fingerprint", spec.dataset_fingerprint, 64)
    if spec.description is not None and len(spec.description) > 10_000:
        raise UserError(f"--description is {len(spec.description)} characters; at most 10000")
    for key, value in (spec.metrics or {}).items():
        try:
            json.dumps(value, allow_nan=False)
        except (TypeError, ValueError):
            raise UserError(f"metric {key}={value!r}: a metric must be a finite number") from None


def normalize_artifact_uri(uri: str) -> str:
    """`s3://bucket/key` as given; a local path or `file://` URI, absolute and existing."""
    parsed = urlparse(uri)
    if parsed.scheme == "s3":
        if not parsed.netloc or not parsed.path.strip("/"):
            raise UserError(f"artifact URI {uri!r} needs a bucket and a key: s3://bucket/key")
        return uri
    if parsed.scheme not in ("", "file"):
        raise UserError(f"artifact URI {uri!r}: scheme must be one of {', '.join(ARTIFACT_SCHEMES)}")
    path = Path(parsed.path if parsed.scheme == "file" else uri).expanduser().absolute()
    if not path.exists():
        raise UserError(f"artifact {path} does not exist")
    return path.as_uri()


def parse_ref(ref: str) -> tuple[str, int | None]:
    """`name` (newest version) or `name:version`."""
    name, sep, version = ref.partition(":")
    if not sep:
        return name, None
    if not version.isdigit() or int(version) < 1:
        raise UserError(f"invalid model reference {ref!r}: use NAME or NAME:VERSION")
    return name, int(version)


def register(session: Session, spec: NewVersion, actor: str) -> ModelVersion:
    """Add a model version (the next version number unless one is given) and record it."""
    check_name("model", spec.name)
    if spec.status not in MODEL_STATUSES:
        raise UserError(f"status {spec.status!r} is not one of {', '.join(MODEL_STATUSES)}")
    _check_fields(spec)
    newest = session.scalar(select(func.max(ModelVersion.version)).where(ModelVersion.name == spec.name))
    row = ModelVersion(
        name=spec.name,
        version=spec.version or (newest or 0) + 1,
        framework=spec.framework,
        framework_version=spec.framework_version,
        artifact_uri=normalize_artifact_uri(spec.artifact_uri),
        image_uri=spec.image_uri,
        metrics=spec.metrics,
        dataset_fingerprint=spec.dataset_fingerprint,
        training_run_id=spec.training_run_id,
        description=spec.description,
        status=spec.status,
        model_package_arn=spec.model_package_arn,
    )
    session.add(row)
    session.flush()
    record_event(
        session,
        row,
        actor,
        "model.register",
        None,
        {
            "artifact_uri": row.artifact_uri,
            "framework": row.framework,
            "framework_version": row.framework_version,
            "image_uri": row.image_uri,
            "metrics": row.metrics,
            "dataset_fingerprint": row.dataset_fingerprint,
            "training_run": row.training_run_id,
            "status": row.status,
            **({"model_package_arn": row.model_package_arn} if row.model_package_arn else {}),
        },
    )
    return row


def get(session: Session, ref: str) -> ModelVersion:
    name, version = parse_ref(ref)
    stmt = select(ModelVersion).where(ModelVersion.name == name)
    if version is None:
        stmt = stmt.order_by(ModelVersion.version.desc()).limit(1)
    else:
        stmt = stmt.where(ModelVersion.version == version)
    row = session.scalar(stmt)
    if row is None:
        raise NotFound(f"no model {ref!r} in the registry")
    return row


def list_versions(session: Session, name: str | None = None, status: str | None = None) -> list[ModelVersion]:
    stmt = select(ModelVersion).order_by(ModelVersion.name, ModelVersion.version.desc())
    if name is not None:
        stmt = stmt.where(ModelVersion.name == name)
    if status is not None:
        stmt = stmt.where(ModelVersion.status == status)
    return list(session.scalars(stmt))


def transition(
    session: Session,
    version: ModelVersion,
    to: ModelStatus,
    actor: str,
    *,
    reason: str | None = None,
    action: str = "model.status",
    payload: Mapping[str, Any] | None = None,
    endpoint: str | None = None,
    at: datetime | None = None,
) -> None:
    """Move `version` to status `to` and append the event that says so, in the caller's transaction.
    The one writer of a model's status: a move the lifecycle does not allow is a bug, and raises."""
    before: ModelStatus = version.status  # type: ignore[assignment]
    if to not in MODEL_TRANSITIONS.get(before, ()):
        raise ValueError(f"{version.ref}: a model version cannot move from {before} to {to}")
    version.status = to
    record_event(
        session,
        version,
        actor,
        action,
        reason,
        {"from": before, "status": to, **(payload or {})},
        endpoint,
        at,
    )


def record_event(
    session: Session,
    version: ModelVersion,
    actor: str,
    action: str,
    reason: str | None,
    payload: Mapping[str, Any],
    endpoint: str | None = None,
    at: datetime | None = None,
) -> None:
    """One history event about a model version, in the caller's transaction."""
    event = audit.Event(action, "model_version", version.ref, reason, payload, endpoint, version.name)
    audit.append(session, actor, event, at=at)


def gated_by(session: Session, ref: str) -> str | None:
    """Who recorded the newest offline gate decision on the version `ref` (None: no gate ran)."""
    from manager.registry.tables import AuditEvent

    return session.scalar(
        select(AuditEvent.actor)
        .where(
            AuditEvent.subject_type == "model_version",
            AuditEvent.subject_id == ref,
            AuditEvent.action == "model.gate",
        )
        .order_by(AuditEvent.seq.desc())
        .limit(1)
    )
