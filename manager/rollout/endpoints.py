"""Bringing an endpoint under management: create it on the platform serving one registered version."""

from __future__ import annotations

from sqlalchemy import select

from manager import audit
from manager.clock import utcnow
from manager.db import Database
from manager.errors import UserError
from manager.names import readable_name
from manager.platforms.base import CaptureSpec, ConfigSpec, EndpointPlatform, VariantSpec
from manager.registry import models
from manager.registry.tables import Endpoint
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
    """Create `name` serving `model_ref` alone; returns the config name. Safe to repeat."""
    with database.read() as session:
        version = models.get(session, model_ref)
        existing = session.scalar(select(Endpoint).where(Endpoint.name == name))
        if existing is not None and existing.current_config is not None:
            raise UserError(f"endpoint {name} is already managed (config {existing.current_config.name})")
        model = images.model(version)
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
        configs.record(session, endpoint, spec, {variant: version}, True, actor)
        audit.append(
            session,
            actor,
            audit.Event(
                action="endpoint.create",
                subject_type="endpoint",
                subject_id=name,
                endpoint=name,
                model=version.name,
                reason=f"serving {version.ref}",
                payload={
                    "config": spec.name,
                    "variant": variant,
                    "instance_type": instance_type,
                    "capture": capture,
                },
            ),
        )
        models.transition(session, version, "serving", actor, reason=f"serves {name}", endpoint=name)
    return spec.name
