"""Bringing an endpoint under management and letting it go: create it on the platform serving one
registered version (and record what became of it), adopt one that runs already, forget one."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from manager.clock import utcnow
from manager.db import Database
from manager.errors import NotFound, UserError
from manager.history import attest, audit
from manager.names import readable_name
from manager.platforms.base import (
    CaptureSpec,
    ConfigSpec,
    EndpointPlatform,
    EndpointState,
    ModelSpec,
    PlatformError,
    VariantSpec,
)
from manager.platforms.traffic import wait_for, wait_gone
from manager.registry import models
from manager.registry.rollouts import without_rollout
from manager.registry.tables import AuditEvent, Endpoint, EndpointConfig, ModelVersion, Rollout
from manager.rollout import configs


def create(
    database: Database,
    platform: EndpointPlatform,
    name: str,
    model_ref: str,
    actor: str,
    variant: str = "baseline",
    instance_type: str = "ml.m5.large",
    instance_count: int = 1,
    capture: str | None = None,
    images: configs.Images = configs.Images(),  # noqa: B008 - frozen, so one shared default is safe
) -> str:
    """Ask the platform for `name` serving `model_ref` alone; returns the config name. The registry
    records the config and the request, not that it serves: `settle` does, once the platform says
    InService (or records the failure)."""
    with database.read() as session:
        version = deployable(session, model_ref)
        model_ref = version.ref  # the version chosen now, written below whatever is registered meanwhile
        existing = session.scalar(select(Endpoint).where(Endpoint.name == name))
        if existing is not None and existing.current_config is not None:
            raise UserError(f"endpoint {name} is already managed (config {existing.current_config.name})")
        model = images.model(version)
    state = platform.describe(name)
    if state is not None and state.status == "Failed":
        raise UserError(
            f"endpoint {name} exists on SageMaker and Failed ({state.failure_reason or 'no reason given'}); "
            f"`variantctl endpoints forget {name} --delete-endpoint` first"
        )
    spec = ConfigSpec(
        "draft",
        (VariantSpec(variant, model.name, instance_type, instance_count, 1.0),),
        CaptureSpec(capture) if capture else None,
    )
    spec = ConfigSpec(readable_name(f"{name}-base", spec, utcnow()), spec.variants, spec.capture)
    platform.ensure_model(model)
    platform.ensure_endpoint_config(spec)
    platform.create_endpoint(name, spec.name)
    with database.write() as session:
        version = models.get(session, model_ref)
        endpoint = session.scalar(select(Endpoint).where(Endpoint.name == name)) or Endpoint(name=name)
        session.add(endpoint)
        session.flush()
        configs.record(session, endpoint, spec, {variant: version}, False, actor)
        audit.append(
            session,
            actor,
            audit.Event(
                action="endpoint.create",
                subject_type="endpoint",
                subject_id=name,
                endpoint=name,
                model=version.name,
                reason=f"creating it to serve {version.ref}",
                payload={
                    "config": spec.name,
                    "variant": variant,
                    "instance_type": instance_type,
                    "capture": capture,
                },
            ),
        )
    return spec.name


def deployable(session: Session, model_ref: str) -> ModelVersion:
    """`name:version` as named, or for a bare name its newest version that is approved or serving: never
    a candidate the gate has not passed, nor a rejected one (issue 31)."""
    if models.parse_ref(model_ref)[1] is not None:
        return models.get(session, model_ref)
    models.get(session, model_ref)  # "no model ..." when the name is unknown
    usable = [v for v in models.list_versions(session, model_ref) if v.status in ("approved", "serving")]
    if not usable:
        raise UserError(f"model {model_ref} has no approved version; name the one to serve ({model_ref}:N)")
    return usable[0]


def settle(database: Database, state: EndpointState, actor: str) -> str | None:
    """What the platform reports about an endpoint being created, into the registry: once InService
    on a config the registry recorded for it, it serves that config and its models are `serving`;
    once Failed, the failure is recorded (once). Returns what changed: "serving", "failed" or None."""
    with database.write() as session:
        endpoint = session.scalar(select(Endpoint).where(Endpoint.name == state.name))
        if endpoint is None or endpoint.current_config is not None:
            return None
        config = session.scalar(
            select(EndpointConfig).where(
                EndpointConfig.name == state.config_name, EndpointConfig.endpoint_name == state.name
            )
        )
        if config is None:
            return None
        if state.status == "InService":
            attest.serve(session, endpoint, config, actor)
            for v in config.variants:
                if v.model_version.status != "serving":
                    models.transition(
                        session,
                        v.model_version,
                        "serving",
                        actor,
                        reason=f"serves {state.name}",
                        endpoint=state.name,
                    )
            return "serving"
        if state.status == "Failed":
            reason = state.failure_reason or "SageMaker gave no reason"
            last = session.scalar(
                select(AuditEvent)
                .where(AuditEvent.subject_id == state.name, AuditEvent.subject_type == "endpoint")
                .order_by(AuditEvent.seq.desc())
                .limit(1)
            )
            if last is None or last.action != "endpoint.failed":
                event = audit.Event(
                    "endpoint.failed", "endpoint", state.name, reason, {"config": config.name}, state.name
                )
                audit.append(session, actor, event)
            return "failed"
    return None


def create_and_wait(
    database: Database,
    platform: EndpointPlatform,
    name: str,
    model_ref: str,
    actor: str,
    timeout: float = 1800,
    poll: float = 2.0,
    on_poll: Callable[[EndpointState], None] | None = None,
    **options: Any,
) -> EndpointState:
    """`create`, wait until the platform has decided, `settle`; a failure raises with SageMaker's reason.
    An endpoint of that name still being deleted (just forgotten) is waited for first."""
    wait_gone(platform, name, timeout, poll)
    create(database, platform, name, model_ref, actor, **options)
    state = wait_for(platform, name, lambda s: not s.busy, timeout, poll, on_poll, raise_broken=False)
    if settle(database, state, actor) == "failed":
        raise PlatformError(
            f"endpoint {name} Failed: {state.failure_reason or 'SageMaker gave no reason'} "
            f"(`variantctl endpoints forget {name} --delete-endpoint` to start over)"
        )
    return state


def forget(database: Database, platform: EndpointPlatform | None, name: str, actor: str, reason: str) -> str:
    """Stop managing `name`: the registry no longer says it serves anything, and the row goes when no
    rollout refers to it. With a platform, the endpoint is deleted there too (a failed one, usually)."""
    with database.write() as session:
        endpoint = without_rollout(session, name, "abort it first")
        config = endpoint.current_config
        served = [v.model_version for v in config.variants] if config is not None else []
        attest.unserve(session, endpoint, actor)
        payload = {"deleted_on_platform": platform is not None}
        audit.append(session, actor, audit.Event("endpoint.forget", "endpoint", name, reason, payload, name))
        _unserved(session, served, name, actor)
        referenced = session.scalar(select(Rollout.id).where(Rollout.endpoint_id == endpoint.id).limit(1))
        if referenced is None:
            session.delete(endpoint)
    if platform is not None:
        platform.delete_endpoint(name)
    return name


def _unserved(session: Session, versions: list[ModelVersion], endpoint: str, actor: str) -> None:
    """The versions a forgotten endpoint served that serve no other managed endpoint are `approved`
    again: ready to be served or rolled out, as before (issue 31: they stayed `serving` for ever)."""
    still = {
        v.model_version_id
        for e in session.scalars(select(Endpoint).where(Endpoint.current_config_id.is_not(None)))
        for v in (e.current_config.variants if e.current_config else [])
    }
    for version in {v.id: v for v in versions}.values():
        if version.status == "serving" and version.id not in still:
            why = f"{endpoint} was forgotten; it serves no managed endpoint"
            models.transition(session, version, "approved", actor, reason=why, endpoint=endpoint)


def adopt(
    database: Database, platform: EndpointPlatform, name: str, actor: str, framework: str = "sklearn"
) -> list[str]:
    """Manage an endpoint that already runs: its config and models as `DescribeEndpoint` reports them.
    A variant's model becomes the registry version with that SageMaker model name's artifact, or a new
    version registered from it. Returns the versions it serves."""
    state = platform.describe(name)
    if state is None:
        raise NotFound(f"SageMaker has no endpoint {name!r}")
    if state.status != "InService":
        raise UserError(f"endpoint {name} is {state.status}; adopt it once InService")
    spec, model_specs = platform.served(state)
    with database.write() as session:
        endpoint = session.scalar(select(Endpoint).where(Endpoint.name == name))
        if endpoint is not None and endpoint.current_config is not None:
            raise UserError(f"endpoint {name} is already managed (config {endpoint.current_config.name})")
        versions: dict[str, ModelVersion] = {}
        for variant, model in model_specs.items():
            versions[variant] = _version_for(session, model, framework, actor)
        endpoint = endpoint or Endpoint(name=name)
        session.add(endpoint)
        session.flush()
        config = configs.record(session, endpoint, spec, versions, False, actor)
        reason = f"adopted: serves {', '.join(v.ref for v in versions.values())} as SageMaker reports"
        audit.append(
            session,
            actor,
            audit.Event("endpoint.adopt", "endpoint", name, reason, {"config": spec.name}, name),
        )
        attest.serve(session, endpoint, config, actor)
        for version in versions.values():
            if version.status != "serving":
                models.transition(session, version, "serving", actor, reason=f"serves {name}", endpoint=name)
        return [v.ref for v in versions.values()]


def _version_for(session: Session, model: ModelSpec, framework: str, actor: str) -> ModelVersion:
    """The registry version a SageMaker model is: the version of its model package, the same artifact
    and image, or a new one (with the package as its lineage)."""
    if model.model_package_arn:
        from manager.registry.packages import by_arn

        packaged = by_arn(session, model.model_package_arn)
        if packaged is not None:
            return packaged
    found = session.scalar(
        select(ModelVersion)
        .where(ModelVersion.artifact_uri == model.artifact_uri)
        .order_by(ModelVersion.id.desc())
        .limit(1)
    )
    if found is not None:
        return found
    name = model.name.rsplit("-v", 1)[0] if "-v" in model.name else model.name
    return models.register(
        session,
        models.NewVersion(
            name,
            model.artifact_uri,
            framework,
            image_uri=model.image_uri or None,
            description=f"adopted from SageMaker model {model.name}",
            model_package_arn=model.model_package_arn,
        ),
        actor,
    )
