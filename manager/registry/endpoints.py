"""Endpoints and the configs they serve."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from manager.errors import NotFound
from manager.registry.tables import ConfigVariant, Endpoint, EndpointConfig

_WITH_VARIANTS = (
    selectinload(Endpoint.current_config)
    .selectinload(EndpointConfig.variants)
    .selectinload(ConfigVariant.model_version)
)


def list_endpoints(session: Session) -> list[Endpoint]:
    return list(session.scalars(select(Endpoint).options(_WITH_VARIANTS).order_by(Endpoint.name)))


def get(session: Session, name: str) -> Endpoint:
    row = session.scalar(select(Endpoint).where(Endpoint.name == name).options(_WITH_VARIANTS))
    if row is None:
        raise NotFound(f"no endpoint {name!r} in the registry")
    return row
