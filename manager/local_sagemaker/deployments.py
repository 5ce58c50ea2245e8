"""SageMaker's deployment guardrails as the local SageMaker runs them: a blue/green update's traffic
plan (all at once, canary or linear, with their waits and the bake), and the rules AWS applies to it
(docs/aws-rules.md lists each with its source)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from manager.local_sagemaker.protocol import check_bounds, validation

if TYPE_CHECKING:
    from manager.local_sagemaker.fleet import Variant


@dataclass
class ShiftPoint:
    """From `at` seconds after the new fleet is ready, `fraction` of traffic goes to it."""

    at: float
    fraction: float


def traffic_plan(
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
    # TerminationWaitInSeconds, MaximumExecutionTimeoutInSeconds: botocore's bounds
    check_bounds("BlueGreenUpdatePolicy", policy, "deploymentConfig.blueGreenUpdatePolicy")
    rollback = deployment.get("AutoRollbackConfiguration") or {}
    listed = rollback.get("Alarms")
    if listed is not None and not 1 <= len(listed) <= 10:  # botocore's AlarmList: min 1, max 10
        raise validation(
            "1 validation error detected: Value at 'deploymentConfig.autoRollbackConfiguration.alarms' "
            "failed to satisfy constraint: Member must have length less than or equal to 10"
            if listed
            else "1 validation error detected: Value at 'deploymentConfig.autoRollbackConfiguration.alarms' "
            "failed to satisfy constraint: Member must have length greater than or equal to 1"
        )
    alarms = [str(a.get("AlarmName")) for a in listed or []]
    for alarm in alarms:  # botocore's AlarmName: 1-255 characters, not blank
        if not re.fullmatch(r"(?!\s*$).{1,255}", alarm, re.DOTALL):
            raise validation(
                f"1 validation error detected: Value '{alarm[:300]}' at "
                "'deploymentConfig.autoRollbackConfiguration.alarms.1.member.alarmName' failed to satisfy "
                "constraint: Member must have length between 1 and 255 and not be blank"
            )
    instances = sum(v.count for v in variants)

    def size(spec: dict[str, Any] | None, label: str) -> float:
        if not spec:
            raise validation(f"{label} is required for {kind} traffic routing")
        value = spec.get("Value")
        if spec.get("Type") == "CAPACITY_PERCENT" and isinstance(value, int) and 0 < value <= 100:
            return float(value) / 100
        if spec.get("Type") == "INSTANCE_COUNT" and isinstance(value, int) and 0 < value <= instances:
            return value / instances
        raise validation(f"{label} must be CAPACITY_PERCENT 1-100 or INSTANCE_COUNT 1-{instances}")

    if kind == "ALL_AT_ONCE":
        steps = [ShiftPoint(0, 1.0)]
    elif kind == "CANARY":
        # TrafficRoutingConfig.CanarySize: "less than or equal to 50% of the variant's total
        # instance count".
        canary = size(routing.get("CanarySize"), "CanarySize")
        if canary > 0.5:
            raise validation(
                "CanarySize must be less than or equal to 50% of the variant's total instance count"
            )
        steps = [ShiftPoint(0, canary), ShiftPoint(wait, 1.0)]
    elif kind == "LINEAR":
        # TrafficRoutingConfig.LinearStepSize: "10-50% of the variant's total instance count".
        step = size(routing.get("LinearStepSize"), "LinearStepSize")
        if not 0.1 <= step <= 0.5:
            raise validation("LinearStepSize must be 10-50% of the variant's total instance count")
        count = int(1 / step) + (0 if abs(1 / step - round(1 / step)) < 1e-9 else 1)
        steps = [ShiftPoint(i * wait, min(1.0, (i + 1) * step)) for i in range(count)]
    else:
        raise validation(f"Unknown TrafficRoutingConfiguration Type {kind}")
    return steps, steps[-1].at + wait, alarms


def same_variant_names(old: list[Variant], new: list[Variant]) -> None:
    """Developer guide, "Deployment guardrails: Exclusions": "When doing a blue/green or rolling
    deployment, your new endpoint configuration must have the same variant name as the old endpoint
    configuration." Read strictly: the same set of production variant names."""
    before, after = sorted(v.name for v in old), sorted(v.name for v in new)
    if before != after:
        raise validation(
            "A blue/green or rolling deployment needs the new endpoint configuration to have the same "
            f"variant name(s) as the old one: the endpoint has [{', '.join(before)}], the new "
            f"configuration [{', '.join(after)}]."
        )
