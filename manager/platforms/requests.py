"""What the platform sends SageMaker, built and checked before any call: each request's body from
the specs, and the rules AWS applies to it that botocore does not check (names, patterns, counts,
bounds). Every rule here is in docs/aws-rules.md with its source."""

from __future__ import annotations

import json
import math
import re
from typing import Any

from manager.errors import UserError
from manager.names import check_name
from manager.platforms.base import BlueGreen, ConfigSpec, InvalidSpec, ModelSpec, VariantSpec

MAX_VARIANTS = 10
# A ProductionVariant's members other than its name, model, weight, instance type and count: what a
# rollout copies from the baseline as SageMaker describes it, and sends back unchanged.
VARIANT_SETTINGS = frozenset(
    {
        "AcceleratorPartitionLayouts",
        "AcceleratorType",
        "CapacityReservationConfig",
        "ContainerStartupHealthCheckTimeoutInSeconds",
        "CoreDumpConfig",
        "EnableSSMAccess",
        "InferenceAmiVersion",
        "InstancePools",
        "ManagedInstanceScaling",
        "ModelDataDownloadTimeoutInSeconds",
        "RoutingConfig",
        "ServerlessConfig",
        "VariantInstanceProvisionTimeoutInSeconds",
        "VolumeSizeInGB",
    }
)
INSTANCE_TYPE = re.compile(r"^ml\.[a-z0-9]+\.[a-z0-9]+$")
IMAGE_URI = re.compile(r"^\S{1,255}$")
ROLE_ARN = re.compile(r"^arn:aws[a-z\-]*:iam::\d{12}:role/?[a-zA-Z_0-9+=,.@\-/]{1,512}$")
MODEL_DATA_URL = re.compile(r"^(https|s3|file)://([^/]+)?/?(.*)$")
CAPTURE_URI = re.compile(r"^(https|s3|file)://([^/]+)?/?(.*)$")
ENV_KEY = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
ALARM_NAME = re.compile(r"^(?!\s*$).{1,255}$")


def invalid(message: str) -> InvalidSpec:
    return InvalidSpec(message)


def checked_name(kind: str, value: str) -> str:
    try:
        return check_name(kind, value)
    except UserError as exc:
        raise invalid(str(exc)) from None


def validate_model(spec: ModelSpec) -> None:
    checked_name("model", spec.name)
    if not IMAGE_URI.match(spec.image_uri):
        raise invalid(f"image URI {spec.image_uri!r} must be 1-255 characters with no spaces")
    if len(spec.artifact_uri) > 1024 or not MODEL_DATA_URL.match(spec.artifact_uri):
        raise invalid(f"artifact URI {spec.artifact_uri!r} must be an s3:// URI of at most 1024 characters")
    if spec.role_arn is not None and not ROLE_ARN.match(spec.role_arn):
        raise invalid(f"execution role {spec.role_arn!r} is not an IAM role ARN")
    if len(spec.environment) > 100:
        raise invalid("a model's environment holds at most 100 variables")
    for key, value in spec.environment.items():
        if not ENV_KEY.match(key) or len(key) > 1024 or len(value) > 1024:
            raise invalid(
                f"environment variable {key!r}: name must match [a-zA-Z_][a-zA-Z0-9_]* and "
                "name and value be at most 1024 characters"
            )


def validate_config(spec: ConfigSpec) -> None:
    checked_name("endpoint config", spec.name)
    production = spec.production
    shadows = [v for v in spec.variants if v.shadow]
    if not 1 <= len(production) <= MAX_VARIANTS:
        raise invalid(f"config {spec.name} has {len(production)} production variants; SageMaker allows 1-10")
    if shadows and (len(shadows) > 1 or len(production) > 1):
        raise invalid(
            f"config {spec.name} has {len(production)} production and {len(shadows)} shadow variants; "
            "with a shadow SageMaker allows exactly 1 of each"
        )
    if shadows and any(v.serverless for v in spec.variants):
        raise invalid(f"config {spec.name}: SageMaker runs no shadow test on a serverless endpoint")
    names = [v.name.lower() for v in spec.variants]
    if len(set(names)) != len(names):
        raise invalid(
            f"config {spec.name} repeats a variant name: {', '.join(v.name for v in spec.variants)}"
        )
    for v in spec.variants:
        checked_name("variant", v.name)
        checked_name("model", v.model_name)
        _check_hosting(v)
        check_weight(v.name, v.weight)
    if sum(v.weight for v in production) <= 0:
        raise invalid(f"config {spec.name}: at least one production variant needs a weight above 0")
    if spec.capture is not None:
        if not 0 <= spec.capture.sampling_percentage <= 100:
            raise invalid("data capture sampling percentage must be 0-100")
        if not CAPTURE_URI.match(spec.capture.destination) or len(spec.capture.destination) > 512:
            raise invalid(f"data capture destination {spec.capture.destination!r} must be an s3:// URI")
        if not (spec.capture.capture_input or spec.capture.capture_output):
            raise invalid("data capture must capture the input, the output or both")


def _check_hosting(v: VariantSpec) -> None:
    """Instances or serverless, never both (a ProductionVariant's ServerlessConfig excludes InstanceType
    and InitialInstanceCount); the settings SageMaker would take as the variant's own."""
    unknown = sorted(set(v.settings) - VARIANT_SETTINGS)
    if unknown:
        raise invalid(f"variant {v.name}: SageMaker's ProductionVariant has no {', '.join(unknown)}")
    if v.serverless:
        if v.instance_type is not None or v.instance_count is not None:
            raise invalid(f"variant {v.name} is serverless: it takes no instance type or count")
        return
    if v.instance_type is None or not INSTANCE_TYPE.match(v.instance_type):
        raise invalid(f"variant {v.name}: instance type {v.instance_type!r} is not like ml.m5.large")
    if v.instance_count is None or v.instance_count < 1:  # botocore's InitialTaskCount: min 1, no max
        raise invalid(f"variant {v.name}: instance count must be 1 or more, not {v.instance_count}")


def check_weight(variant: str, weight: float) -> None:
    if not isinstance(weight, int | float) or not math.isfinite(weight) or weight < 0:
        raise invalid(f"variant {variant}: weight must be a finite number >= 0, not {weight!r}")


def validate_blue_green(bg: BlueGreen) -> None:
    if bg.routing not in ("ALL_AT_ONCE", "CANARY", "LINEAR"):
        raise invalid(f"traffic routing {bg.routing!r} must be ALL_AT_ONCE, CANARY or LINEAR")
    if not 0 <= bg.wait_seconds <= 3600:
        raise invalid("blue/green wait interval must be 0-3600 seconds")
    if not 0 <= bg.termination_wait_seconds <= 3600:
        raise invalid("blue/green termination wait must be 0-3600 seconds")
    if bg.max_execution_seconds is not None and not 600 <= bg.max_execution_seconds <= 28800:
        raise invalid("blue/green maximum execution time must be 600-28800 seconds")
    if bg.routing != "ALL_AT_ONCE" and (bg.size_percent is None or not 1 <= bg.size_percent <= 100):
        raise invalid(f"{bg.routing} traffic routing needs a step size of 1-100 percent")
    if bg.routing == "CANARY" and bg.size_percent is not None and bg.size_percent > 50:
        raise invalid("a canary may take at most 50 percent of the new fleet")
    if bg.routing == "LINEAR" and bg.size_percent is not None and not 10 <= bg.size_percent <= 50:
        raise invalid("each linear step must be 10-50 percent of the new fleet")
    if len(bg.alarms) > 10:
        raise invalid("auto-rollback takes at most 10 alarms")
    for alarm in bg.alarms:
        if not ALARM_NAME.match(alarm):
            raise invalid(f"alarm name {alarm!r} must be 1-255 characters")


def deployment_config(bg: BlueGreen) -> dict[str, Any]:
    routing: dict[str, Any] = {"Type": bg.routing, "WaitIntervalInSeconds": bg.wait_seconds}
    if bg.routing == "CANARY":
        routing["CanarySize"] = {"Type": "CAPACITY_PERCENT", "Value": bg.size_percent}
    elif bg.routing == "LINEAR":
        routing["LinearStepSize"] = {"Type": "CAPACITY_PERCENT", "Value": bg.size_percent}
    policy: dict[str, Any] = {
        "TrafficRoutingConfiguration": routing,
        "TerminationWaitInSeconds": bg.termination_wait_seconds,
    }
    if bg.max_execution_seconds is not None:
        policy["MaximumExecutionTimeoutInSeconds"] = bg.max_execution_seconds
    config: dict[str, Any] = {"BlueGreenUpdatePolicy": policy}
    if bg.alarms:
        config["AutoRollbackConfiguration"] = {"Alarms": [{"AlarmName": a} for a in bg.alarms]}
    return config


def model_request(spec: ModelSpec) -> dict[str, Any]:
    container: dict[str, Any] = {"Image": spec.image_uri, "ModelDataUrl": spec.artifact_uri}
    if spec.model_package_arn:  # the package's container, and its lineage on SageMaker's side
        container = {"ModelPackageName": spec.model_package_arn}
    if spec.environment:
        container["Environment"] = dict(spec.environment)
    request: dict[str, Any] = {"ModelName": spec.name, "PrimaryContainer": container}
    if spec.role_arn:
        request["ExecutionRoleArn"] = spec.role_arn
    return request


def variant_request(v: VariantSpec) -> dict[str, Any]:
    request: dict[str, Any] = {"VariantName": v.name, "ModelName": v.model_name}
    if v.instance_type is not None:
        request["InstanceType"] = v.instance_type
    if v.instance_count is not None:
        request["InitialInstanceCount"] = v.instance_count
    request["InitialVariantWeight"] = float(v.weight)
    request.update(v.settings)
    return request


def config_request(spec: ConfigSpec) -> dict[str, Any]:
    request: dict[str, Any] = {
        "EndpointConfigName": spec.name,
        "ProductionVariants": [variant_request(v) for v in spec.production],
    }
    shadows = [variant_request(v) for v in spec.variants if v.shadow]
    if shadows:
        request["ShadowProductionVariants"] = shadows
    if spec.capture is not None:
        c = spec.capture
        modes = [m for m, on in (("Input", c.capture_input), ("Output", c.capture_output)) if on]
        request["DataCaptureConfig"] = {
            "EnableCapture": True,
            "InitialSamplingPercentage": c.sampling_percentage,
            "DestinationS3Uri": c.destination,
            "CaptureOptions": [{"CaptureMode": m} for m in modes],
        }
    return request


def comparable_variants(variants: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return sorted(
        (
            v["VariantName"],
            v["ModelName"],
            v.get("InstanceType"),
            int(v.get("InitialInstanceCount", 1)) if not v.get("ServerlessConfig") else None,
            float(v.get("InitialVariantWeight", 1.0)),
            json.dumps({k: v[k] for k in sorted(set(v) & VARIANT_SETTINGS)}, sort_keys=True, default=str),
        )
        for v in variants
    )


def hosting_of(
    raw: dict[str, Any], weight: float, live_count: int | None, shadow: bool = False
) -> VariantSpec:
    """A variant as DescribeEndpointConfig gives it, on the instance count it runs now (`live_count`,
    from DescribeEndpoint; autoscaling moves it away from the config's InitialInstanceCount)."""
    serverless = bool(raw.get("ServerlessConfig"))
    count = raw.get("InitialInstanceCount")
    if not serverless and live_count:
        count = live_count
    return VariantSpec(
        raw["VariantName"],
        raw["ModelName"],
        None if serverless else raw.get("InstanceType"),
        None if serverless else int(count or 1),
        weight,
        shadow,
        {k: raw[k] for k in sorted(set(raw) & VARIANT_SETTINGS)},
    )


def comparable_capture(capture: dict[str, Any] | None) -> tuple[Any, ...] | None:
    if not capture or not capture.get("EnableCapture", True):
        return None
    modes = sorted(o["CaptureMode"] for o in capture.get("CaptureOptions", []))
    return (
        int(capture.get("InitialSamplingPercentage", 100)),
        capture["DestinationS3Uri"].rstrip("/"),
        modes,
    )
