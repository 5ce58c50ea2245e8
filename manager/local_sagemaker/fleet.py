"""What a local endpoint is made of: its variants, a change under way (`Pending`), the endpoint, and
where one request goes (`Route`)."""

from __future__ import annotations

from concurrent.futures import Future
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from manager.local_sagemaker.capture import CapturePolicy
from manager.local_sagemaker.deployments import ShiftPoint
from manager.local_sagemaker.protocol import iso
from manager.local_sagemaker.runtime import LoadedModel


def plain(value: Any) -> Any:
    if isinstance(value, list):
        return [plain(v) for v in value]
    if isinstance(value, Variant | ShiftPoint):
        return asdict(value)
    return value


@dataclass
class Variant:
    name: str
    model_name: str
    instance_type: str | None
    weight: float
    desired_weight: float
    count: int
    desired_count: int
    shadow: bool = False
    serverless: dict[str, Any] | None = None  # its ServerlessConfig: then it has no instances

    def summary(self, status: str | None = None, since: float = 0.0) -> dict[str, Any]:
        out: dict[str, Any] = {
            "VariantName": self.name,
            "CurrentWeight": self.weight,
            "DesiredWeight": self.desired_weight,
            **self.capacity(self.count),
        }
        if status:
            out["VariantStatus"] = [{"Status": status, "StartTime": iso(since)}]
        return out

    def capacity(self, current: int) -> dict[str, Any]:
        """Its capacity as DescribeEndpoint reports it: instance counts, or a serverless variant's
        current and desired serverless config (it has no instance count)."""
        if self.serverless is not None:
            return {"CurrentServerlessConfig": self.serverless, "DesiredServerlessConfig": self.serverless}
        return {"CurrentInstanceCount": current, "DesiredInstanceCount": self.desired_count}


@dataclass
class Pending:
    kind: str  # create | update | weights | rollback | delete
    started: float
    ready_at: float
    config_name: str | None = None
    variants: list[Variant] = field(default_factory=list)
    shadows: list[Variant] = field(default_factory=list)
    capture: dict[str, Any] | None = None
    steps: list[ShiftPoint] = field(default_factory=list)
    bake_until: float = 0.0  # seconds after ready_at when the update completes
    alarms: list[str] = field(default_factory=list)
    deployment_config: dict[str, Any] | None = None
    failure: str | None = None  # for rollback: why
    load: Future[dict[str, LoadedModel]] | None = field(default=None, repr=False)

    def fraction(self, now: float) -> float:
        elapsed = now - self.ready_at
        current = 0.0
        for step in self.steps:
            if elapsed >= step.at:
                current = step.fraction
        return current

    def to_json(self) -> dict[str, Any]:
        return {f.name: plain(getattr(self, f.name)) for f in fields(self) if f.name != "load"}


@dataclass
class Endpoint:
    name: str
    arn: str
    config_name: str
    status: str
    created: float
    modified: float
    variants: list[Variant] = field(default_factory=list)
    shadows: list[Variant] = field(default_factory=list)
    capture: dict[str, Any] | None = None
    failure_reason: str | None = None
    last_deployment_config: dict[str, Any] | None = None
    pending: Pending | None = None


@dataclass(frozen=True)
class Route:
    """Where one request goes: the variant, its model, and what else to do with it."""

    endpoint: str
    variant: str
    model: LoadedModel
    capture: CapturePolicy | None
    shadows: tuple[tuple[str, LoadedModel], ...]
