"""Application Auto Scaling for SageMaker variants: scalable targets, target-tracking policies, and
the scaling they do from the host's own invocation metric.

Only what SageMaker endpoints use is spoken: `ServiceNamespace` "sagemaker", `ScalableDimension`
"sagemaker:variant:DesiredInstanceCount", `ResourceId` "endpoint/<endpoint>/variant/<variant>".
The rules are AWS's (docs/aws-rules.md, "Autoscaling"):

- registering a new target needs MinCapacity and MaxCapacity, and moves the variant's count into
  that range at once; re-registering changes only what it names;
- a policy needs a registered target (ObjectNotFoundException, worded as AWS words it);
  deregistering a target deletes its policies; deleting the endpoint deregisters its targets;
- an UpdateEndpoint that removes a registered variant, or changes its instance type, fails
  (`guard_update`); changing only its model is allowed.

A `TargetTrackingScaling` policy on `SageMakerVariantInvocationsPerInstance` scales as the alarms
AWS creates for it do: out when each of the last 3 whole minutes is above the target, in when each
of the last 15 is below 90% of it (and scale-in is not disabled), to ceil(count x metric / target)
within [min, max], after the policy's cooldowns (300 s unless given), only while the endpoint is
InService. A minute without invocations has no datapoint, so an idle variant does not scale in,
as on AWS. The metric per instance is a minute's invocations over the variant's count now.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from manager.local_sagemaker import constraints
from manager.local_sagemaker.book import find
from manager.local_sagemaker.protocol import ACCOUNT, AwsError, validation, wire_times

if TYPE_CHECKING:
    from manager.local_sagemaker.endpoints import Endpoints
    from manager.local_sagemaker.fleet import Endpoint, Variant
    from manager.local_sagemaker.metrics import MetricStore

NAMESPACE = "sagemaker"
DIMENSION = "sagemaker:variant:DesiredInstanceCount"
TRACKED = "SageMakerVariantInvocationsPerInstance"
DEFAULT_COOLDOWN = 300.0
OUT_MINUTES, IN_MINUTES, IN_FRACTION = 3, 15, 0.9
MINUTE = 60


def not_found(message: str) -> AwsError:
    return AwsError("ObjectNotFoundException", message)


def resource_id(endpoint: str, variant: str) -> str:
    return f"endpoint/{endpoint}/variant/{variant}"


@dataclass
class Target:
    resource: str
    min: int
    max: int
    created: float
    arn: str
    suspended: dict[str, bool] = field(default_factory=dict)
    last_out: float = 0.0
    last_in: float = 0.0

    @property
    def endpoint(self) -> str:
        return self.resource.split("/")[1]

    @property
    def variant(self) -> str:
        return self.resource.split("/")[3]

    def row(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "ServiceNamespace": NAMESPACE,
            "ResourceId": self.resource,
            "ScalableDimension": DIMENSION,
            "MinCapacity": self.min,
            "MaxCapacity": self.max,
            "RoleARN": f"arn:aws:iam::{ACCOUNT}:role/aws-service-role/sagemaker.application-autoscaling"
            ".amazonaws.com/AWSServiceRoleForApplicationAutoScaling_SageMakerEndpoint",
            "CreationTime": self.created,
            "ScalableTargetARN": self.arn,
        }
        if self.suspended:
            out["SuspendedState"] = dict(self.suspended)
        return out


@dataclass
class Policy:
    name: str
    resource: str
    kind: str
    config: dict[str, Any]
    created: float
    arn: str

    def row(self) -> dict[str, Any]:
        member = (
            "TargetTrackingScalingPolicyConfiguration"
            if self.kind == "TargetTrackingScaling"
            else ("StepScalingPolicyConfiguration")
        )
        return {
            "PolicyARN": self.arn,
            "PolicyName": self.name,
            "ServiceNamespace": NAMESPACE,
            "ResourceId": self.resource,
            "ScalableDimension": DIMENSION,
            "PolicyType": self.kind,
            member: self.config,
            "Alarms": [],
            "CreationTime": self.created,
        }


class ScalingBook:
    """The scalable targets and policies of the host's endpoints, and their scaling activities."""

    def __init__(
        self,
        region: str,
        clock: Callable[[], float],
        endpoints: Endpoints,
        metrics: MetricStore | None,
        save: Callable[[], None],
    ) -> None:
        self.region = region
        self.clock = clock
        self.endpoints = endpoints
        self.metrics = metrics
        self.save = save
        self.targets: dict[str, Target] = {}
        self.policies: dict[tuple[str, str], Policy] = {}
        self.activities: list[dict[str, Any]] = []

    # ---- the operations ----------------------------------------------------------------------

    def handle(self, operation: str, request: dict[str, Any]) -> dict[str, Any]:
        handler = getattr(self, f"op_{operation}", None)
        if handler is None:
            raise AwsError(
                "UnknownOperationException",
                f"The local SageMaker's Application Auto Scaling does not implement {operation}",
            )
        constraints.check("application-autoscaling", operation, request)
        self.advance()
        try:
            result: dict[str, Any] = wire_times(handler(request))
        except (TypeError, AttributeError, ValueError, KeyError) as exc:
            raise validation(f"malformed {operation} request: {type(exc).__name__}: {exc}") from None
        return result

    def _resource(self, req: dict[str, Any], required: bool = True) -> str:
        namespace, dimension = req.get("ServiceNamespace"), req.get("ScalableDimension")
        if namespace != NAMESPACE or (dimension is not None and dimension != DIMENSION):
            raise validation("Unsupported service namespace, resource type or scalable dimension")
        resource = req.get("ResourceId")
        if resource is None and not required:
            return ""
        parts = str(resource).split("/")
        if len(parts) != 4 or parts[0] != "endpoint" or parts[2] != "variant" or not all(parts):
            raise validation("Unsupported service namespace, resource type or scalable dimension")
        if required and dimension is None:
            raise validation(
                "1 validation error detected: Value null at 'scalableDimension' failed to satisfy "
                "constraint: Member must not be null"
            )
        return str(resource)

    def _missing(self, resource: str) -> AwsError:
        return not_found(
            f"No scalable target registered for service namespace: {NAMESPACE}, resource ID: {resource}, "
            f"scalable dimension: {DIMENSION}"
        )

    def op_RegisterScalableTarget(self, req: dict[str, Any]) -> dict[str, Any]:
        resource = self._resource(req)
        low, high = req.get("MinCapacity"), req.get("MaxCapacity")
        for name, value in (("minCapacity", low), ("maxCapacity", high)):
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
                raise validation(f"1 validation error detected: Value '{value}' at '{name}' must be >= 0")
        target = self.targets.get(resource)
        endpoint, variant = self._variant(resource)
        if target is None:
            if low is None or high is None:
                raise validation("MinCapacity and MaxCapacity are required to register a new scalable target")
            now = self.clock()
            arn = (
                f"arn:aws:application-autoscaling:{self.region}:{ACCOUNT}:scalable-target/{uuid.uuid4().hex}"
            )
            target = Target(resource, int(low), int(high), now, arn)
            candidate = target
        else:
            candidate = Target(**{**asdict(target)})
            candidate.min = int(low) if low is not None else target.min
            candidate.max = int(high) if high is not None else target.max
        if candidate.min < 1:
            raise validation(
                f"Minimum capacity of {resource} must be at least 1 for an instance-based variant"
            )
        if candidate.min > candidate.max:
            raise validation(
                "Minimum capacity cannot be greater than maximum capacity "
                f"({candidate.min} > {candidate.max})"
            )
        suspended = req.get("SuspendedState")
        if suspended is not None:
            candidate.suspended = {k: bool(v) for k, v in dict(suspended).items()}
        self.targets[resource] = candidate
        # "It changes the resource's current capacity to a value that is inside of this range."
        inside = min(max(variant.desired_count, candidate.min), candidate.max)
        if inside != variant.desired_count and endpoint.status == "InService":
            self._scale(endpoint, variant, inside, "the scalable target's range moved")
        self.save()
        return {"ScalableTargetARN": candidate.arn}

    def _variant(self, resource: str) -> tuple[Endpoint, Variant]:
        _, endpoint_name, _, variant_name = resource.split("/")
        endpoint = find(self.endpoints.table, endpoint_name)
        if endpoint is None or endpoint.status in ("Creating", "Failed", "Deleting"):
            raise validation(f"The endpoint {endpoint_name} does not exist or is not in service")
        variant = next((v for v in [*endpoint.variants, *endpoint.shadows] if v.name == variant_name), None)
        if variant is None:
            raise validation(f"The variant {variant_name} of endpoint {endpoint_name} does not exist")
        if variant.instance_type is None:
            raise validation(
                f"{DIMENSION} cannot scale the serverless variant {variant_name}; "
                "use sagemaker:variant:DesiredProvisionedConcurrency"
            )
        return endpoint, variant

    def op_DeregisterScalableTarget(self, req: dict[str, Any]) -> dict[str, Any]:
        resource = self._resource(req)
        if resource not in self.targets:
            raise self._missing(resource)
        self._drop(resource)
        self.save()
        return {}

    def _drop(self, resource: str) -> None:
        """A target goes, and its policies with it ("Deregistering a scalable target deletes the
        scaling policies that are associated with it")."""
        self.targets.pop(resource, None)
        for key in [k for k in self.policies if k[0] == resource]:
            del self.policies[key]

    def op_DescribeScalableTargets(self, req: dict[str, Any]) -> dict[str, Any]:
        self._resource(req, required=False)
        wanted = req.get("ResourceIds")
        rows = [t.row() for r, t in sorted(self.targets.items()) if not wanted or r in wanted]
        return _page(req, rows, "ScalableTargets", 50)

    def op_PutScalingPolicy(self, req: dict[str, Any]) -> dict[str, Any]:
        resource = self._resource(req)
        if resource not in self.targets:
            raise self._missing(resource)
        name, kind = str(req.get("PolicyName") or ""), req.get("PolicyType") or "StepScaling"
        if not 1 <= len(name) <= 256:
            raise validation("1 validation error detected: Value at 'policyName' must have length 1-256")
        if kind != "TargetTrackingScaling":
            raise validation(
                f"The local SageMaker scales by TargetTrackingScaling only, not {kind} "
                "(see docs/aws-rules.md)"
            )
        config = dict(req.get("TargetTrackingScalingPolicyConfiguration") or {})
        metric = (config.get("PredefinedMetricSpecification") or {}).get("PredefinedMetricType")
        if metric != TRACKED:
            raise validation(f"The local SageMaker tracks {TRACKED} only, not {metric or 'a custom metric'}")
        value = config.get("TargetValue")
        if not isinstance(value, int | float) or isinstance(value, bool) or not value > 0:
            raise validation("TargetValue must be a number greater than 0")
        for cooldown in ("ScaleInCooldown", "ScaleOutCooldown"):
            if cooldown in config and not (isinstance(config[cooldown], int) and config[cooldown] >= 0):
                raise validation(f"{cooldown} must be a whole number of seconds >= 0")
        key = (resource, name)
        old = self.policies.get(key)
        arn = (
            old.arn
            if old
            else (
                f"arn:aws:autoscaling:{self.region}:{ACCOUNT}:scalingPolicy:{uuid.uuid4()}:"
                f"resource/{NAMESPACE}/{resource}:policyName/{name}"
            )
        )
        self.policies[key] = Policy(name, resource, kind, config, old.created if old else self.clock(), arn)
        self.save()
        return {"PolicyARN": arn, "Alarms": []}

    def op_DescribeScalingPolicies(self, req: dict[str, Any]) -> dict[str, Any]:
        resource = self._resource(req, required=False)
        names = req.get("PolicyNames")
        rows = [
            p.row()
            for (r, n), p in sorted(self.policies.items())
            if (not resource or r == resource) and (not names or n in names)
        ]
        return _page(req, rows, "ScalingPolicies", 50)

    def op_DeleteScalingPolicy(self, req: dict[str, Any]) -> dict[str, Any]:
        resource = self._resource(req)
        key = (resource, str(req.get("PolicyName")))
        if key not in self.policies:
            raise not_found(
                f"No scaling policy found for service namespace: {NAMESPACE}, resource ID: {resource}, "
                f"scalable dimension: {DIMENSION}, policy name: {key[1]}"
            )
        del self.policies[key]
        self.save()
        return {}

    def op_DescribeScalingActivities(self, req: dict[str, Any]) -> dict[str, Any]:
        resource = self._resource(req, required=False)
        rows = [a for a in reversed(self.activities) if not resource or a["ResourceId"] == resource]
        return _page(req, rows, "ScalingActivities", 50)

    # ---- what SageMaker asks -----------------------------------------------------------------

    def guard_update(self, endpoint: Endpoint, variants: list[Variant]) -> None:
        """UpdateEndpoint fails if it would remove a registered variant or change its instance type."""
        new = {v.name: v for v in variants}
        old = {v.name: v for v in [*endpoint.variants, *endpoint.shadows]}
        blocked = sorted(
            name
            for name in old
            if resource_id(endpoint.name, name) in self.targets
            and (name not in new or new[name].instance_type != old[name].instance_type)
        )
        if blocked:
            raise validation(
                f"The variant(s) [{', '.join(blocked)}] of endpoint {endpoint.arn} are registered as "
                "scalable targets with Application Auto Scaling; this update would remove them or "
                "change their instance type. Delete their scaling policies and call "
                "DeregisterScalableTarget before updating the endpoint."
            )

    def forget(self, endpoint: str) -> None:
        """The endpoint is deleted: its targets are deregistered without notice, as on AWS."""
        for resource in [r for r, t in self.targets.items() if t.endpoint.lower() == endpoint.lower()]:
            self._drop(resource)

    # ---- scaling -----------------------------------------------------------------------------

    def advance(self) -> None:
        """Apply each target-tracking policy whose alarm would fire now. Cheap with no policies."""
        if not self.policies or self.metrics is None:
            return
        now = self.clock()
        changed = False
        for (resource, _), policy in sorted(self.policies.items()):
            target = self.targets.get(resource)
            if target is not None:
                changed |= self._track(target, policy, now)
        if changed:
            self.save()

    def _track(self, target: Target, policy: Policy, now: float) -> bool:
        endpoint = find(self.endpoints.table, target.endpoint)
        if endpoint is None or endpoint.status != "InService" or endpoint.pending is not None:
            return False  # scaling waits while the endpoint updates, as on AWS
        variant = next((v for v in endpoint.variants if v.name == target.variant), None)
        if variant is None:
            return False
        goal, config = float(policy.config["TargetValue"]), policy.config
        count = variant.count
        recent = self._per_instance(endpoint.name, variant.name, count, now, IN_MINUTES)
        out = recent[-OUT_MINUTES:]
        if (
            len(out) == OUT_MINUTES
            and all(v > goal for v in out)
            and not target.suspended.get("DynamicScalingOutSuspended")
            and now - target.last_out >= float(config.get("ScaleOutCooldown", DEFAULT_COOLDOWN))
        ):
            wanted = min(target.max, math.ceil(count * (sum(out) / len(out)) / goal))
            if wanted > count:
                target.last_out = now
                self._scale(endpoint, variant, wanted, f"{TRACKED} above {goal:g} for {OUT_MINUTES} minutes")
                return True
        if (
            len(recent) == IN_MINUTES
            and all(v < IN_FRACTION * goal for v in recent)
            and not config.get("DisableScaleIn")
            and not target.suspended.get("DynamicScalingInSuspended")
            and now - max(target.last_in, target.last_out)
            >= float(config.get("ScaleInCooldown", DEFAULT_COOLDOWN))
        ):
            wanted = max(target.min, math.ceil(count * (sum(recent) / len(recent)) / goal))
            if wanted < count:
                target.last_in = now
                self._scale(
                    endpoint,
                    variant,
                    wanted,
                    f"{TRACKED} below {IN_FRACTION * goal:g} for {IN_MINUTES} minutes",
                )
                return True
        return False

    def _per_instance(self, endpoint: str, variant: str, count: int, now: float, minutes: int) -> list[float]:
        """Invocations per instance in each of the last whole minutes that had any, oldest first; a
        gap (a minute with none) ends the run, as a missing datapoint stops an alarm."""
        assert self.metrics is not None
        end = int(now // MINUTE * MINUTE)
        start = end - minutes * MINUTE
        periods = self.metrics.periods(
            (endpoint, variant, "Invocations"),
            datetime.fromtimestamp(start, UTC),
            datetime.fromtimestamp(end, UTC),
            MINUTE,
        )
        by_start = {slot: bucket.total for slot, bucket in periods}
        values: list[float] = []
        for slot in range(end - MINUTE, start - 1, -MINUTE):
            if slot not in by_start:
                break
            values.append(by_start[slot] / max(count, 1))
        return values[::-1]

    def _scale(self, endpoint: Endpoint, variant: Variant, count: int, cause: str) -> None:
        now = self.clock()
        self.endpoints.scale(endpoint, variant, count)
        self.activities.append(
            {
                "ActivityId": str(uuid.uuid4()),
                "ServiceNamespace": NAMESPACE,
                "ResourceId": resource_id(endpoint.name, variant.name),
                "ScalableDimension": DIMENSION,
                "Description": f"Setting desired instance count to {count}.",
                "Cause": cause,
                "StartTime": now,
                "EndTime": now,
                "StatusCode": "Successful",
                "StatusMessage": f"Successfully set desired instance count to {count}.",
            }
        )
        del self.activities[:-1000]

    # ---- persistence -------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        return {
            "targets": [asdict(t) for t in self.targets.values()],
            "policies": [asdict(p) for p in self.policies.values()],
            "activities": self.activities,
        }

    def restore(self, saved: dict[str, Any]) -> None:
        self.targets = {t["resource"]: Target(**t) for t in saved.get("targets", [])}
        self.policies = {(p["resource"], p["name"]): Policy(**p) for p in saved.get("policies", [])}
        self.activities = list(saved.get("activities", []))


def _page(req: dict[str, Any], rows: list[dict[str, Any]], key: str, most: int) -> dict[str, Any]:
    limit = req.get("MaxResults", most)
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= most:
        raise validation(f"MaxResults must be between 1 and {most}")
    token = req.get("NextToken") or "0"
    if not (isinstance(token, str) and token.isdigit()):
        raise AwsError("InvalidNextTokenException", "The NextToken is not one this service issued")
    start = int(token)
    out: dict[str, Any] = {key: rows[start : start + limit]}
    if start + limit < len(rows):
        out["NextToken"] = str(start + limit)
    return out
