"""The SageMaker control plane: models, endpoint configs, endpoints, and their life cycles.

State changes that take time on AWS take time here too: an endpoint is
Creating, then InService; an update is Updating while the new fleet loads, then
shifts traffic (all at once, canary or linear, with bake times) and swaps the
config. Transitions are computed from the clock whenever the host is asked
anything (`advance`), so pollers see every intermediate state.
"""

from __future__ import annotations

import json
import logging
import math
import random
import re
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from manager.local_sagemaker.capture import CapturePolicy
from manager.local_sagemaker.files import atomic_write
from manager.local_sagemaker.jobs import Jobs
from manager.local_sagemaker.listing import page, sorted_by
from manager.local_sagemaker.logs import LogStore
from manager.local_sagemaker.metrics import AlarmBook
from manager.local_sagemaker.protocol import (
    ACCOUNT,
    AwsError,
    check_name,
    iso,
    sagemaker_arn,
    validation,
)
from manager.local_sagemaker.runtime import ArtifactError, LoadedModel, load_model, s3_problem
from manager.local_sagemaker.tags import TagBook

MAX_VARIANTS = 10
LIST_DEFAULT_MAX = 100  # what the control plane's lists have always returned without MaxResults
BUSY_STATES = ("Creating", "Updating", "SystemUpdating", "RollingBack", "Deleting", "UpdateRollbackFailed")


log = logging.getLogger("local_sagemaker")


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _plain(value: Any) -> Any:
    if isinstance(value, list):
        return [_plain(v) for v in value]
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

    def summary(self, status: str | None = None, since: float | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {
            "VariantName": self.name,
            "CurrentWeight": self.weight,
            "DesiredWeight": self.desired_weight,
            "CurrentInstanceCount": self.count,
            "DesiredInstanceCount": self.desired_count,
        }
        if status:
            out["VariantStatus"] = [{"Status": status, "StartTime": iso(since or time.time())}]
        return out


@dataclass
class ShiftPoint:
    """From `at` seconds after the new fleet is ready, `fraction` of traffic goes to it."""

    at: float
    fraction: float


@dataclass
class Pending:
    kind: str  # create | update | weights | rollback
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
        return {f.name: _plain(getattr(self, f.name)) for f in fields(self) if f.name != "load"}


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


class ControlPlane:
    def __init__(
        self,
        region: str,
        state_dir: Path,
        s3_root: Path,
        provision_delay: float,
        alarms: AlarmBook,
        clock: Callable[[], float] = time.time,
        seed: int | None = None,
    ) -> None:
        self.region = region
        self.state_dir = state_dir
        self.s3_root = s3_root
        self.delay = provision_delay
        self.alarms = alarms
        self.clock = clock
        self.models: dict[str, dict[str, Any]] = {}
        self.configs: dict[str, dict[str, Any]] = {}
        self.endpoints: dict[str, Endpoint] = {}
        self.loaded: dict[str, LoadedModel] = {}
        self.rng = random.Random(seed)
        self._executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="model-load")
        self._capture_cache: dict[int, tuple[dict[str, Any] | None, CapturePolicy | None]] = {}
        # Told when an endpoint is deleted (the host closes its capture files).
        self.on_endpoint_gone: Callable[[str], None] = lambda _name: None
        self._save_lock = threading.Lock()
        self.tagbook = TagBook(self._exists)
        self.logs = LogStore(state_dir / "logs", region)
        self._restore()
        self.jobs = Jobs(region, state_dir, s3_root, self.logs, self._model, self._tag, seed=seed)
        self._handlers = (self, self.jobs, self.tagbook)

    # ---- dispatch ---------------------------------------------------------------------------

    def handle(self, operation: str, request: dict[str, Any]) -> dict[str, Any]:
        handler = next(
            (h for h in (getattr(o, f"op_{operation}", None) for o in self._handlers) if h is not None), None
        )
        if handler is None:
            raise AwsError("UnknownOperationException", f"The local SageMaker does not implement {operation}")
        self.advance()
        try:
            result: dict[str, Any] = handler(request)
        except (TypeError, AttributeError, ValueError, KeyError) as exc:
            # A field of the wrong shape (a string for a structure, a word for a number, a structure
            # without a required member): AWS answers 400, and so does the host.
            raise validation(f"malformed {operation} request: {type(exc).__name__}: {exc}") from None
        return result

    def _exists(self, kind: str, name: str) -> bool:
        tables: dict[str, Any] = {
            "model": self.models,
            "endpoint-config": self.configs,
            "endpoint": self.endpoints,
            "training-job": self.jobs.training,
            "transform-job": self.jobs.transform,
            "hyper-parameter-tuning-job": self.jobs.tuning,
        }
        return any(n.lower() == name for n in tables.get(kind, {}))

    def _tag(self, arn: str, tags: Any) -> None:
        self.tagbook.add(arn, tags)
        self._save()

    def arn(self, kind: str, name: str) -> str:
        return sagemaker_arn(self.region, kind, name)

    # ---- models -----------------------------------------------------------------------------

    def op_CreateModel(self, req: dict[str, Any]) -> dict[str, Any]:
        name = check_name("modelName", req.get("ModelName"))
        if name in self.models:
            raise validation(f'Cannot create already existing model "{self.arn("model", name)}".')
        container = req.get("PrimaryContainer") or (req.get("Containers") or [None])[0]
        if not container:
            raise validation("Either PrimaryContainer or Containers must be provided")
        url = container.get("ModelDataUrl")
        if url is not None and not re.match(r"^(s3|file)://", str(url)):
            raise validation(f"ModelDataUrl {url!r} must be an s3:// or file:// URI")
        if url is not None and (problem := s3_problem(str(url))) is not None:
            raise validation(f"ModelDataUrl {url!r}: {problem}")
        self.tagbook.add(self.arn("model", name), req.get("Tags") or [])
        self.models[name] = {
            "ModelName": name,
            "ModelArn": self.arn("model", name),
            "PrimaryContainer": container,
            "ExecutionRoleArn": req.get("ExecutionRoleArn"),
            "CreationTime": self.clock(),
        }
        self._save()
        return {"ModelArn": self.arn("model", name)}

    def _model(self, name: str) -> dict[str, Any]:
        if name not in self.models:
            raise validation(f'Could not find model "{self.arn("model", name)}".')
        return self.models[name]

    def op_DescribeModel(self, req: dict[str, Any]) -> dict[str, Any]:
        model = self._model(str(req.get("ModelName", "")))
        out = {k: v for k, v in model.items() if k != "Tags"}
        out["CreationTime"] = iso(model["CreationTime"])
        return out

    def op_DeleteModel(self, req: dict[str, Any]) -> dict[str, Any]:
        name = str(req.get("ModelName", ""))
        self._model(name)
        del self.models[name]
        self.tagbook.forget(self.arn("model", name))
        self._save()
        return {}

    def op_ListModels(self, req: dict[str, Any]) -> dict[str, Any]:
        rows = [
            {"ModelName": m["ModelName"], "ModelArn": m["ModelArn"], "CreationTime": m["CreationTime"]}
            for m in self.models.values()
        ]
        return page(req, rows, "Models", sorted_by("ModelName"), default_max=LIST_DEFAULT_MAX)

    # ---- endpoint configs -------------------------------------------------------------------

    def op_CreateEndpointConfig(self, req: dict[str, Any]) -> dict[str, Any]:
        name = check_name("endpointConfigName", req.get("EndpointConfigName"))
        if name in self.configs:
            raise validation(
                "Cannot create already existing endpoint configuration "
                f'"{self.arn("endpoint-config", name)}".'
            )
        production = req.get("ProductionVariants") or []
        shadows = req.get("ShadowProductionVariants") or []
        if not 1 <= len(production) <= MAX_VARIANTS:
            raise validation(
                "1 validation error detected: Value at 'productionVariants' failed to "
                f"satisfy constraint: Member must have length between 1 and {MAX_VARIANTS}"
            )
        if len(shadows) > 1:
            raise validation("An endpoint config can hold at most 1 shadow production variant")
        seen: set[str] = set()
        for spec in [*production, *shadows]:
            variant = check_name("variantName", spec.get("VariantName"))
            if variant in seen:
                raise validation(f"Variant name {variant} is not unique within the endpoint config")
            seen.add(variant)
            self._model(str(spec.get("ModelName", "")))
            weight = spec.get("InitialVariantWeight", 1.0)
            if not _finite(weight) or weight < 0:
                raise validation(f"InitialVariantWeight of {variant} must be a number >= 0")
            count = spec.get("InitialInstanceCount", 1 if spec.get("ServerlessConfig") else None)
            if not isinstance(count, int) or count < 1:
                raise validation(f"InitialInstanceCount of {variant} must be an integer >= 1")
            if not spec.get("InstanceType") and not spec.get("ServerlessConfig"):
                raise validation(f"Variant {variant} needs an InstanceType or a ServerlessConfig")
        if sum(float(v.get("InitialVariantWeight", 1.0)) for v in production) <= 0:
            raise validation("The sum of the production variants' weights must be greater than 0")
        capture = req.get("DataCaptureConfig")
        if capture:
            self._check_capture(capture)
        self.tagbook.add(self.arn("endpoint-config", name), req.get("Tags") or [])
        self.configs[name] = {
            "EndpointConfigName": name,
            "EndpointConfigArn": self.arn("endpoint-config", name),
            "ProductionVariants": production,
            "ShadowProductionVariants": shadows,
            "DataCaptureConfig": capture,
            "CreationTime": self.clock(),
        }
        self._save()
        return {"EndpointConfigArn": self.arn("endpoint-config", name)}

    @staticmethod
    def _check_capture(capture: dict[str, Any]) -> None:
        pct = capture.get("InitialSamplingPercentage")
        if not isinstance(pct, int) or not 0 <= pct <= 100:
            raise validation("DataCaptureConfig.InitialSamplingPercentage must be an integer 0-100")
        destination = str(capture.get("DestinationS3Uri", ""))
        if not re.match(r"^(s3|file)://", destination):
            raise validation("DataCaptureConfig.DestinationS3Uri must be an s3:// URI")
        if (problem := s3_problem(destination)) is not None:
            raise validation(f"DataCaptureConfig.DestinationS3Uri {destination!r}: {problem}")
        options = capture.get("CaptureOptions") or []
        if not 1 <= len(options) <= 2 or any(
            o.get("CaptureMode") not in ("Input", "Output", "InputAndOutput") for o in options
        ):
            raise validation(
                "DataCaptureConfig.CaptureOptions must list 1-2 of Input, Output, InputAndOutput"
            )

    def _config(self, name: str) -> dict[str, Any]:
        if name not in self.configs:
            raise validation(f'Could not find endpoint configuration "{self.arn("endpoint-config", name)}".')
        return self.configs[name]

    def op_DescribeEndpointConfig(self, req: dict[str, Any]) -> dict[str, Any]:
        config = dict(self._config(str(req.get("EndpointConfigName", ""))))
        config["CreationTime"] = iso(config["CreationTime"])
        return {k: v for k, v in config.items() if v not in (None, [])}

    def op_DeleteEndpointConfig(self, req: dict[str, Any]) -> dict[str, Any]:
        # Like AWS, an endpoint config may be deleted while an endpoint uses it.
        name = str(req.get("EndpointConfigName", ""))
        self._config(name)
        del self.configs[name]
        self.tagbook.forget(self.arn("endpoint-config", name))
        self._save()
        return {}

    def op_ListEndpointConfigs(self, req: dict[str, Any]) -> dict[str, Any]:
        rows = [
            {
                "EndpointConfigName": c["EndpointConfigName"],
                "EndpointConfigArn": c["EndpointConfigArn"],
                "CreationTime": c["CreationTime"],
            }
            for c in self.configs.values()
        ]
        return page(
            req, rows, "EndpointConfigs", sorted_by("EndpointConfigName"), default_max=LIST_DEFAULT_MAX
        )

    # ---- endpoints --------------------------------------------------------------------------

    def _variants(self, config: dict[str, Any]) -> tuple[list[Variant], list[Variant]]:
        def build(spec: dict[str, Any], shadow: bool) -> Variant:
            weight = float(spec.get("InitialVariantWeight", 1.0))
            count = int(spec.get("InitialInstanceCount", 1))
            return Variant(
                spec["VariantName"],
                spec["ModelName"],
                spec.get("InstanceType"),
                weight,
                weight,
                count,
                count,
                shadow,
            )

        return (
            [build(s, False) for s in config["ProductionVariants"]],
            [build(s, True) for s in config.get("ShadowProductionVariants") or []],
        )

    def _start_loading(self, variants: list[Variant]) -> Future[dict[str, LoadedModel]]:
        specs = {}
        for v in variants:
            if v.model_name not in self.models:
                future: Future[dict[str, LoadedModel]] = Future()
                future.set_exception(ArtifactError(f"model {v.model_name} no longer exists"))
                return future
            specs[v.model_name] = self.models[v.model_name]
        cache = self.state_dir / "artifacts"
        ready = dict(self.loaded)

        def load_all() -> dict[str, LoadedModel]:
            """Keyed `name@creation time` as the models were when asked: a model deleted meanwhile
            keeps serving the endpoint that was created with it, as on AWS."""
            out = {}
            for name, model in specs.items():
                key = f"{name}@{model['CreationTime']}"
                if key in ready:
                    out[key] = ready[key]
                    continue
                container = model["PrimaryContainer"]
                if not container.get("ModelDataUrl"):
                    raise ArtifactError(f"model {name} has no ModelDataUrl")
                out[key] = load_model(
                    name,
                    container["ModelDataUrl"],
                    container.get("Environment") or {},
                    self.s3_root,
                    cache,
                    image=container.get("Image"),
                )
            return out

        return self._executor.submit(load_all)

    def op_CreateEndpoint(self, req: dict[str, Any]) -> dict[str, Any]:
        name = check_name("endpointName", req.get("EndpointName"))
        config_name = str(req.get("EndpointConfigName", ""))
        if name in self.endpoints:
            raise validation(f'Cannot create already existing endpoint "{self.arn("endpoint", name)}".')
        config = self._config(config_name)
        now = self.clock()
        variants, shadows = self._variants(config)
        self.tagbook.add(self.arn("endpoint", name), req.get("Tags") or [])
        endpoint = Endpoint(
            name,
            self.arn("endpoint", name),
            config_name,
            "Creating",
            now,
            now,
            capture=config.get("DataCaptureConfig"),
        )
        endpoint.pending = Pending(
            "create",
            now,
            now + self.delay,
            config_name,
            variants,
            shadows,
            config.get("DataCaptureConfig"),
            load=self._start_loading(variants + shadows),
        )
        self.endpoints[name] = endpoint
        self._save()
        return {"EndpointArn": endpoint.arn}

    def _endpoint(self, name: str) -> Endpoint:
        if name not in self.endpoints:
            raise validation(f'Could not find endpoint "{self.arn("endpoint", name)}".')
        return self.endpoints[name]

    def op_DeleteEndpoint(self, req: dict[str, Any]) -> dict[str, Any]:
        endpoint = self._endpoint(str(req.get("EndpointName", "")))
        self.on_endpoint_gone(endpoint.name)
        del self.endpoints[endpoint.name]
        self.tagbook.forget(endpoint.arn)
        self._save()
        return {}

    def op_ListEndpoints(self, req: dict[str, Any]) -> dict[str, Any]:
        rows = [
            {
                "EndpointName": e.name,
                "EndpointArn": e.arn,
                "CreationTime": e.created,
                "LastModifiedTime": e.modified,
                "EndpointStatus": e.status,
            }
            for e in self.endpoints.values()
        ]
        return page(
            req,
            rows,
            "Endpoints",
            sorted_by("EndpointName", "EndpointStatus"),
            status_key="EndpointStatus",
            default_max=LIST_DEFAULT_MAX,
        )

    def _require_in_service(self, endpoint: Endpoint) -> None:
        if endpoint.status in BUSY_STATES:
            raise validation(f'Cannot update in-progress endpoint "{endpoint.arn}".')
        if endpoint.status == "Failed":
            raise validation(f'Cannot update failed endpoint "{endpoint.arn}".')

    def op_UpdateEndpoint(self, req: dict[str, Any]) -> dict[str, Any]:
        endpoint = self._endpoint(str(req.get("EndpointName", "")))
        config_name = str(req.get("EndpointConfigName", ""))
        config = self._config(config_name)
        self._require_in_service(endpoint)
        variants, shadows = self._variants(config)
        capture = config.get("DataCaptureConfig")
        if req.get("RetainAllVariantProperties"):
            exclusions = req.get("ExcludeRetainedVariantProperties") or []
            excluded = {p.get("VariantPropertyType") for p in exclusions}
            current = {v.name: v for v in endpoint.variants}
            for v in variants:
                if v.name in current:
                    if "DesiredWeight" not in excluded:
                        v.weight = v.desired_weight = current[v.name].weight
                    if "DesiredInstanceCount" not in excluded:
                        v.count = v.desired_count = current[v.name].count
            if "DataCaptureConfig" not in excluded:
                capture = endpoint.capture
        deployment = req.get("DeploymentConfig")
        if deployment is None and req.get("RetainDeploymentConfig"):
            deployment = endpoint.last_deployment_config
        steps, bake, alarms = self._traffic_plan(deployment, variants)
        now = self.clock()
        endpoint.pending = Pending(
            "update",
            now,
            now + self.delay,
            config_name,
            variants,
            shadows,
            capture,
            steps,
            bake,
            alarms,
            deployment,
            load=self._start_loading(variants + shadows),
        )
        endpoint.status, endpoint.modified = "Updating", now
        self._save()
        return {"EndpointArn": endpoint.arn}

    @staticmethod
    def _traffic_plan(
        deployment: dict[str, Any] | None, variants: list[Variant]
    ) -> tuple[list[ShiftPoint], float, list[str]]:
        """Blue/green steps: when each share of traffic moves to the new fleet, and the bake after."""
        if not deployment:
            return [ShiftPoint(0, 1.0)], 0.0, []
        if "RollingUpdatePolicy" in deployment:
            raise validation(
                "RollingUpdatePolicy is not supported by the local SageMaker; use BlueGreenUpdatePolicy"
            )
        policy = deployment.get("BlueGreenUpdatePolicy") or {}
        routing = policy.get("TrafficRoutingConfiguration") or {}
        kind = routing.get("Type", "ALL_AT_ONCE")
        wait = float(routing.get("WaitIntervalInSeconds", 0))
        if not 0 <= wait <= 3600:
            raise validation("WaitIntervalInSeconds must be between 0 and 3600")
        rollback = deployment.get("AutoRollbackConfiguration") or {}
        alarms = [a["AlarmName"] for a in rollback.get("Alarms", [])]
        instances = sum(v.count for v in variants)

        def size(spec: dict[str, Any] | None, label: str) -> float:
            if not spec:
                raise validation(f"{label} is required for {kind} traffic routing")
            value = spec.get("Value")
            if spec.get("Type") == "CAPACITY_PERCENT" and isinstance(value, int | float) and 0 < value <= 100:
                return float(value) / 100
            if spec.get("Type") == "INSTANCE_COUNT" and isinstance(value, int) and 0 < value <= instances:
                return value / instances
            raise validation(f"{label} must be CAPACITY_PERCENT 1-100 or INSTANCE_COUNT 1-{instances}")

        if kind == "ALL_AT_ONCE":
            steps = [ShiftPoint(0, 1.0)]
        elif kind == "CANARY":
            canary = size(routing.get("CanarySize"), "CanarySize")
            if canary > 0.5:
                raise validation("CanarySize must be at most 50% of the new fleet")
            steps = [ShiftPoint(0, canary), ShiftPoint(wait, 1.0)]
        elif kind == "LINEAR":
            step = size(routing.get("LinearStepSize"), "LinearStepSize")
            count = int(1 / step) + (0 if abs(1 / step - round(1 / step)) < 1e-9 else 1)
            steps = [ShiftPoint(i * wait, min(1.0, (i + 1) * step)) for i in range(count)]
        else:
            raise validation(f"Unknown TrafficRoutingConfiguration Type {kind}")
        return steps, steps[-1].at + wait, alarms

    def op_UpdateEndpointWeightsAndCapacities(self, req: dict[str, Any]) -> dict[str, Any]:
        endpoint = self._endpoint(str(req.get("EndpointName", "")))
        self._require_in_service(endpoint)
        desired = req.get("DesiredWeightsAndCapacities") or []
        if not desired:
            raise validation("DesiredWeightsAndCapacities must not be empty")
        by_name = {v.name: v for v in endpoint.variants}
        missing = [d.get("VariantName") for d in desired if d.get("VariantName") not in by_name]
        if missing:
            raise validation(
                f'The variant(s) "{missing}" is/are not present in the endpoint "{endpoint.arn}".'
            )
        weights = {v.name: v.weight for v in endpoint.variants}
        for d in desired:
            weight, count = d.get("DesiredWeight"), d.get("DesiredInstanceCount")
            if weight is None and count is None:
                raise validation(f"Give DesiredWeight or DesiredInstanceCount for {d['VariantName']}")
            if weight is not None and (not _finite(weight) or weight < 0):
                raise validation(f"DesiredWeight of {d['VariantName']} must be a number >= 0")
            if count is not None and (not isinstance(count, int) or count < 1):
                raise validation(f"DesiredInstanceCount of {d['VariantName']} must be an integer >= 1")
            if weight is not None:
                weights[d["VariantName"]] = float(weight)
        if sum(weights.values()) <= 0:
            raise validation("The sum of the variants' weights must be greater than 0")
        for d in desired:
            v = by_name[d["VariantName"]]
            if d.get("DesiredWeight") is not None:
                v.desired_weight = float(d["DesiredWeight"])
            if d.get("DesiredInstanceCount") is not None:
                v.desired_count = int(d["DesiredInstanceCount"])
        now = self.clock()
        endpoint.pending = Pending("weights", now, now + self.delay)
        endpoint.status, endpoint.modified = "Updating", now
        self._save()
        return {"EndpointArn": endpoint.arn}

    def op_DescribeEndpoint(self, req: dict[str, Any]) -> dict[str, Any]:
        e = self._endpoint(str(req.get("EndpointName", "")))
        p = e.pending
        blue_status = None
        if p and p.kind == "weights":
            blue_status = "Updating"
        out: dict[str, Any] = {
            "EndpointName": e.name,
            "EndpointArn": e.arn,
            "EndpointConfigName": e.config_name,
            "EndpointStatus": e.status,
            "CreationTime": iso(e.created),
            "LastModifiedTime": iso(e.modified),
        }
        if e.status != "Creating" and e.variants:
            out["ProductionVariants"] = [v.summary(blue_status, p.started if p else None) for v in e.variants]
        if e.shadows and e.status != "Creating":
            out["ShadowProductionVariants"] = [v.summary() for v in e.shadows]
        if e.capture:
            out["DataCaptureConfig"] = {
                "EnableCapture": e.capture.get("EnableCapture", True),
                "CaptureStatus": "Started",
                "CurrentSamplingPercentage": e.capture.get("InitialSamplingPercentage", 100),
                "DestinationS3Uri": e.capture["DestinationS3Uri"],
            }
        if e.failure_reason:
            out["FailureReason"] = e.failure_reason
        if e.last_deployment_config:
            out["LastDeploymentConfig"] = e.last_deployment_config
        if p and p.kind in ("update", "create"):
            now = self.clock()
            status = self._green_status(p, now)
            pending_variants = []
            for v in p.variants:
                row = {
                    "VariantName": v.name,
                    "CurrentWeight": v.weight if status != "Creating" else 0.0,
                    "DesiredWeight": v.desired_weight,
                    "CurrentInstanceCount": 0 if status == "Creating" else v.count,
                    "DesiredInstanceCount": v.desired_count,
                    "InstanceType": v.instance_type,
                    "VariantStatus": [{"Status": status, "StartTime": iso(p.started)}],
                }
                pending_variants.append(row)
            if p.kind == "update":
                out["PendingDeploymentSummary"] = {
                    "EndpointConfigName": p.config_name,
                    "ProductionVariants": pending_variants,
                    "StartTime": iso(p.started),
                }
        return out

    def _green_status(self, p: Pending, now: float) -> str:
        if now < p.ready_at or (p.load is not None and not p.load.done()):
            return "Creating"
        if p.fraction(now) < 1.0:
            return "ActivatingTraffic"
        return "Baking"

    # ---- time -------------------------------------------------------------------------------

    def advance(self) -> None:
        """Apply every transition that is due. Cheap when nothing is pending."""
        changed = False
        now = self.clock()
        for endpoint in list(self.endpoints.values()):
            if endpoint.pending is not None:
                try:
                    changed |= self._advance(endpoint, now)
                except Exception as exc:  # a bug here must never stop every later request
                    log.exception("endpoint %s: its transition failed", endpoint.name)
                    endpoint.pending, endpoint.modified = None, now
                    endpoint.status = "Failed" if endpoint.status == "Creating" else "InService"
                    endpoint.failure_reason = f"internal error: {type(exc).__name__}: {exc}"
                    changed = True
        if changed:
            self._save()

    def _advance(self, e: Endpoint, now: float) -> bool:
        p = e.pending
        assert p is not None
        if p.load is not None:
            if not p.load.done():
                return False
            error = p.load.exception()
            if error is not None:
                reason = f"Failed to load model artifacts: {error}"
                if p.kind == "create":
                    e.status, e.failure_reason = "Failed", reason
                else:
                    e.status, e.failure_reason = "InService", reason
                e.pending, e.modified = None, now
                return True
            self.loaded.update(p.load.result())
        if now < p.ready_at:
            return False
        if p.kind == "update":
            firing = self.alarms.firing(p.alarms)
            if firing:
                e.status, e.modified = "RollingBack", now
                e.pending = Pending(
                    "rollback",
                    now,
                    now + self.delay,
                    failure=f"Deployment rolled back: alarm(s) {', '.join(firing)} in ALARM",
                )
                return True
            if now < p.ready_at + p.bake_until:
                return False
        if p.kind == "weights":
            for v in e.variants:
                v.weight, v.count = v.desired_weight, v.desired_count
        elif p.kind in ("create", "update"):
            e.config_name = p.config_name or e.config_name
            e.variants, e.shadows, e.capture = p.variants, p.shadows, p.capture
            if p.kind == "update":
                e.last_deployment_config = p.deployment_config
                e.failure_reason = None
        elif p.kind == "rollback":
            e.failure_reason = p.failure
        e.status, e.pending, e.modified = "InService", None, now
        return True

    # ---- runtime ----------------------------------------------------------------------------

    def route(self, name: str, target_variant: str | None) -> Route:
        """Pick the variant for one request: TargetVariant if given, else at random by weight."""
        self.advance()
        e = self.endpoints.get(name)
        if e is None or e.status in ("Creating", "Failed"):
            state = "not found" if e is None else f"not in service ({e.status})"
            raise AwsError("ValidationError", f"Endpoint {name} of account {ACCOUNT} {state}.")
        variants, capture, shadows = e.variants, e.capture, e.shadows
        p = e.pending
        if (
            p is not None
            and p.kind == "update"
            and p.load is not None
            and p.load.done()
            and p.load.exception() is None
            and self.rng.random() < p.fraction(self.clock())
        ):
            variants, capture, shadows = p.variants, p.capture, p.shadows
        if target_variant is not None:
            chosen = next((v for v in variants if v.name == target_variant), None)
            if chosen is None:
                raise AwsError(
                    "ValidationError", f"Target variant {target_variant} is not present in endpoint {name}."
                )
        else:
            chosen = self._by_weight(variants)
        return Route(
            e.name,
            chosen.name,
            self._loaded(chosen.model_name),
            self._capture(capture),
            tuple(
                (s.name, self._loaded(s.model_name))
                for s in shadows
                if self.rng.random() < self._shadow_share(s, variants)
            ),
        )

    def _by_weight(self, variants: list[Variant]) -> Variant:
        total = sum(v.weight for v in variants)
        if total <= 0:
            raise AwsError("ValidationError", "No production variant has a positive weight.")
        pick = self.rng.random() * total
        for v in variants:
            pick -= v.weight
            if pick < 0:
                return v
        return variants[-1]

    @staticmethod
    def _shadow_share(shadow: Variant, production: list[Variant]) -> float:
        """A shadow variant gets a copy of (its weight / production weight) of the requests."""
        total = sum(v.weight for v in production)
        return min(1.0, shadow.weight / total) if total > 0 else 0.0

    def _loaded(self, model_name: str) -> LoadedModel:
        model = self.models.get(model_name)
        loaded = self.loaded.get(f"{model_name}@{model['CreationTime']}") if model else None
        if loaded is None:
            # Deleting a Model does not stop an endpoint that serves it; find it by name.
            loaded = next((m for k, m in self.loaded.items() if k.split("@")[0] == model_name), None)
        if loaded is None:
            raise AwsError("ModelNotReadyException", f"Model {model_name} is not loaded yet.", status=429)
        return loaded

    def _capture(self, config: dict[str, Any] | None) -> CapturePolicy | None:
        # Keyed by identity, holding the config itself so that its id cannot be reused.
        cached = self._capture_cache.get(id(config))
        if cached is None or cached[0] is not config:
            cached = self._capture_cache[id(config)] = (config, CapturePolicy.from_config(config))
        return cached[1]

    # ---- listing ----------------------------------------------------------------------------

    # ---- persistence ------------------------------------------------------------------------

    @property
    def _state_file(self) -> Path:
        return self.state_dir / "state.json"

    def _save(self) -> None:
        """Called from request handlers and from job threads (tags): one writer at a time, so the
        file always holds the newest state."""
        with self._save_lock:
            self._write_state()

    def _write_state(self) -> None:
        state = {
            "models": self.models,
            "configs": self.configs,
            "tags": self.tagbook.tags,
            "endpoints": [
                {
                    **{f.name: _plain(getattr(e, f.name)) for f in fields(e) if f.name != "pending"},
                    "pending": e.pending.to_json() if e.pending else None,
                }
                for e in self.endpoints.values()
            ],
        }
        atomic_write(self._state_file, json.dumps(state, default=str))

    def _restore(self) -> None:
        """Reload what a previous run persisted; reload every served model before serving."""
        if not self._state_file.exists():
            return
        state = json.loads(self._state_file.read_text())
        self.models, self.configs = state["models"], state["configs"]
        self.tagbook.tags = state.get("tags", {})
        now = self.clock()
        for raw in state["endpoints"]:
            pending_raw = raw.pop("pending")
            e = Endpoint(
                **{
                    **raw,
                    "variants": [Variant(**v) for v in raw["variants"]],
                    "shadows": [Variant(**v) for v in raw["shadows"]],
                }
            )
            if e.variants or e.shadows:
                loaded = self._start_loading(e.variants + e.shadows)
                try:
                    self.loaded.update(loaded.result())
                except (ArtifactError, KeyError) as exc:
                    e.status, e.failure_reason = "Failed", f"Failed to reload model artifacts: {exc}"
            if pending_raw:
                p = Pending(
                    **{
                        **pending_raw,
                        "variants": [Variant(**v) for v in pending_raw["variants"]],
                        "shadows": [Variant(**v) for v in pending_raw["shadows"]],
                        "steps": [ShiftPoint(**s) for s in pending_raw["steps"]],
                    }
                )
                # Time restarts for work that was in flight when the host stopped.
                p.started, p.ready_at = now, now + self.delay
                if p.kind in ("create", "update"):
                    p.load = self._start_loading(p.variants + p.shadows)
                e.pending = p
            self.endpoints[e.name] = e

    def close(self) -> None:
        self.jobs.close()
        self._executor.shutdown(wait=True, cancel_futures=True)
