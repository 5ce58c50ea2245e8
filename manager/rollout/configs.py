"""What a rollout asks the platform for, built in one place: the SageMaker model of a registered
version, the endpoint config of a set of variants (named freshly, or as an intent recorded it), and
the registry's record of that config."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from manager.config import DEFAULT_IMAGE
from manager.history import attest
from manager.names import model_name, readable_name, shadow_variant
from manager.platforms.base import CaptureSpec, ConfigSpec, ModelSpec, PlatformError, VariantSpec
from manager.policy import Target
from manager.registry.tables import ConfigVariant, Endpoint, EndpointConfig, ModelVersion, Rollout
from manager.rollout.capacity import candidate_count

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
            model_package_arn=version.model_package_arn,
        )


def hosting(served: ConfigSpec, variant: str) -> VariantSpec:
    """How `variant` runs now, as the endpoint's config and its live instance counts say. An endpoint
    that does not serve it (left mid-change by an older variantctl) lends its first variant's."""
    return next((v for v in served.production if v.name == variant), served.production[0])


def candidate_hosting(target: Target, baseline: VariantSpec) -> VariantSpec:
    """The candidate's hosting: the policy's `instanceType` / `instanceCount` where it gives them,
    otherwise the baseline's own (type, count and every other setting, serverless included)."""
    if target.instance_type is not None:
        return VariantSpec(
            baseline.name, baseline.model_name, target.instance_type, target.instance_count or 1
        )
    if target.instance_count is not None and not baseline.serverless:
        return replace(baseline, instance_count=target.instance_count)
    return baseline


def config_spec(
    target: Target,
    production: Sequence[Placement],
    label: str,
    now: datetime,
    served: ConfigSpec,
    baseline_variant: str,
    shadows: Sequence[Placement] = (),
) -> ConfigSpec:
    """A fresh config for these variants. What serves keeps its hosting as SageMaker reports it (live
    instance count included); the baseline's variant name keeps the baseline's hosting whatever model
    it carries; a variant new to the endpoint (the candidate, its shadow) is hosted by
    `candidate_hosting`. The data capture is the policy's, else the one the endpoint has."""
    baseline = hosting(served, baseline_variant)
    serving = {v.name: v for v in served.production}
    fresh = candidate_hosting(target, baseline)

    def hosted(variant: str, weight: float, shadow: bool) -> VariantSpec:
        if variant in serving:
            return serving[variant]
        if variant == baseline_variant:
            return baseline
        if shadow or fresh.serverless or target.capacity.mode != "proportional":
            return fresh  # a shadow sees a copy of all the traffic: it is hosted like the baseline
        # Proportional capacity: as many instances as the candidate's share of the traffic needs.
        return replace(
            fresh, instance_count=candidate_count(target.capacity, baseline.instance_count or 1, weight)
        )

    specs = tuple(
        VariantSpec(variant, model_name(v.name, v.version), None, None, weight, shadow).hosted_like(
            hosted(variant, weight, shadow)
        )
        for (variant, v, weight), shadow in [*((p, False) for p in production), *((p, True) for p in shadows)]
    )
    capture = CaptureSpec(target.capture_destination) if target.capture_destination else served.capture
    name = readable_name(f"{target.endpoint}-{label}", ConfigSpec("draft", specs, capture), now)
    return ConfigSpec(name, specs, capture)


def recorded(session: Session, name: str) -> ConfigSpec:
    """The config `name` exactly as the registry recorded it when the change was decided: a tick after
    a crash asks SageMaker for the very config the intent named, whatever serves meanwhile."""
    row = session.scalar(select(EndpointConfig).where(EndpointConfig.name == name))
    if row is None:
        raise PlatformError(f"endpoint config {name} is not in the registry")
    capture = None
    if row.data_capture:
        c = row.data_capture
        capture = CaptureSpec(
            c["destination"],
            int(c.get("sampling", 100)),
            bool(c.get("input", True)),
            bool(c.get("output", True)),
        )
    variants = tuple(
        VariantSpec(
            v.variant_name,
            model_name(v.model_version.name, v.model_version.version),
            v.instance_type,
            v.instance_count,
            v.initial_weight,
            v.is_shadow,
            dict(v.settings or {}),
        )
        for v in row.variants
    )
    return ConfigSpec(row.name, variants, capture)


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
            data_capture=_capture_record(spec.capture),
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
                    settings=dict(v.settings) or None,
                )
            )
        session.add(row)
        session.flush()
        attest.config_recorded(session, row, actor, at)
    if make_current:
        attest.serve(session, endpoint, row, actor, at)
    return row


def _capture_record(capture: CaptureSpec | None) -> dict[str, Any] | None:
    if capture is None:
        return None
    out: dict[str, Any] = {"destination": capture.destination}
    if (capture.sampling_percentage, capture.capture_input, capture.capture_output) != (100, True, True):
        out.update(
            sampling=capture.sampling_percentage, input=capture.capture_input, output=capture.capture_output
        )
    return out


def record_current(
    session: Session, endpoint: Endpoint, config_name: str, actor: str, at: datetime | None = None
) -> None:
    """The endpoint serves `config_name` now (recorded earlier, with the intent that moved to it)."""
    row = session.scalar(select(EndpointConfig).where(EndpointConfig.name == config_name))
    if row is not None:
        attest.serve(session, endpoint, row, actor, at)


def survivor(rollout: Rollout, promoting: bool) -> Placement:
    """The variant left serving alone, always under the baseline's variant name and on the baseline's
    hosting (SageMaker's blue/green keeps the variant name): the candidate's model after a promotion,
    the baseline's after a rollback. The registry's config row says which model it carries."""
    return (rollout.baseline_variant, rollout.candidate if promoting else rollout.baseline, 1.0)


def shadow_spec(
    target: Target, rollout: Rollout, op: str, percent: float | None, now: datetime, served: ConfigSpec
) -> tuple[ConfigSpec, dict[str, ModelVersion]]:
    """The config for a shadow step: the candidate as the only shadow beside the baseline alone
    (SageMaker takes exactly one production and one shadow variant with a shadow). A shadow step comes
    before any live weight (the policy says so), so the candidate serves nobody meanwhile; ending it
    goes back to both side by side, the candidate at its weight (0), for the steps that follow."""
    if op == "unshadow":
        production = ab_placements(rollout, rollout.weight)
        spec = config_spec(target, production, "ab", now, served, rollout.baseline_variant)
        return spec, versions_of(production)
    # SageMaker copies (shadow weight / production weight) of the requests to the shadow.
    production = [(rollout.baseline_variant, rollout.baseline, 100.0)]
    shadows = shadow_placements(rollout, float(percent or 0))
    spec = config_spec(target, production, "shadow", now, served, rollout.baseline_variant, shadows)
    return spec, versions_of([*production, *shadows])
