"""`rollout plan`: the SageMaker calls a rollout would make against an endpoint as it is now, each
checked against AWS's rules (docs/aws-rules.md), changing nothing, like `terraform plan`.

The configs are built by the very functions the reconciler uses (`rollout/configs.py`), from the
hosting SageMaker describes now, so what the plan shows is what a rollout would send. A call AWS
would refuse carries the rule that refuses it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from manager import policy as policies
from manager.platforms.base import BlueGreen, ConfigSpec, PlatformError
from manager.platforms.requests import config_request, deployment_config, validate_blue_green, validate_config
from manager.platforms.scaling import DIMENSION, NAMESPACE, Scaling, resource_id
from manager.registry.tables import ModelVersion, Rollout
from manager.rollout import capacity, configs


@dataclass(frozen=True)
class Call:
    """One platform call: when in the rollout, which operation, what it does, and whether AWS takes it."""

    when: str
    operation: str
    what: str
    request: dict[str, Any] = field(default_factory=dict)
    refused: str | None = None  # the rule AWS would refuse it by

    def row(self) -> dict[str, Any]:
        return {
            "when": self.when,
            "call": self.operation,
            "what": self.what,
            "aws": f"REFUSED: {self.refused}" if self.refused else "ok",
        }


@dataclass(frozen=True)
class Subject:
    """What the rollout would compare: the variant serving now and its version, and the candidate."""

    baseline_variant: str
    baseline: ModelVersion
    candidate_variant: str
    candidate: ModelVersion


def calls(
    policy: policies.RolloutPolicy,
    served: ConfigSpec,
    subject: Subject,
    now: datetime,
    scaling: Mapping[str, Scaling] | None = None,
) -> list[Call]:
    """Deploy, each step, then the promotion and (what any step may lead to) the rollback, with the
    autoscaling calls around each config change and the candidate's capacity before each weight."""
    rollout = Rollout(
        baseline_variant=subject.baseline_variant, candidate_variant=subject.candidate_variant, weight=0.0
    )
    rollout.baseline, rollout.candidate = subject.baseline, subject.candidate
    target, walk = policy.target, _Walk(dict(scaling or {}), rollout)
    out = [Call("deploy", "CreateModel", f"{configs.Images().model(subject.candidate).name} (if absent)")]
    ab = configs.config_spec(
        target, configs.ab_placements(rollout, 0.0), "ab", now, served, rollout.baseline_variant
    )
    out += walk.change("deploy", ab, served, policy)
    current, weight = ab, 0.0
    for i, step in enumerate(policy.plan, start=1):
        when = f"step {i}"
        if step.set_weight is not None:
            weight = step.set_weight.percent
            out += walk.capacity(when, current, policy, weight)
            weights = {subject.baseline_variant: 100.0 - weight, subject.candidate_variant: weight}
            out.append(_weights(when, weights, current))
            out += walk.registrations(when, current, policy, weight)
        elif step.shadow is not None:
            spec, _ = configs.shadow_spec(target, rollout, "shadow", step.shadow.percent, now, current)
            out += walk.change(f"{when} shadow", spec, current, policy)
            back, _ = configs.shadow_spec(target, rollout, "unshadow", None, now, spec)
            out += walk.change(f"{when} end of shadow", back, spec, policy)
            current = back
    out += _promotion(policy, rollout, current, now, _Walk(dict(walk.have), rollout))
    back = configs.config_spec(
        target, [configs.survivor(rollout, False)], "rolledback", now, current, rollout.baseline_variant
    )
    out.append(_weights("rollback", {subject.candidate_variant: 0.0}, current))
    out += walk.change("rollback", back, current, policy)
    return out


@dataclass
class _Walk:
    """What Application Auto Scaling would hold as the plan goes, and the calls that change it."""

    have: dict[str, Scaling]
    rollout: Rollout
    count: int = 0  # the candidate's instances

    def change(
        self, when: str, spec: ConfigSpec, before: ConfigSpec, policy: policies.RolloutPolicy
    ) -> list[Call]:
        out = []
        for variant in capacity.to_free(self.have, before, spec):
            where = _resource(policy.target.endpoint, variant)
            for p in self.have[variant].policies:
                out.append(
                    Call(
                        when, "DeleteScalingPolicy", f"{p.name} of {variant}", {**where, "PolicyName": p.name}
                    )
                )
            out.append(
                Call(when, "DeregisterScalableTarget", f"{variant}: AWS refuses the update otherwise", where)
            )
            del self.have[variant]
        out += _update(when, spec, before, retain=bool(self.have))
        candidate = next((v for v in spec.production if v.name == self.rollout.candidate_variant), None)
        self.count = candidate.instance_count or 0 if candidate is not None else 0
        return out + self.registrations(when, spec, policy, None)

    def capacity(
        self, when: str, spec: ConfigSpec, policy: policies.RolloutPolicy, weight: float
    ) -> list[Call]:
        cap, base = policy.target.capacity, configs.hosting(spec, self.rollout.baseline_variant)
        if cap.mode != "proportional" or not self.count or base.instance_count is None:
            return []
        wanted = capacity.candidate_count(cap, base.instance_count, weight)
        if wanted <= self.count:
            return []
        self.count = wanted
        ratio = capacity.load_ratio(base.instance_count, wanted, weight)
        shown = f"{self.rollout.candidate_variant} to {wanted} instance(s) before its weight rises" + (
            f" (load per instance {ratio:.2f}x the baseline's)" if ratio is not None else ""
        )
        desired = [{"VariantName": self.rollout.candidate_variant, "DesiredInstanceCount": wanted}]
        return [
            Call(when, "UpdateEndpointWeightsAndCapacities", shown, {"DesiredWeightsAndCapacities": desired})
        ]

    def registrations(
        self, when: str, spec: ConfigSpec, policy: policies.RolloutPolicy, weight: float | None
    ) -> list[Call]:
        baseline, candidate = self.rollout.baseline_variant, self.rollout.candidate_variant
        cap = policy.target.capacity
        count = self.count
        base = configs.hosting(spec, baseline)
        if weight is not None and cap.mode == "proportional" and base.instance_count:
            count = capacity.candidate_count(cap, base.instance_count, weight)
        out = []
        for variant, want in sorted(
            capacity.wanted(self.have, spec, baseline, candidate, cap, count or 1).items()
        ):
            if want.same(self.have.get(variant)):
                continue
            where = _resource(policy.target.endpoint, variant)
            out.append(
                Call(
                    when,
                    "RegisterScalableTarget",
                    f"{variant}: {want.min}-{want.max} instances",
                    {**where, "MinCapacity": want.min, "MaxCapacity": want.max},
                )
            )
            out += [
                Call(
                    when,
                    "PutScalingPolicy",
                    f"{p.name} on {variant}",
                    {**where, "PolicyName": p.name, "PolicyType": p.kind},
                )
                for p in want.policies
            ]
            self.have[variant] = want
        return out


def _resource(endpoint: str, variant: str) -> dict[str, Any]:
    return {
        "ServiceNamespace": NAMESPACE,
        "ResourceId": resource_id(endpoint, variant),
        "ScalableDimension": DIMENSION,
    }


def _promotion(
    policy: policies.RolloutPolicy, rollout: Rollout, current: ConfigSpec, now: datetime, walk: _Walk
) -> list[Call]:
    target, promotion = policy.target, policy.decisions.promotion
    winner = configs.config_spec(
        target, [configs.survivor(rollout, True)], "promoted", now, current, rollout.baseline_variant
    )
    bg = promotion.blue_green if promotion.mode == "blueGreen" else None
    if bg is None:
        return walk.change("promote", winner, current, policy)
    guard = BlueGreen(bg.routing, bg.size_percent, bg.wait_seconds, tuple(bg.alarms))
    blue = configs.config_spec(
        target, [configs.survivor(rollout, False)], "blue", now, current, rollout.baseline_variant
    )
    out = [_weights("promote", {rollout.candidate_variant: 0.0}, current)]
    out += walk.change("promote: the baseline alone first", blue, current, policy)
    out += _update("promote: guarded", winner, blue, guard, retain=bool(walk.have))
    return out


def _update(
    when: str, spec: ConfigSpec, before: ConfigSpec, guard: BlueGreen | None = None, retain: bool = False
) -> list[Call]:
    """CreateEndpointConfig for `spec`, then UpdateEndpoint to it from `before` (with `guard`); an
    autoscaled endpoint (`retain`) keeps each variant's live count."""
    refused = _refusal(lambda: validate_config(spec))
    hosting = "; ".join(_variant(v) for v in spec.variants)
    create = Call(when, "CreateEndpointConfig", f"{spec.name}: {hosting}", config_request(spec), refused)
    request: dict[str, Any] = {"EndpointConfigName": spec.name, "RetainAllVariantProperties": retain}
    if retain:
        request["ExcludeRetainedVariantProperties"] = [{"VariantPropertyType": "DesiredWeight"}]
    what = f"to {spec.name}"
    problem = None
    if guard is not None:
        request["DeploymentConfig"] = deployment_config(guard)
        what += f" with blue/green {guard.routing.lower()}" + (
            f" {guard.size_percent}%" if guard.size_percent else ""
        )
        problem = _refusal(lambda: validate_blue_green(guard))
        old, new = sorted(v.name for v in before.production), sorted(v.name for v in spec.production)
        if problem is None and old != new:
            problem = f"guardrails need the same variant names ({', '.join(old)} -> {', '.join(new)})"
    return [create, Call(when, "UpdateEndpoint", what, request, problem)]


def _weights(when: str, weights: dict[str, float], config: ConfigSpec) -> Call:
    names = {v.name for v in config.production}
    missing = sorted(set(weights) - names)
    refused = f"the endpoint has no variant {', '.join(missing)}" if missing else None
    shown = ", ".join(f"{k} {v:g}" for k, v in weights.items())
    desired = [{"VariantName": k, "DesiredWeight": v} for k, v in weights.items()]
    return Call(
        when, "UpdateEndpointWeightsAndCapacities", shown, {"DesiredWeightsAndCapacities": desired}, refused
    )


def _variant(v: Any) -> str:
    if v.serverless:
        where = f"serverless {v.settings['ServerlessConfig'].get('MemorySizeInMB')} MB"
    else:
        where = f"{v.instance_count} x {v.instance_type}"
    extra = f" +{len(v.settings)} settings" if v.settings and not v.serverless else ""
    kind = "shadow " if v.shadow else ""
    return f"{kind}{v.name}={v.model_name} weight {v.weight:g} on {where}{extra}"


def _refusal(check: Any) -> str | None:
    try:
        check()
    except PlatformError as exc:
        return str(exc)
    return None
