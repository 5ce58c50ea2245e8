"""What a rollout asks the platform for, built in one place: the SageMaker model of a registered
version, the endpoint config of a set of variants (named freshly, or as an intent recorded it), and
the registry's record of that config."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from manager.config import DEFAULT_IMAGE
from manager.names import model_name, readable_name, shadow_variant
from manager.platforms.base import CaptureSpec, ConfigSpec, ModelSpec, VariantSpec
from manager.policy import Target
from manager.registry import attest
from manager.registry.tables import ConfigVariant, Endpoint, EndpointConfig, ModelVersion, Rollout

# (variant name, the version it serves, its weight)
Placement = tuple[str, ModelVersion, float]


@dataclass(frozen=True)
class Images:
    """The serving image for versions registered without one, and the role SageMaker models run as."""

    default_image: str = DEFAULT_IMAGE
    role_arn: str | None = None

    def model(self, version: ModelVersion) -> ModelSpec:
        return ModelSpec(
            model_name(version.name, version.version),
            version.image_uri or self.default_image,
            version.artifact_uri,
            self.role_arn,
        )


def config_spec(
    target: Target,
    production: Sequence[Placement],
    label: str,
    now: datetime,
    shadows: Sequence[Placement] = (),
    name: str | None = None,
) -> ConfigSpec:
    """The config for these variants, named `name` (as an intent recorded it) or freshly."""
    capture = CaptureSpec(target.capture_destination) if target.capture_destination else None
    specs = tuple(
        VariantSpec(
            variant,
            model_name(v.name, v.version),
            target.instance_type,
            target.instance_count,
            weight,
            shadow=shadow,
        )
        for (variant, v, weight), shadow in [*((p, False) for p in production), *((p, True) for p in shadows)]
    )
    if name is None:
        name = readable_name(f"{target.endpoint}-{label}", ConfigSpec("draft", specs, capture), now)
    return ConfigSpec(name, specs, capture)


def versions_of(placements: Sequence[Placement]) -> dict[str, ModelVersion]:
    return {variant: version for variant, version, _ in placements}


def ab_placements(rollout: Rollout, weight: float) -> list[Placement]:
    """Baseline and candidate side by side, the candidate at `weight` percent."""
    return [
        (rollout.baseline_variant, rollout.baseline, 100.0 - weight),
        (rollout.candidate_variant, rollout.candidate, weight),
    ]


def shadow_placements(rollout: Rollout, percent: float) -> list[Placement]:
    """The candidate also as a shadow variant: SageMaker copies (shadow weight / production weight) of
    the requests to it."""
    return [(shadow_variant(rollout.candidate_variant), rollout.candidate, percent)]


def record(
    session: Session,
    endpoint: Endpoint,
    spec: ConfigSpec,
    versions: dict[str, ModelVersion],
    make_current: bool,
    actor: str,
    at: datetime | None = None,
) -> EndpointConfig:
    """The registry's row for `spec` (added once, with its `endpoint.config` event), optionally made
    the endpoint's current config (with its `endpoint.serves` event)."""
    row = session.scalar(select(EndpointConfig).where(EndpointConfig.name == spec.name))
    if row is None:
        row = EndpointConfig(
            name=spec.name,
            endpoint_name=endpoint.name,
            data_capture={"destination": spec.capture.destination} if spec.capture else None,
        )
        for v in spec.variants:
            row.variants.append(
                ConfigVariant(
                    variant_name=v.name,
                    model_version_id=versions[v.name].id,
                    instance_type=v.instance_type,
                    instance_count=v.instance_count,
                    initial_weight=v.weight,
                    is_shadow=v.shadow,
                )
            )
        session.add(row)
        session.flush()
        attest.config_recorded(session, row, actor, at)
    if make_current:
        attest.serve(session, endpoint, row, actor, at)
    return row


def record_current(
    session: Session, endpoint: Endpoint, config_name: str, actor: str, at: datetime | None = None
) -> None:
    """The endpoint serves `config_name` now (recorded earlier, with the intent that moved to it)."""
    row = session.scalar(select(EndpointConfig).where(EndpointConfig.name == config_name))
    if row is not None:
        attest.serve(session, endpoint, row, actor, at)


def survivor(rollout: Rollout, promoting: bool) -> Placement:
    """The variant left serving alone: the candidate after a promotion, the baseline after a rollback."""
    if promoting:
        return (rollout.candidate_variant, rollout.candidate, 1.0)
    return (rollout.baseline_variant, rollout.baseline, 1.0)


def shadow_spec(
    target: Target,
    rollout: Rollout,
    op: str,
    percent: float | None,
    now: datetime,
    name: str | None = None,
) -> tuple[ConfigSpec, dict[str, ModelVersion]]:
    """The config for a shadow step (the candidate also as a shadow variant), or back without it."""
    production = ab_placements(rollout, rollout.weight)
    if op == "unshadow":
        return config_spec(target, production, "ab", now, name=name), versions_of(production)
    shadows = shadow_placements(rollout, float(percent or 0))
    spec = config_spec(target, production, "shadow", now, shadows, name=name)
    return spec, versions_of([*production, *shadows])
