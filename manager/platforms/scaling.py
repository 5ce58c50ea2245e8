"""Application Auto Scaling for endpoint variants, through boto3: what is registered, and the calls
that register a variant (with its policies) or take it out again. Every call is idempotent, so a
caller that crashed between two of them converges by calling again (docs/aws-rules.md, "Autoscaling").
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from manager.crashpoints import crash_point
from manager.platforms.base import NotNow, PlatformError

NAMESPACE = "sagemaker"
DIMENSION = "sagemaker:variant:DesiredInstanceCount"


def resource_id(endpoint: str, variant: str) -> str:
    return f"endpoint/{endpoint}/variant/{variant}"


@dataclass(frozen=True)
class ScalingPolicy:
    """A scaling policy as PutScalingPolicy takes it: its name, type and configuration member."""

    name: str
    kind: str
    config: Mapping[str, Any]

    @property
    def member(self) -> str:
        return {
            "TargetTrackingScaling": "TargetTrackingScalingPolicyConfiguration",
            "StepScaling": "StepScalingPolicyConfiguration",
            "PredictiveScaling": "PredictiveScalingPolicyConfiguration",
        }[self.kind]


@dataclass(frozen=True)
class Scaling:
    """One variant's registration: its capacity range and its policies."""

    min: int
    max: int
    policies: tuple[ScalingPolicy, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "min": self.min,
            "max": self.max,
            "policies": [{"name": p.name, "kind": p.kind, "config": dict(p.config)} for p in self.policies],
        }

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> Scaling:
        return cls(
            int(raw["min"]),
            int(raw["max"]),
            tuple(ScalingPolicy(p["name"], p["kind"], p["config"]) for p in raw.get("policies", [])),
        )

    def same(self, other: Scaling | None) -> bool:
        """The same range and policies (configurations compared as JSON: AWS fills in defaults)."""
        if other is None or (self.min, self.max) != (other.min, other.max):
            return False

        def key(s: Scaling) -> list[tuple[str, str, str]]:
            return sorted((p.name, p.kind, json.dumps(dict(p.config), sort_keys=True)) for p in s.policies)

        return key(self) == key(other)


class AutoScaling:
    """The calls, on a boto3 `application-autoscaling` client (AWS's, moto's or the local host's)."""

    def __init__(self, client: Any) -> None:
        self.client = client

    def _call(self, operation: str, **kwargs: Any) -> dict[str, Any]:
        try:
            result: dict[str, Any] = getattr(self.client, operation)(**kwargs)
            return result
        except ClientError as exc:
            error = exc.response.get("Error", {})
            code, message = error.get("Code", ""), error.get("Message", "")
            if code == "ConcurrentUpdateException":
                raise NotNow(f"{operation}: {message}") from None
            raise PlatformError(f"application-autoscaling {operation} failed: {code}: {message}") from None

    def _pages(self, operation: str, key: str, **kwargs: Any) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        token = None
        while True:
            page = self._call(
                operation, ServiceNamespace=NAMESPACE, **kwargs, **({"NextToken": token} if token else {})
            )
            rows += page.get(key) or []
            token = page.get("NextToken")
            if not token:
                return rows

    def registered(self, endpoint: str) -> dict[str, Scaling]:
        """Each of the endpoint's variants registered for DesiredInstanceCount, with its policies."""
        prefix = f"endpoint/{endpoint}/variant/"
        targets = [
            t
            for t in self._pages("describe_scalable_targets", "ScalableTargets", ScalableDimension=DIMENSION)
            if str(t["ResourceId"]).startswith(prefix)
        ]
        out = {}
        for target in targets:
            policies = self._pages(
                "describe_scaling_policies",
                "ScalingPolicies",
                ResourceId=target["ResourceId"],
                ScalableDimension=DIMENSION,
            )
            out[str(target["ResourceId"])[len(prefix) :]] = Scaling(
                int(target["MinCapacity"]),
                int(target["MaxCapacity"]),
                tuple(
                    ScalingPolicy(p["PolicyName"], p["PolicyType"], _plain(p[_member(p)]))
                    for p in sorted(policies, key=lambda p: str(p["PolicyName"]))
                    if p.get("ResourceId", target["ResourceId"]) == target["ResourceId"]
                ),
            )
        return out

    def register(self, endpoint: str, variant: str, scaling: Scaling, have: Scaling | None = None) -> None:
        """RegisterScalableTarget, then each policy: policies it has but should not are deleted."""
        resource = resource_id(endpoint, variant)
        where = {"ServiceNamespace": NAMESPACE, "ResourceId": resource, "ScalableDimension": DIMENSION}
        self._call("register_scalable_target", MinCapacity=scaling.min, MaxCapacity=scaling.max, **where)
        crash_point("scaling-registered")
        wanted = {p.name for p in scaling.policies}
        for old in have.policies if have else ():
            if old.name not in wanted:
                self._call("delete_scaling_policy", PolicyName=old.name, **where)
        for policy in scaling.policies:
            self._call(
                "put_scaling_policy",
                PolicyName=policy.name,
                PolicyType=policy.kind,
                **{policy.member: dict(policy.config)},
                **where,
            )

    def deregister(self, endpoint: str, variant: str, have: Scaling | None) -> None:
        """AWS's procedure: its policies deleted, then the target deregistered (gone already: done)."""
        where = {
            "ServiceNamespace": NAMESPACE,
            "ResourceId": resource_id(endpoint, variant),
            "ScalableDimension": DIMENSION,
        }
        for policy in have.policies if have else ():
            self._gone_is_done(
                lambda p=policy: self._call("delete_scaling_policy", PolicyName=p.name, **where)
            )
        self._gone_is_done(lambda: self._call("deregister_scalable_target", **where))

    @staticmethod
    def _gone_is_done(call: Any) -> None:
        try:
            call()
        except PlatformError as exc:
            if "ObjectNotFoundException" not in str(exc) and "No scal" not in str(exc):
                raise


def _member(policy: Mapping[str, Any]) -> str:
    return ScalingPolicy("", str(policy["PolicyType"]), {}).member


def _plain(value: Any) -> Any:
    """A policy's configuration as JSON holds it (botocore gives back numbers and nested dicts)."""
    return json.loads(json.dumps(value, default=str))
