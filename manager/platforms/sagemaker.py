"""The one EndpointPlatform: SageMaker through boto3, against AWS, moto or the local SageMaker.

Everything sent is validated first (botocore checks neither patterns nor maximum
lengths). Every operation is idempotent: a resource that exists with the same
spec is reused, the same name with another spec is a SpecConflict, and a busy
endpoint is NotNow, never a failure. Nothing here sleeps or waits.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Mapping
from typing import Any

from botocore.config import Config
from botocore.exceptions import ClientError

from manager.errors import UserError
from manager.names import check_name
from manager.platforms.base import (
    BlueGreen,
    CaptureSpec,
    ConfigSpec,
    EndpointState,
    InvalidSpec,
    Invocation,
    ModelSpec,
    NotNow,
    PlatformError,
    SpecConflict,
    VariantSpec,
    VariantState,
)

RETRIES = Config(retries={"mode": "standard", "max_attempts": 5}, connect_timeout=5, read_timeout=60)
# Invocations are retried by the caller (a replay keeps the request queued), so botocore tries twice.
RUNTIME_RETRIES = Config(
    retries={"mode": "standard", "max_attempts": 2},
    connect_timeout=5,
    read_timeout=60,
    max_pool_connections=16,
)
MAX_VARIANTS = 10
INSTANCE_TYPE = re.compile(r"^ml\.[a-z0-9]+\.[a-z0-9]+$")
IMAGE_URI = re.compile(r"^\S{1,255}$")
ROLE_ARN = re.compile(r"^arn:aws[a-z\-]*:iam::\d{12}:role/?[a-zA-Z_0-9+=,.@\-/]{1,512}$")
MODEL_DATA_URL = re.compile(r"^(https|s3|file)://([^/]+)?/?(.*)$")
CAPTURE_URI = re.compile(r"^(https|s3|file)://([^/]+)?/?(.*)$")
ENV_KEY = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
ALARM_NAME = re.compile(r"^(?!\s*$).{1,255}$")


def _invalid(message: str) -> InvalidSpec:
    return InvalidSpec(message)


def _name(kind: str, value: str) -> str:
    try:
        return check_name(kind, value)
    except UserError as exc:
        raise _invalid(str(exc)) from None


def validate_model(spec: ModelSpec) -> None:
    _name("model", spec.name)
    if not IMAGE_URI.match(spec.image_uri):
        raise _invalid(f"image URI {spec.image_uri!r} must be 1-255 characters with no spaces")
    if len(spec.artifact_uri) > 1024 or not MODEL_DATA_URL.match(spec.artifact_uri):
        raise _invalid(f"artifact URI {spec.artifact_uri!r} must be an s3:// URI of at most 1024 characters")
    if spec.role_arn is not None and not ROLE_ARN.match(spec.role_arn):
        raise _invalid(f"execution role {spec.role_arn!r} is not an IAM role ARN")
    if len(spec.environment) > 100:
        raise _invalid("a model's environment holds at most 100 variables")
    for key, value in spec.environment.items():
        if not ENV_KEY.match(key) or len(key) > 1024 or len(value) > 1024:
            raise _invalid(
                f"environment variable {key!r}: name must match [a-zA-Z_][a-zA-Z0-9_]* and "
                "name and value be at most 1024 characters"
            )


def validate_config(spec: ConfigSpec) -> None:
    _name("endpoint config", spec.name)
    production = spec.production
    shadows = [v for v in spec.variants if v.shadow]
    if not 1 <= len(production) <= MAX_VARIANTS:
        raise _invalid(f"config {spec.name} has {len(production)} production variants; SageMaker allows 1-10")
    if len(shadows) > 1:
        raise _invalid(f"config {spec.name} has {len(shadows)} shadow variants; SageMaker allows 1")
    names = [v.name for v in spec.variants]
    if len(set(names)) != len(names):
        raise _invalid(f"config {spec.name} repeats a variant name: {', '.join(names)}")
    for v in spec.variants:
        _name("variant", v.name)
        _name("model", v.model_name)
        if not INSTANCE_TYPE.match(v.instance_type):
            raise _invalid(f"variant {v.name}: instance type {v.instance_type!r} is not like ml.m5.large")
        if not 1 <= v.instance_count <= 1000:
            raise _invalid(f"variant {v.name}: instance count must be 1-1000, not {v.instance_count}")
        _check_weight(v.name, v.weight)
    if sum(v.weight for v in production) <= 0:
        raise _invalid(f"config {spec.name}: at least one production variant needs a weight above 0")
    if spec.capture is not None:
        if not 0 <= spec.capture.sampling_percentage <= 100:
            raise _invalid("data capture sampling percentage must be 0-100")
        if not CAPTURE_URI.match(spec.capture.destination) or len(spec.capture.destination) > 512:
            raise _invalid(f"data capture destination {spec.capture.destination!r} must be an s3:// URI")
        if not (spec.capture.capture_input or spec.capture.capture_output):
            raise _invalid("data capture must capture the input, the output or both")


def _check_weight(variant: str, weight: float) -> None:
    if not isinstance(weight, int | float) or not math.isfinite(weight) or weight < 0:
        raise _invalid(f"variant {variant}: weight must be a finite number >= 0, not {weight!r}")


def validate_blue_green(bg: BlueGreen) -> None:
    if bg.routing not in ("ALL_AT_ONCE", "CANARY", "LINEAR"):
        raise _invalid(f"traffic routing {bg.routing!r} must be ALL_AT_ONCE, CANARY or LINEAR")
    if not 0 <= bg.wait_seconds <= 3600:
        raise _invalid("blue/green wait interval must be 0-3600 seconds")
    if not 0 <= bg.termination_wait_seconds <= 3600:
        raise _invalid("blue/green termination wait must be 0-3600 seconds")
    if bg.max_execution_seconds is not None and not 600 <= bg.max_execution_seconds <= 28800:
        raise _invalid("blue/green maximum execution time must be 600-28800 seconds")
    if bg.routing != "ALL_AT_ONCE" and (bg.size_percent is None or not 1 <= bg.size_percent <= 100):
        raise _invalid(f"{bg.routing} traffic routing needs a step size of 1-100 percent")
    if bg.routing == "CANARY" and bg.size_percent is not None and bg.size_percent > 50:
        raise _invalid("a canary may take at most 50 percent of the new fleet")
    if len(bg.alarms) > 10:
        raise _invalid("auto-rollback takes at most 10 alarms")
    for alarm in bg.alarms:
        if not ALARM_NAME.match(alarm):
            raise _invalid(f"alarm name {alarm!r} must be 1-255 characters")


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


def _model_request(spec: ModelSpec) -> dict[str, Any]:
    container: dict[str, Any] = {"Image": spec.image_uri, "ModelDataUrl": spec.artifact_uri}
    if spec.environment:
        container["Environment"] = dict(spec.environment)
    request: dict[str, Any] = {"ModelName": spec.name, "PrimaryContainer": container}
    if spec.role_arn:
        request["ExecutionRoleArn"] = spec.role_arn
    return request


def _variant_request(v: Any) -> dict[str, Any]:
    return {
        "VariantName": v.name,
        "ModelName": v.model_name,
        "InstanceType": v.instance_type,
        "InitialInstanceCount": v.instance_count,
        "InitialVariantWeight": float(v.weight),
    }


def _config_request(spec: ConfigSpec) -> dict[str, Any]:
    request: dict[str, Any] = {
        "EndpointConfigName": spec.name,
        "ProductionVariants": [_variant_request(v) for v in spec.production],
    }
    shadows = [_variant_request(v) for v in spec.variants if v.shadow]
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


def _comparable_variants(variants: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return sorted(
        (
            v["VariantName"],
            v["ModelName"],
            v.get("InstanceType"),
            int(v.get("InitialInstanceCount", 1)),
            float(v.get("InitialVariantWeight", 1.0)),
        )
        for v in variants
    )


def _comparable_capture(capture: dict[str, Any] | None) -> tuple[Any, ...] | None:
    if not capture or not capture.get("EnableCapture", True):
        return None
    modes = sorted(o["CaptureMode"] for o in capture.get("CaptureOptions", []))
    return (
        int(capture.get("InitialSamplingPercentage", 100)),
        capture["DestinationS3Uri"].rstrip("/"),
        modes,
    )


class SageMakerPlatform:
    """EndpointPlatform on a boto3 `sagemaker` client (inject one aimed at AWS, moto or the local host)."""

    def __init__(self, client: Any, runtime: Any = None) -> None:
        self.client = client
        self._runtime = runtime

    @classmethod
    def connect(
        cls, region: str | None = None, endpoint_url: str | None = None, profile: str | None = None
    ) -> SageMakerPlatform:
        import boto3

        session = boto3.Session(profile_name=profile, region_name=region)
        return cls(
            session.client("sagemaker", endpoint_url=endpoint_url, config=RETRIES),
            session.client("sagemaker-runtime", endpoint_url=endpoint_url, config=RUNTIME_RETRIES),
        )

    @property
    def runtime(self) -> Any:
        """The sagemaker-runtime client: the one given, or one beside the sagemaker client (the same
        host when that is not AWS's, as for the local SageMaker and moto)."""
        if self._runtime is None:
            import boto3

            meta = self.client.meta
            url = meta.endpoint_url
            self._runtime = boto3.client(
                "sagemaker-runtime",
                region_name=meta.region_name,
                endpoint_url=None if "amazonaws.com" in url else url,
                config=RUNTIME_RETRIES,
            )
        return self._runtime

    # ---- calls ------------------------------------------------------------------------------

    def _call(self, operation: str, **kwargs: Any) -> dict[str, Any]:
        try:
            result: dict[str, Any] = getattr(self.client, operation)(**kwargs)
            return result
        except ClientError as exc:
            error = exc.response.get("Error", {})
            code, message = error.get("Code", ""), error.get("Message", "")
            if code == "ValidationException" and ("in-progress" in message or "in progress" in message):
                raise NotNow(f"{operation}: endpoint is busy ({message})") from None
            raise PlatformError(f"{operation} failed: {code}: {message}") from None

    def _describe_or_none(self, operation: str, **kwargs: Any) -> dict[str, Any] | None:
        try:
            return self._call(operation, **kwargs)
        except PlatformError as exc:
            if "Could not find" in str(exc) or "does not exist" in str(exc):
                return None
            raise

    # ---- models and configs -------------------------------------------------------------------

    def ensure_model(self, spec: ModelSpec) -> None:
        validate_model(spec)
        request = _model_request(spec)
        existing = self._describe_or_none("describe_model", ModelName=spec.name)
        if existing is None:
            try:
                self._call("create_model", **request)
                return
            except PlatformError as exc:
                if "already existing" not in str(exc):
                    raise
                existing = self._call("describe_model", ModelName=spec.name)
        container = existing.get("PrimaryContainer") or {}
        same = (
            container.get("Image") == spec.image_uri
            and container.get("ModelDataUrl") == spec.artifact_uri
            and (container.get("Environment") or {}) == dict(spec.environment)
            and (spec.role_arn is None or existing.get("ExecutionRoleArn") == spec.role_arn)
        )
        if not same:
            differs = [
                f"{what} {theirs!r} (this registry wants {ours!r})"
                for what, theirs, ours in (
                    ("image", container.get("Image"), spec.image_uri),
                    ("artifact", container.get("ModelDataUrl"), spec.artifact_uri),
                    ("environment", container.get("Environment") or {}, dict(spec.environment)),
                    (
                        "role",
                        existing.get("ExecutionRoleArn"),
                        spec.role_arn or existing.get("ExecutionRoleArn"),
                    ),
                )
                if theirs != ours
            ]
            raise SpecConflict(
                f"SageMaker already has a model {spec.name} with {'; '.join(differs)}: another registry "
                "or another artifact made it. Delete it (`aws sagemaker delete-model`, or give the local "
                "SageMaker a fresh --state-dir), or adopt its endpoint (`variantctl endpoints adopt`)"
            )

    def ensure_endpoint_config(self, spec: ConfigSpec) -> None:
        validate_config(spec)
        request = _config_request(spec)
        existing = self._describe_or_none("describe_endpoint_config", EndpointConfigName=spec.name)
        if existing is None:
            try:
                self._call("create_endpoint_config", **request)
                return
            except PlatformError as exc:
                if "already existing" not in str(exc):
                    raise
                existing = self._call("describe_endpoint_config", EndpointConfigName=spec.name)
        same = (
            _comparable_variants(existing.get("ProductionVariants") or [])
            == _comparable_variants(request["ProductionVariants"])
            and _comparable_variants(existing.get("ShadowProductionVariants") or [])
            == _comparable_variants(request.get("ShadowProductionVariants") or [])
            and _comparable_capture(existing.get("DataCaptureConfig"))
            == _comparable_capture(request.get("DataCaptureConfig"))
        )
        if not same:
            raise SpecConflict(f"endpoint config {spec.name} exists with other variants or data capture")

    def delete_config(self, name: str) -> bool:
        """Delete an endpoint config unless an endpoint serves it or is moving to it."""
        _name("endpoint config", name)
        for endpoint in self._endpoint_names():
            state = self.describe(endpoint)
            if state is not None and name in (state.config_name, state.pending_config):
                return False
        try:
            self._call("delete_endpoint_config", EndpointConfigName=name)
        except PlatformError as exc:
            if "Could not find" not in str(exc):
                raise
        return True

    def _endpoint_names(self) -> list[str]:
        names, token = [], None
        while True:
            page = self._call("list_endpoints", MaxResults=100, **({"NextToken": token} if token else {}))
            names += [e["EndpointName"] for e in page.get("Endpoints", [])]
            token = page.get("NextToken")
            if not token:
                return names

    # ---- endpoints ----------------------------------------------------------------------------

    def delete_endpoint(self, name: str) -> None:
        _name("endpoint", name)
        try:
            self._call("delete_endpoint", EndpointName=name)
        except PlatformError as exc:
            if "Could not find" not in str(exc):
                raise

    def served(self, state: EndpointState) -> tuple[ConfigSpec, dict[str, ModelSpec]]:
        raw = self._call("describe_endpoint_config", EndpointConfigName=state.config_name)
        weights = {v.name: v.current_weight for v in state.variants}
        variants = tuple(
            VariantSpec(
                v["VariantName"],
                v["ModelName"],
                v.get("InstanceType") or "ml.m5.large",
                int(v.get("InitialInstanceCount") or 1),
                float(weights.get(v["VariantName"], v.get("InitialVariantWeight", 1.0))),
            )
            for v in raw.get("ProductionVariants") or []
        )
        capture = raw.get("DataCaptureConfig") or {}
        spec = ConfigSpec(
            state.config_name,
            variants,
            CaptureSpec(capture["DestinationS3Uri"])
            if capture.get("EnableCapture", True) and capture
            else None,
        )
        models = {}
        for v in variants:
            model = self._call("describe_model", ModelName=v.model_name)
            container = model.get("PrimaryContainer") or (model.get("Containers") or [{}])[0]
            models[v.name] = ModelSpec(
                v.model_name,
                container.get("Image", ""),
                container.get("ModelDataUrl", ""),
                model.get("ExecutionRoleArn"),
                container.get("Environment") or {},
            )
        return spec, models

    def describe(self, name: str) -> EndpointState | None:
        _name("endpoint", name)
        raw = self._describe_or_none("describe_endpoint", EndpointName=name)
        if raw is None:
            return None
        variants = tuple(
            VariantState(
                name=v["VariantName"],
                current_weight=float(v.get("CurrentWeight", 0.0)),
                desired_weight=float(v.get("DesiredWeight", v.get("CurrentWeight", 0.0))),
                current_instances=int(v.get("CurrentInstanceCount", 0)),
                desired_instances=int(v.get("DesiredInstanceCount", v.get("CurrentInstanceCount", 0))),
                status=(v.get("VariantStatus") or [{}])[0].get("Status"),
            )
            for v in raw.get("ProductionVariants") or []
        )
        pending = raw.get("PendingDeploymentSummary") or {}
        return EndpointState(
            name=raw["EndpointName"],
            status=raw["EndpointStatus"],
            config_name=raw["EndpointConfigName"],
            variants=variants,
            pending_config=pending.get("EndpointConfigName"),
            failure_reason=raw.get("FailureReason") or None,
            last_modified=raw.get("LastModifiedTime"),
            region=self.client.meta.region_name,
        )

    def _require(self, name: str) -> EndpointState:
        state = self.describe(name)
        if state is None:
            raise PlatformError(f"endpoint {name} does not exist")
        return state

    def create_endpoint(self, name: str, config_name: str) -> None:
        _name("endpoint", name)
        _name("endpoint config", config_name)
        state = self.describe(name)
        if state is None:
            try:
                self._call("create_endpoint", EndpointName=name, EndpointConfigName=config_name)
                return
            except PlatformError as exc:
                if "already existing" not in str(exc):
                    raise
                state = self._require(name)
        if state.status == "Deleting":  # the name is free again once SageMaker has finished
            raise NotNow(f"endpoint {name} is still Deleting")
        if config_name not in (state.config_name, state.pending_config):
            raise SpecConflict(
                f"endpoint {name} exists and serves config {state.config_name}, not {config_name}"
            )

    def update_endpoint(self, name: str, config_name: str, blue_green: BlueGreen | None = None) -> None:
        _name("endpoint", name)
        _name("endpoint config", config_name)
        if blue_green is not None:
            validate_blue_green(blue_green)
        state = self._require(name)
        if state.busy:
            if state.pending_config == config_name:
                return  # this very update is already under way
            raise NotNow(f"endpoint {name} is {state.status}")
        if state.config_name == config_name:
            return
        request: dict[str, Any] = {
            "EndpointName": name,
            "EndpointConfigName": config_name,
            "RetainAllVariantProperties": False,
        }
        if blue_green is not None:
            request["DeploymentConfig"] = deployment_config(blue_green)
        self._call("update_endpoint", **request)

    def invoke(
        self, name: str, variant: str, body: bytes, content_type: str, inference_id: str | None = None
    ) -> Invocation:
        _name("endpoint", name)
        _name("variant", variant)
        request: dict[str, Any] = {
            "EndpointName": name,
            "TargetVariant": variant,
            "Body": body,
            "ContentType": content_type,
        }
        if inference_id is not None:
            request["InferenceId"] = inference_id
        started = time.perf_counter()
        try:
            answer = self.runtime.invoke_endpoint(**request)
            data = answer["Body"].read()
        except ClientError as exc:
            error = exc.response.get("Error", {})
            code, message = error.get("Code", ""), error.get("Message", "")
            if code == "ModelError":
                took = (time.perf_counter() - started) * 1000
                return Invocation(b"", "", took, f"{code}: {message}"[:500])
            raise PlatformError(f"invoke_endpoint failed: {code}: {message}") from None
        except Exception as exc:  # a connection refused, a read timeout: send again later
            if type(exc).__module__.startswith(("botocore", "urllib3")):
                raise PlatformError(f"invoke_endpoint failed: {type(exc).__name__}: {exc}") from None
            raise
        took = (time.perf_counter() - started) * 1000
        return Invocation(data, answer.get("ContentType", "application/octet-stream"), took)

    def set_weights(self, name: str, weights: Mapping[str, float]) -> None:
        _name("endpoint", name)
        if not weights:
            raise _invalid("set_weights needs at least one variant")
        for variant, weight in weights.items():
            _name("variant", variant)
            _check_weight(variant, weight)
        state = self._require(name)
        current = {v.name: v for v in state.variants}
        unknown = sorted(set(weights) - set(current))
        if unknown:
            raise _invalid(f"endpoint {name} has no variant {', '.join(unknown)}")
        after = {n: float(weights.get(n, v.current_weight)) for n, v in current.items()}
        if sum(after.values()) <= 0:
            raise _invalid(f"endpoint {name}: the weights would all be 0")
        if all(
            math.isclose(after[n], v.current_weight) and math.isclose(after[n], v.desired_weight)
            for n, v in current.items()
        ):
            return
        if state.busy:
            raise NotNow(f"endpoint {name} is {state.status}")
        self._call(
            "update_endpoint_weights_and_capacities",
            EndpointName=name,
            DesiredWeightsAndCapacities=[
                {"VariantName": n, "DesiredWeight": float(w)} for n, w in weights.items()
            ],
        )
