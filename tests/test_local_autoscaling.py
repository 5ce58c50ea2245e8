"""Application Auto Scaling on the local SageMaker, through a real boto3 `application-autoscaling`
client: scalable targets and target-tracking policies on endpoint variants, the scaling they do from
the host's own invocation metric (with its clock held), and AWS's rule that an UpdateEndpoint may
not remove a registered variant or change its instance type (docs/aws-rules.md, "Autoscaling")."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from manager.local_sagemaker import LocalSageMaker

from .local_sagemaker_support import create_model, first_row, settle, variant, wait_status

RESOURCE = "endpoint/ep/variant/AllTraffic"
DIMENSION = "sagemaker:variant:DesiredInstanceCount"


@pytest.fixture
def held(tmp_path: Path) -> Iterator[LocalSageMaker]:
    with LocalSageMaker(tmp_path / "state", provision_delay=5, seed=7, clock="held") as running:
        yield running


def _endpoint(host: LocalSageMaker, artifacts: dict[str, Path], count: int = 2) -> tuple[Any, Any, Any]:
    sm, aas = host.client("sagemaker"), host.client("application-autoscaling")
    for name in ("logistic", "prior"):
        create_model(sm, name, artifacts[name])
    sm.create_endpoint_config(
        EndpointConfigName="c5", ProductionVariants=[{**variant("AllTraffic", "logistic", count=count)}]
    )
    sm.create_endpoint(EndpointName="ep", EndpointConfigName="c5")
    settle(host, sm, "ep")
    return sm, host.client("sagemaker-runtime"), aas


def _register(aas: Any, low: int | None = 2, high: int | None = 6, resource: str = RESOURCE) -> None:
    extra = {k: v for k, v in (("MinCapacity", low), ("MaxCapacity", high)) if v is not None}
    aas.register_scalable_target(
        ServiceNamespace="sagemaker", ResourceId=resource, ScalableDimension=DIMENSION, **extra
    )


def _policy(aas: Any, target: float = 10.0, **more: Any) -> None:
    aas.put_scaling_policy(
        PolicyName="invocations",
        ServiceNamespace="sagemaker",
        ResourceId=RESOURCE,
        ScalableDimension=DIMENSION,
        PolicyType="TargetTrackingScaling",
        TargetTrackingScalingPolicyConfiguration={
            "TargetValue": target,
            "PredefinedMetricSpecification": {
                "PredefinedMetricType": "SageMakerVariantInvocationsPerInstance"
            },
            "ScaleOutCooldown": 60,
            "ScaleInCooldown": 60,
            **more,
        },
    )


def _count(sm: Any) -> int:
    return int(sm.describe_endpoint(EndpointName="ep")["ProductionVariants"][0]["DesiredInstanceCount"])


def _minutes(host: LocalSageMaker, sm: Any, rt: Any, per_minute: int, minutes: int) -> None:
    """`per_minute` invocations in each of `minutes` whole minutes of the host's clock."""
    row = first_row()
    host.clock.advance((61 - host.clock() % 60) % 60)  # one second into a minute (this one, if there)
    for _ in range(minutes):
        for _ in range(per_minute):
            rt.invoke_endpoint(EndpointName="ep", ContentType="text/csv", Body=row)
        host.clock.advance(60)
        sm.describe_endpoint(EndpointName="ep")  # the host acts when asked, as each tick asks


def _error(call: Any) -> tuple[str, str]:
    with pytest.raises(ClientError) as caught:
        call()
    return caught.value.response["Error"]["Code"], caught.value.response["Error"]["Message"]


def test_registering_a_target_checks_the_variant_and_moves_its_count_into_the_range(
    held: LocalSageMaker, artifacts: dict[str, Path]
) -> None:
    sm, _, aas = _endpoint(held, artifacts, count=1)
    code, message = _error(lambda: _register(aas, None, None))
    assert code == "ValidationException" and "MinCapacity and MaxCapacity are required" in message
    code, message = _error(lambda: _register(aas, 5, 3))
    assert code == "ValidationException" and "cannot be greater" in message
    code, _ = _error(lambda: _register(aas, resource="endpoint/ep/variant/nope"))
    assert code == "ValidationException"
    code, message = _error(lambda: _register(aas, resource="table/ep"))
    assert message == "Unsupported service namespace, resource type or scalable dimension"
    _register(aas, 2, 6)
    assert sm.describe_endpoint(EndpointName="ep")["EndpointStatus"] == "Updating"  # 1 -> 2, at once
    settle(held, sm, "ep")
    assert _count(sm) == 2
    _register(aas, high=8)  # re-registering changes only what it names
    (target,) = aas.describe_scalable_targets(ServiceNamespace="sagemaker")["ScalableTargets"]
    assert (target["MinCapacity"], target["MaxCapacity"], target["ResourceId"]) == (2, 8, RESOURCE)


def test_a_policy_needs_a_target_and_goes_with_it(held: LocalSageMaker, artifacts: dict[str, Path]) -> None:
    sm, _, aas = _endpoint(held, artifacts)
    code, message = _error(lambda: _policy(aas))
    assert code == "ObjectNotFoundException"
    assert message == (
        f"No scalable target registered for service namespace: sagemaker, resource ID: {RESOURCE}, "
        f"scalable dimension: {DIMENSION}"
    )
    _register(aas)
    _policy(aas)
    assert [
        p["PolicyName"]
        for p in aas.describe_scaling_policies(ServiceNamespace="sagemaker")["ScalingPolicies"]
    ] == ["invocations"]
    aas.deregister_scalable_target(
        ServiceNamespace="sagemaker", ResourceId=RESOURCE, ScalableDimension=DIMENSION
    )
    assert aas.describe_scaling_policies(ServiceNamespace="sagemaker")["ScalingPolicies"] == []
    code, _ = _error(
        lambda: aas.deregister_scalable_target(
            ServiceNamespace="sagemaker", ResourceId=RESOURCE, ScalableDimension=DIMENSION
        )
    )
    assert code == "ObjectNotFoundException"
    _register(aas)
    sm.delete_endpoint(EndpointName="ep")  # deleting the endpoint deregisters its targets, silently
    assert aas.describe_scalable_targets(ServiceNamespace="sagemaker")["ScalableTargets"] == []


def test_an_update_may_not_remove_a_registered_variant_or_change_its_instance_type(
    held: LocalSageMaker, artifacts: dict[str, Path]
) -> None:
    sm, _, aas = _endpoint(held, artifacts)
    _register(aas)
    sm.create_endpoint_config(
        EndpointConfigName="renamed", ProductionVariants=[variant("other", "logistic", count=2)]
    )
    bigger = {**variant("AllTraffic", "logistic", count=2), "InstanceType": "ml.c5.xlarge"}
    sm.create_endpoint_config(EndpointConfigName="bigger", ProductionVariants=[bigger])
    for config in ("renamed", "bigger"):
        code, message = _error(lambda c=config: sm.update_endpoint(EndpointName="ep", EndpointConfigName=c))
        assert (
            code == "ValidationException"
            and "DeregisterScalableTarget" in message
            and "[AllTraffic]" in message
        )
        assert sm.describe_endpoint(EndpointName="ep")["EndpointConfigName"] == "c5"
    # The one exception: a new model for the registered variant, same instance type.
    sm.create_endpoint_config(
        EndpointConfigName="model", ProductionVariants=[variant("AllTraffic", "prior", count=2)]
    )
    sm.update_endpoint(EndpointName="ep", EndpointConfigName="model")
    settle(held, sm, "ep")
    aas.deregister_scalable_target(
        ServiceNamespace="sagemaker", ResourceId=RESOURCE, ScalableDimension=DIMENSION
    )
    sm.update_endpoint(EndpointName="ep", EndpointConfigName="bigger")  # allowed once deregistered
    assert settle(held, sm, "ep")["EndpointConfigName"] == "bigger"


def test_target_tracking_scales_out_on_load_and_in_when_it_falls(
    held: LocalSageMaker, artifacts: dict[str, Path]
) -> None:
    sm, rt, aas = _endpoint(held, artifacts)
    _register(aas, 2, 5)
    _policy(aas, target=10.0)
    _minutes(held, sm, rt, per_minute=40, minutes=2)  # 20 per instance, but only 2 minutes of it
    assert _count(sm) == 2
    _minutes(held, sm, rt, per_minute=40, minutes=1)  # the third minute above the target
    assert _count(sm) == 4  # ceil(2 x 20 / 10)
    settle(held, sm, "ep", seconds=30)
    activity = aas.describe_scaling_activities(ServiceNamespace="sagemaker")["ScalingActivities"][0]
    assert activity["ResourceId"] == RESOURCE and "to 4" in activity["Description"]
    _minutes(held, sm, rt, per_minute=60, minutes=3)  # 15 per instance of 4: ceil(4 x 15/10) = 6 > max
    assert _count(sm) == 5
    settle(held, sm, "ep", seconds=30)
    _minutes(held, sm, rt, per_minute=10, minutes=14)  # 2 per instance, under 90% of 10, 14 minutes
    assert _count(sm) == 5
    _minutes(held, sm, rt, per_minute=10, minutes=1)  # the fifteenth
    assert _count(sm) == 2  # ceil(5 x 2 / 10) = 1, but never under MinCapacity


def test_scale_in_can_be_disabled_and_state_survives_a_restart(
    tmp_path: Path, artifacts: dict[str, Path]
) -> None:
    with LocalSageMaker(tmp_path / "state", provision_delay=5, seed=7, clock="held") as host:
        sm, rt, aas = _endpoint(host, artifacts, count=3)
        _register(aas, 2, 6)
        _policy(aas, target=10.0, DisableScaleIn=True)
        _minutes(host, sm, rt, per_minute=3, minutes=16)
        assert _count(sm) == 3
        stopped_at = host.clock()
    with LocalSageMaker(tmp_path / "state", provision_delay=5, seed=7, clock="held") as again:
        again.clock.advance(stopped_at - again.clock() + 1)
        aas = again.client("application-autoscaling")
        sm = again.client("sagemaker")
        wait_status(sm, "ep")
        (policy,) = aas.describe_scaling_policies(ServiceNamespace="sagemaker")["ScalingPolicies"]
        assert policy["TargetTrackingScalingPolicyConfiguration"]["DisableScaleIn"] is True
        assert (
            aas.describe_scalable_targets(ServiceNamespace="sagemaker")["ScalableTargets"][0]["MinCapacity"]
            == 2
        )
