"""What the rollout engine may ask of an endpoint platform, and the values it gets back.

One implementation exists (sagemaker.py, on boto3: AWS, moto or the local
SageMaker). Every operation is safe to repeat: the engine is level-triggered
and may call again after a crash between any two lines.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal, Protocol

from manager.errors import UserError

if TYPE_CHECKING:
    from manager.platforms.scaling import Scaling

TrafficRouting = Literal["ALL_AT_ONCE", "CANARY", "LINEAR"]
BUSY_STATUSES = frozenset({"Creating", "Updating", "SystemUpdating", "RollingBack", "Deleting"})
BROKEN_STATUSES = frozenset({"Failed", "UpdateRollbackFailed"})


class PlatformError(Exception):
    """The platform refused or failed an operation; the message says why in one line."""


class InvalidSpec(PlatformError, UserError):
    """A name, count, weight or setting SageMaker would refuse; caught before any call."""


class NotNow(PlatformError):
    """The endpoint is busy (Creating, Updating, ...): nothing was done; try on the next tick."""


class SpecConflict(PlatformError):
    """A resource with this name exists with a different spec; reusing it would deploy the wrong thing."""


class EndpointBroken(PlatformError):
    """The endpoint is Failed or UpdateRollbackFailed; a person must look at it."""


@dataclass(frozen=True)
class ModelSpec:
    """A SageMaker Model: a serving image and an artifact."""

    name: str
    image_uri: str
    artifact_uri: str
    role_arn: str | None = None
    environment: Mapping[str, str] = field(default_factory=dict)
    # Created from this SageMaker model package (`ModelPackageName`): its image and artifact.
    model_package_arn: str | None = None


@dataclass(frozen=True)
class VariantSpec:
    """One variant of an endpoint config. A serverless variant has no instance type or count: its
    `ServerlessConfig` is in `settings`, with every other setting of SageMaker's ProductionVariant
    (volume, timeouts, routing, managed instance scaling, ...), kept as SageMaker describes them."""

    name: str
    model_name: str
    instance_type: str | None
    instance_count: int | None = 1
    weight: float = 1.0
    shadow: bool = False
    settings: Mapping[str, Any] = field(default_factory=dict)

    @property
    def serverless(self) -> bool:
        return bool(self.settings.get("ServerlessConfig"))

    def hosted_like(self, other: VariantSpec, instance_count: int | None = None) -> VariantSpec:
        """This variant's name, model and weight on `other`'s hosting (its count, or `instance_count`)."""
        count = other.instance_count if instance_count is None or other.serverless else instance_count
        return replace(
            self, instance_type=other.instance_type, instance_count=count, settings=dict(other.settings)
        )


@dataclass(frozen=True)
class CaptureSpec:
    """Data capture: where, how much, and which sides of each invocation."""

    destination: str
    sampling_percentage: int = 100
    capture_input: bool = True
    capture_output: bool = True


@dataclass(frozen=True)
class ConfigSpec:
    name: str
    variants: tuple[VariantSpec, ...]
    capture: CaptureSpec | None = None

    @property
    def production(self) -> tuple[VariantSpec, ...]:
        return tuple(v for v in self.variants if not v.shadow)


@dataclass(frozen=True)
class BlueGreen:
    """SageMaker's deployment guardrails for UpdateEndpoint: how traffic moves, and what stops it."""

    routing: TrafficRouting = "ALL_AT_ONCE"
    size_percent: int | None = None  # the canary, or each linear step, as a share of the new fleet
    wait_seconds: int = 0
    alarms: tuple[str, ...] = ()
    termination_wait_seconds: int = 0
    max_execution_seconds: int | None = None


@dataclass(frozen=True)
class VariantState:
    name: str
    current_weight: float
    desired_weight: float
    current_instances: int
    desired_instances: int
    status: str | None = None


@dataclass(frozen=True)
class EndpointState:
    name: str
    status: str
    config_name: str
    variants: tuple[VariantState, ...]
    pending_config: str | None = None
    failure_reason: str | None = None
    last_modified: datetime | None = None
    region: str | None = None  # where the endpoint lives, when the platform knows

    @property
    def busy(self) -> bool:
        return self.status in BUSY_STATUSES

    @property
    def broken(self) -> bool:
        return self.status in BROKEN_STATUSES

    def variant(self, name: str) -> VariantState | None:
        return next((v for v in self.variants if v.name == name), None)

    def shares(self) -> dict[str, float]:
        """Each variant's share of traffic: its weight over the sum of all weights."""
        total = sum(v.current_weight for v in self.variants)
        return {v.name: (v.current_weight / total if total else 0.0) for v in self.variants}

    def update_outcome(self, target_config: str) -> Literal["done", "pending", "failed"]:
        """Where an update to `target_config` stands. An update that ends InService on the old
        config with a FailureReason has failed (that is how SageMaker reports it)."""
        if self.broken:
            raise EndpointBroken(
                f"endpoint {self.name} is {self.status}: {self.failure_reason or 'no reason'}"
            )
        if self.busy:
            return "pending"
        if self.config_name == target_config:
            return "done"
        return "failed" if self.failure_reason else "pending"


@dataclass(frozen=True)
class Invocation:
    """One request sent to one variant: its answer, or the model's error, and how long it took."""

    body: bytes
    content_type: str
    latency_ms: float
    error: str | None = None  # the model answered with an error (SageMaker's ModelError)


class EndpointPlatform(Protocol):
    """Idempotent operations on endpoints. Mutations raise NotNow when the endpoint is busy."""

    def ensure_model(self, spec: ModelSpec) -> None: ...

    def ensure_endpoint_config(self, spec: ConfigSpec) -> None: ...

    def create_endpoint(self, name: str, config_name: str) -> None: ...

    def update_endpoint(self, name: str, config_name: str, blue_green: BlueGreen | None = None) -> None: ...

    def set_weights(self, name: str, weights: Mapping[str, float]) -> None: ...

    def set_capacity(self, name: str, counts: Mapping[str, int]) -> None: ...

    def scaling(self, name: str) -> dict[str, Scaling]:
        """The endpoint's variants registered with Application Auto Scaling, and how."""
        ...

    def scale(self, name: str, variant: str, wanted: Scaling | None, have: Scaling | None = None) -> None:
        """Register `variant` (its range and policies) as `wanted` says, or deregister it (None)."""
        ...

    def describe(self, name: str) -> EndpointState | None: ...

    def delete_config(self, name: str) -> bool: ...

    def delete_endpoint(self, name: str) -> None: ...

    def invoke(
        self, name: str, variant: str, body: bytes, content_type: str, inference_id: str | None = None
    ) -> Invocation:
        """Send one request to one variant (`TargetVariant`). The model's own error comes back in the
        Invocation; throttling or a transport failure raises PlatformError (send again later)."""
        ...

    def hosting(self, state: EndpointState) -> ConfigSpec:
        """The config a described endpoint serves, each variant with its live instance count, its
        weight and every setting the platform describes (what a rollout keeps for the baseline)."""
        ...

    def served(self, state: EndpointState) -> tuple[ConfigSpec, dict[str, ModelSpec]]:
        """What a described endpoint serves, as specs: its config and each variant's model (to adopt it)."""
        ...
