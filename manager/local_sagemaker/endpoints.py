"""SageMaker endpoints: their life cycles, traffic shifts, and where each request goes.

State changes that take time on AWS take time here too: an endpoint is Creating, then InService;
an update is Updating while the new fleet loads, then shifts traffic (all at once, canary or
linear, with bake times) and swaps the config; a deleted endpoint is Deleting for a moment, then
gone. Transitions are computed from the clock whenever the host is asked anything (`advance`), so
pollers see every intermediate state.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import fields
from pathlib import Path
from typing import Any

from manager.local_sagemaker.book import LIST_DEFAULT_MAX, Book, Shared, find
from manager.local_sagemaker.capture import CapturePolicy
from manager.local_sagemaker.configs import Configs, finite
from manager.local_sagemaker.deployments import ShiftPoint, same_variant_names, traffic_plan
from manager.local_sagemaker.fleet import Endpoint, Pending, Variant, plain
from manager.local_sagemaker.listing import page, sorted_by
from manager.local_sagemaker.metrics import AlarmBook
from manager.local_sagemaker.models import Models, container
from manager.local_sagemaker.protocol import check_name, iso, validation
from manager.local_sagemaker.routing import Routing
from manager.local_sagemaker.runtime import ArtifactError, LoadedModel, load_model

BUSY_STATES = ("Creating", "Updating", "SystemUpdating", "RollingBack", "Deleting", "UpdateRollbackFailed")

log = logging.getLogger("local_sagemaker")


class Endpoints(Book[Endpoint], Routing):
    kind = noun = "endpoint"

    def __init__(
        self,
        shared: Shared,
        models: Models,
        configs: Configs,
        alarms: AlarmBook,
        state_dir: Path,
        s3_root: Path,
        delay: float,
        seed: int | None = None,
    ) -> None:
        super().__init__(shared)
        self.models = models
        self.configs = configs
        self.alarms = alarms
        self.state_dir = state_dir
        self.s3_root = s3_root
        self.delay = delay
        self.loaded: dict[str, LoadedModel] = {}
        self.rng = random.Random(seed)
        self._executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="model-load")
        self._capture_cache: dict[int, tuple[dict[str, Any] | None, CapturePolicy | None]] = {}
        # Told when an endpoint stops serving for good (the host closes its capture files).
        self.on_gone: Callable[[str], None] = lambda _name: None
        # Application Auto Scaling's say over updates and deletes (set by the control plane).
        self.scaling_guard: Callable[[Endpoint, list[Variant]], None] = lambda _e, _v: None
        self.scaling_forget: Callable[[str], None] = lambda _name: None

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
                spec.get("ServerlessConfig"),
            )

        return (
            [build(s, False) for s in config["ProductionVariants"]],
            [build(s, True) for s in config.get("ShadowProductionVariants") or []],
        )

    def _start_loading(self, variants: list[Variant]) -> Future[dict[str, LoadedModel]]:
        specs = {}
        for v in variants:
            model = find(self.models.table, v.model_name)
            if model is None:
                future: Future[dict[str, LoadedModel]] = Future()
                future.set_exception(ArtifactError(f"model {v.model_name} no longer exists"))
                return future
            specs[v.model_name] = model
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
                served = container(model)
                if not served.get("ModelDataUrl"):
                    raise ArtifactError(f"model {name} has no ModelDataUrl")
                out[key] = load_model(
                    name,
                    served["ModelDataUrl"],
                    served.get("Environment") or {},
                    self.s3_root,
                    cache,
                    image=served.get("Image"),
                )
            return out

        return self._executor.submit(load_all)

    def op_CreateEndpoint(self, req: dict[str, Any]) -> dict[str, Any]:
        name = check_name("endpointName", req.get("EndpointName"))
        config_name = str(req.get("EndpointConfigName", ""))
        if find(self.table, name) is not None:
            raise validation(f'Cannot create already existing endpoint "{self.arn(name)}".')
        config = self.configs.get(config_name)
        now = self.shared.clock()
        variants, shadows = self._variants(config)
        self.shared.tags.add(self.arn(name), req.get("Tags") or [])
        endpoint = Endpoint(
            name,
            self.arn(name),
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
        self.table[name] = endpoint
        self.shared.save()
        return {"EndpointArn": endpoint.arn}

    def op_DeleteEndpoint(self, req: dict[str, Any]) -> dict[str, Any]:
        """The endpoint stops serving at once and shows Deleting until the next transition takes it
        away, as on AWS, where it lingers a little while."""
        endpoint = self.get(req.get("EndpointName", ""))
        if endpoint.status == "Deleting":
            return {}
        self.on_gone(endpoint.name)
        self.scaling_forget(endpoint.name)
        now = self.shared.clock()
        endpoint.status, endpoint.modified = "Deleting", now
        endpoint.pending = Pending("delete", now, now + self.delay)
        self.shared.save()
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
            for e in self.table.values()
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
        endpoint = self.get(req.get("EndpointName", ""))
        config_name = str(req.get("EndpointConfigName", ""))
        config = self.configs.get(config_name)
        self._require_in_service(endpoint)
        variants, shadows = self._variants(config)
        self.scaling_guard(endpoint, variants + shadows)
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
        if deployment:
            same_variant_names(endpoint.variants, variants)
        steps, bake, alarms = traffic_plan(deployment, variants)
        now = self.shared.clock()
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
        self.shared.save()
        return {"EndpointArn": endpoint.arn}

    def op_UpdateEndpointWeightsAndCapacities(self, req: dict[str, Any]) -> dict[str, Any]:
        endpoint = self.get(req.get("EndpointName", ""))
        self._require_in_service(endpoint)
        desired = req.get("DesiredWeightsAndCapacities") or []
        if not desired:
            raise validation("DesiredWeightsAndCapacities must not be empty")
        by_name = {v.name: v for v in endpoint.variants}
        named = [str(d.get("VariantName")) for d in desired]
        twice = sorted({n for n in named if named.count(n) > 1})
        if twice:
            raise validation(
                f"The variant(s) [{', '.join(twice)}] appear more than once in DesiredWeightsAndCapacities."
            )
        missing = [n for n in named if n not in by_name]
        if missing:
            # Worded as AWS words it: the names in a bracketed list, without quotes around each.
            listed = ", ".join(missing)
            raise validation(
                f'The variant(s) "[{listed}]" is/are not present in the endpoint "{endpoint.arn}".'
            )
        weights = {v.name: v.weight for v in endpoint.variants}
        for d in desired:
            weight, count = d.get("DesiredWeight"), d.get("DesiredInstanceCount")
            if weight is None and count is None:
                raise validation(f"Give DesiredWeight or DesiredInstanceCount for {d['VariantName']}")
            if weight is not None and (not finite(weight) or weight < 0):
                raise validation(f"DesiredWeight of {d['VariantName']} must be a number >= 0")
            if count is not None and (not isinstance(count, int) or count < 1):
                raise validation(f"DesiredInstanceCount of {d['VariantName']} must be an integer >= 1")
            if count is not None and by_name[d["VariantName"]].serverless is not None:
                raise validation(
                    f"DesiredInstanceCount cannot be set for the serverless variant {d['VariantName']}"
                )
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
        now = self.shared.clock()
        endpoint.pending = Pending("weights", now, now + self.delay)
        endpoint.status, endpoint.modified = "Updating", now
        self.shared.save()
        return {"EndpointArn": endpoint.arn}

    def scale(self, endpoint: Endpoint, variant: Variant, count: int) -> None:
        """Application Auto Scaling sets a variant's count, as UpdateEndpointWeightsAndCapacities does."""
        now = self.shared.clock()
        variant.desired_count = count
        endpoint.pending = Pending("weights", now, now + self.delay)
        endpoint.status, endpoint.modified = "Updating", now

    def op_DescribeEndpoint(self, req: dict[str, Any]) -> dict[str, Any]:
        e = self.get(req.get("EndpointName", ""))
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
            since = p.started if p else e.modified
            out["ProductionVariants"] = [v.summary(blue_status, since) for v in e.variants]
        if e.shadows and e.status != "Creating":
            out["ShadowProductionVariants"] = [v.summary() for v in e.shadows]
        if e.capture:
            out["DataCaptureConfig"] = {
                "EnableCapture": e.capture.get("EnableCapture", True),
                "CaptureStatus": "Started",
                "CurrentSamplingPercentage": e.capture.get("InitialSamplingPercentage", 100),
                "DestinationS3Uri": e.capture["DestinationS3Uri"],
            }
            # Required in DataCaptureConfigSummary; the host encrypts nothing, so no key unless given.
            out["DataCaptureConfig"]["KmsKeyId"] = e.capture.get("KmsKeyId") or ""
        if e.failure_reason:
            out["FailureReason"] = e.failure_reason
        if e.last_deployment_config:
            out["LastDeploymentConfig"] = e.last_deployment_config
        if p and p.kind in ("update", "create"):
            now = self.shared.clock()
            status = self._green_status(p, now)
            pending_variants = []
            for v in p.variants:
                row = {
                    "VariantName": v.name,
                    "CurrentWeight": v.weight if status != "Creating" else 0.0,
                    "DesiredWeight": v.desired_weight,
                    **v.capacity(0 if status == "Creating" else v.count),
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
        now = self.shared.clock()
        for endpoint in list(self.table.values()):
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
            self.shared.save()

    def _advance(self, e: Endpoint, now: float) -> bool:
        p = e.pending
        assert p is not None
        if p.kind == "delete":
            if now < p.ready_at:
                return False
            del self.table[e.name]
            self.shared.tags.forget(e.arn)
            return True
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
            for v in [*e.variants, *e.shadows]:
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

    # ---- persistence ------------------------------------------------------------------------

    def to_json(self) -> list[dict[str, Any]]:
        return [
            {
                **{f.name: plain(getattr(e, f.name)) for f in fields(e) if f.name != "pending"},
                "pending": e.pending.to_json() if e.pending else None,
            }
            for e in self.table.values()
        ]

    def restore(self, saved: list[dict[str, Any]]) -> None:
        """Reload what a previous run persisted; reload every served model before serving."""
        now = self.shared.clock()
        for raw in saved:
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
            self.table[e.name] = e

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)
