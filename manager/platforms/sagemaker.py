"""The one EndpointPlatform: SageMaker through boto3, against AWS, moto or the local SageMaker.

Everything sent is validated first (botocore checks neither patterns nor maximum
lengths). Every operation is idempotent: a resource that exists with the same
spec is reused, the same name with another spec is a SpecConflict, and a busy
endpoint is NotNow, never a failure. Nothing here sleeps or waits.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from typing import Any

from botocore.exceptions import ClientError

from manager.crashpoints import crash_point
from manager.platforms import aws
from manager.platforms.base import (
    BlueGreen,
    CaptureSpec,
    ConfigSpec,
    EndpointState,
    Invocation,
    ModelSpec,
    NotNow,
    PlatformError,
    SpecConflict,
    VariantState,
)
from manager.platforms.requests import (
    check_weight,
    checked_name,
    comparable_capture,
    comparable_variants,
    config_request,
    deployment_config,
    hosting_of,
    invalid,
    model_request,
    validate_blue_green,
    validate_config,
    validate_model,
)
from manager.platforms.scaling import AutoScaling, Scaling


class SageMakerPlatform:
    """EndpointPlatform on a boto3 `sagemaker` client (inject one aimed at AWS, moto or the local host)."""

    def __init__(self, client: Any, runtime: Any = None, autoscaling: Any = None) -> None:
        self.client = client
        self._runtime = runtime
        self._autoscaling = AutoScaling(autoscaling) if autoscaling is not None else None
        # How to build the Application Auto Scaling client when first needed (`aws.platform` sets it).
        self.make_autoscaling: Callable[[], Any] | None = None

    @property
    def runtime(self) -> Any:
        """The sagemaker-runtime client: the one given, or one beside the sagemaker client."""
        if self._runtime is None:
            self._runtime = aws.beside(self.client, "sagemaker-runtime", aws.RUNTIME_RETRIES)
        return self._runtime

    @property
    def autoscaling(self) -> AutoScaling:
        """Application Auto Scaling: the client given, or one beside the sagemaker client."""
        if self._autoscaling is None:
            make = self.make_autoscaling
            client = make() if make is not None else aws.beside(self.client, "application-autoscaling")
            self._autoscaling = AutoScaling(client)
        return self._autoscaling

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
        existing = self._create_or_describe(
            ("create_model", "describe_model"), model_request(spec), ModelName=spec.name
        )
        if existing is None:
            return
        container = existing.get("PrimaryContainer") or (existing.get("Containers") or [{}])[0]
        same = (
            (
                container.get("ModelPackageName") == spec.model_package_arn
                if spec.model_package_arn
                else container.get("Image") == spec.image_uri
                and container.get("ModelDataUrl") == spec.artifact_uri
            )
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
        request = config_request(spec)
        existing = self._create_or_describe(
            ("create_endpoint_config", "describe_endpoint_config"), request, EndpointConfigName=spec.name
        )
        if existing is None:
            return
        same = (
            comparable_variants(existing.get("ProductionVariants") or [])
            == comparable_variants(request["ProductionVariants"])
            and comparable_variants(existing.get("ShadowProductionVariants") or [])
            == comparable_variants(request.get("ShadowProductionVariants") or [])
            and comparable_capture(existing.get("DataCaptureConfig"))
            == comparable_capture(request.get("DataCaptureConfig"))
        )
        if not same:
            raise SpecConflict(f"endpoint config {spec.name} exists with other variants or data capture")

    def _create_or_describe(
        self, operations: tuple[str, str], request: dict[str, Any], **key: str
    ) -> dict[str, Any] | None:
        """Create the resource unless it exists (`operations`: its create and describe calls, named
        in full so that the IAM policy's source scan sees them): None once created; else what exists,
        for the caller to compare with what it wants (one made meanwhile, by a racing call, included)."""
        create, describe = operations
        existing = self._describe_or_none(describe, **key)
        if existing is not None:
            return existing
        try:
            self._call(create, **request)
            return None
        except PlatformError as exc:
            if "already existing" not in str(exc):
                raise
        return self._call(describe, **key)

    def delete_config(self, name: str) -> bool:
        """Delete an endpoint config unless an endpoint serves it or is moving to it."""
        checked_name("endpoint config", name)
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
        checked_name("endpoint", name)
        try:
            self._call("delete_endpoint", EndpointName=name)
        except PlatformError as exc:
            if "Could not find" not in str(exc):
                raise

    def served(self, state: EndpointState) -> tuple[ConfigSpec, dict[str, ModelSpec]]:
        """What a described endpoint serves: `hosting`, and each variant's model."""
        spec = self.hosting(state)
        models = {}
        for v in spec.variants:
            model = self._call("describe_model", ModelName=v.model_name)
            container = model.get("PrimaryContainer") or (model.get("Containers") or [{}])[0]
            models[v.name] = ModelSpec(
                v.model_name,
                container.get("Image", ""),
                container.get("ModelDataUrl", ""),
                model.get("ExecutionRoleArn"),
                container.get("Environment") or {},
                container.get("ModelPackageName"),
            )
        return spec, models

    def hosting(self, state: EndpointState) -> ConfigSpec:
        """The config an endpoint serves, each variant on the hosting it has now (its live instance
        count, its weight) with every setting SageMaker describes."""
        raw = self._call("describe_endpoint_config", EndpointConfigName=state.config_name)
        live = {v.name: v for v in state.variants}
        variants = tuple(
            hosting_of(
                v,
                live[v["VariantName"]].current_weight
                if v["VariantName"] in live
                else float(v.get("InitialVariantWeight", 1.0)),
                live[v["VariantName"]].desired_instances or None if v["VariantName"] in live else None,
                shadow,
            )
            for member, shadow in (("ProductionVariants", False), ("ShadowProductionVariants", True))
            for v in raw.get(member) or []
        )
        capture = raw.get("DataCaptureConfig") or {}
        return ConfigSpec(state.config_name, variants, _capture_of(capture))

    def describe(self, name: str) -> EndpointState | None:
        checked_name("endpoint", name)
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
        checked_name("endpoint", name)
        checked_name("endpoint config", config_name)
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
        checked_name("endpoint", name)
        checked_name("endpoint config", config_name)
        if blue_green is not None:
            validate_blue_green(blue_green)
        state = self._require(name)
        if state.busy:
            if state.pending_config == config_name:
                return  # this very update is already under way
            raise NotNow(f"endpoint {name} is {state.status}")
        if state.config_name == config_name:
            return
        registered = self.autoscaling.registered(name)
        request: dict[str, Any] = {
            "EndpointName": name,
            "EndpointConfigName": config_name,
            # An autoscaled endpoint keeps each variant's live count (AWS's procedure for updating
            # one); the weights are the new config's.
            "RetainAllVariantProperties": bool(registered),
        }
        if registered:
            request["ExcludeRetainedVariantProperties"] = [{"VariantPropertyType": "DesiredWeight"}]
            self._free(name, state, config_name, registered)
        if blue_green is not None:
            request["DeploymentConfig"] = deployment_config(blue_green)
        self._call("update_endpoint", **request)

    def _free(
        self, name: str, state: EndpointState, config_name: str, registered: Mapping[str, Scaling]
    ) -> None:
        """AWS refuses an update that removes a variant registered with Application Auto Scaling or
        changes its instance type: such variants are deregistered first, their policies deleted."""
        types = {}
        for config in (state.config_name, config_name):
            raw = self._call("describe_endpoint_config", EndpointConfigName=config)
            types[config] = {
                v["VariantName"]: v.get("InstanceType")
                for member in ("ProductionVariants", "ShadowProductionVariants")
                for v in raw.get(member) or []
            }
        old, new = types[state.config_name], types[config_name]
        for variant, scaling in sorted(registered.items()):
            if variant in old and (variant not in new or new[variant] != old[variant]):
                self.autoscaling.deregister(name, variant, scaling)
                crash_point("scaling-deregistered")

    def scaling(self, name: str) -> dict[str, Scaling]:
        """The endpoint's variants registered with Application Auto Scaling, and how."""
        checked_name("endpoint", name)
        return self.autoscaling.registered(name)

    def scale(self, name: str, variant: str, wanted: Scaling | None, have: Scaling | None = None) -> None:
        """Register `variant` as `wanted` says (range and policies), or deregister it (None)."""
        checked_name("endpoint", name)
        checked_name("variant", variant)
        if wanted is None:
            self.autoscaling.deregister(name, variant, have)
        else:
            self.autoscaling.register(name, variant, wanted, have)

    def set_capacity(self, name: str, counts: Mapping[str, int]) -> None:
        """Each variant's DesiredInstanceCount (its weight unchanged)."""
        checked_name("endpoint", name)
        for variant, count in counts.items():
            checked_name("variant", variant)
            if not isinstance(count, int) or not 1 <= count <= 1000:
                raise invalid(f"instance count of {variant} must be 1-1000, not {count!r}")
        state, current = self._variants_named(name, counts)
        if all(current[v].desired_instances == c for v, c in counts.items()):
            return
        self._weights_and_capacities(
            state, [{"VariantName": v, "DesiredInstanceCount": c} for v, c in counts.items()]
        )

    def invoke(
        self, name: str, variant: str, body: bytes, content_type: str, inference_id: str | None = None
    ) -> Invocation:
        checked_name("endpoint", name)
        checked_name("variant", variant)
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

    def _variants_named(
        self, name: str, named: Mapping[str, Any]
    ) -> tuple[EndpointState, dict[str, VariantState]]:
        """The endpoint as described now and its variants by name; a change naming a variant it does
        not have is refused before any call."""
        state = self._require(name)
        current = {v.name: v for v in state.variants}
        unknown = sorted(set(named) - set(current))
        if unknown:
            raise invalid(f"endpoint {name} has no variant {', '.join(unknown)}")
        return state, current

    def set_weights(self, name: str, weights: Mapping[str, float]) -> None:
        checked_name("endpoint", name)
        if not weights:
            raise invalid("set_weights needs at least one variant")
        for variant, weight in weights.items():
            checked_name("variant", variant)
            check_weight(variant, weight)
        state, current = self._variants_named(name, weights)
        after = {n: float(weights.get(n, v.current_weight)) for n, v in current.items()}
        if sum(after.values()) <= 0:
            raise invalid(f"endpoint {name}: the weights would all be 0")
        if all(
            math.isclose(after[n], v.current_weight) and math.isclose(after[n], v.desired_weight)
            for n, v in current.items()
        ):
            return
        self._weights_and_capacities(
            state, [{"VariantName": n, "DesiredWeight": float(w)} for n, w in weights.items()]
        )

    def _weights_and_capacities(self, state: EndpointState, desired: list[dict[str, Any]]) -> None:
        """UpdateEndpointWeightsAndCapacities, unless the endpoint is busy (NotNow: try next tick)."""
        if state.busy:
            raise NotNow(f"endpoint {state.name} is {state.status}")
        self._call(
            "update_endpoint_weights_and_capacities",
            EndpointName=state.name,
            DesiredWeightsAndCapacities=desired,
        )


def _capture_of(capture: dict[str, Any]) -> CaptureSpec | None:
    """DataCaptureConfig as DescribeEndpointConfig gives it: destination, sampling and modes."""
    if not capture or not capture.get("EnableCapture", True):
        return None
    modes = {o.get("CaptureMode") for o in capture.get("CaptureOptions") or []}
    both = "InputAndOutput" in modes or not modes
    return CaptureSpec(
        capture["DestinationS3Uri"],
        int(capture.get("InitialSamplingPercentage", 100)),
        both or "Input" in modes,
        both or "Output" in modes,
    )
