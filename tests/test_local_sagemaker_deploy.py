"""UpdateEndpoint on the local SageMaker: blue/green shifting, failures, rollback, retained
properties, shadow variants, and state that survives a restart."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from manager.local_sagemaker import LocalSageMaker

from .local_sagemaker_support import (
    binomial_bounds,
    create_model,
    expected_scores,
    first_row,
    variant,
    wait_status,
)


def _setup(host: LocalSageMaker, artifacts: dict[str, Path]) -> tuple[Any, Any]:
    sm, rt = host.client("sagemaker"), host.client("sagemaker-runtime")
    for name in ("logistic", "prior"):
        create_model(sm, name, artifacts[name])
    sm.create_endpoint_config(
        EndpointConfigName="blue", ProductionVariants=[variant("AllTraffic", "logistic")]
    )
    sm.create_endpoint_config(EndpointConfigName="green", ProductionVariants=[variant("AllTraffic", "prior")])
    sm.create_endpoint(EndpointName="ep", EndpointConfigName="blue")
    wait_status(sm, "ep")
    return sm, rt


def _scores(rt: Any, n: int) -> list[float]:
    row = first_row()
    return [
        float(rt.invoke_endpoint(EndpointName="ep", ContentType="text/csv", Body=row)["Body"].read())
        for _ in range(n)
    ]


def _green(sm: Any) -> str | None:
    """The new fleet's status while an update is pending."""
    summary = sm.describe_endpoint(EndpointName="ep").get("PendingDeploymentSummary")
    return str(summary["ProductionVariants"][0]["VariantStatus"][0]["Status"]) if summary else None


def _wait_green(sm: Any, status: str, timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        described: dict[str, Any] = sm.describe_endpoint(EndpointName="ep")
        summary = described.get("PendingDeploymentSummary")
        if summary and summary["ProductionVariants"][0]["VariantStatus"][0]["Status"] == status:
            return described
        time.sleep(0.02)
    raise AssertionError(f"the new fleet never reached {status}")


@pytest.mark.slow
def test_canary_shifts_a_share_then_all_traffic(host: LocalSageMaker, artifacts: dict[str, Path]) -> None:
    sm, rt = _setup(host, artifacts)
    scores = expected_scores(artifacts)
    deployment = {
        "BlueGreenUpdatePolicy": {
            "TrafficRoutingConfiguration": {
                "Type": "CANARY",
                "WaitIntervalInSeconds": 3,
                "CanarySize": {"Type": "CAPACITY_PERCENT", "Value": 20},
            },
            "TerminationWaitInSeconds": 0,
        }
    }
    # The clock stands still while the 600 requests go out, however long they take: the canary's
    # 3-second wait cannot end in the middle of the sample.
    host.clock.hold()
    sm.update_endpoint(EndpointName="ep", EndpointConfigName="green", DeploymentConfig=deployment)
    assert _green(sm) == "Creating"
    host.clock.advance(0.25)  # past the provisioning delay: ActivatingTraffic once the models load
    during = _wait_green(sm, "ActivatingTraffic")
    assert during["EndpointStatus"] == "Updating" and during["EndpointConfigName"] == "blue"
    canary = Counter(_scores(rt, 600))
    low, high = binomial_bounds(600, 0.2)
    assert low <= canary[scores["prior"]] / 600 <= high
    host.clock.advance(2.5)
    assert _green(sm) == "ActivatingTraffic"  # 2.5 s into a 3 s wait: still the canary
    host.clock.advance(0.75)
    assert _green(sm) == "Baking"  # all traffic on the new fleet, for WaitIntervalInSeconds more
    assert set(_scores(rt, 50)) == {scores["prior"]}
    host.clock.advance(3)
    final = wait_status(sm, "ep")
    assert final["EndpointConfigName"] == "green"
    assert final["LastDeploymentConfig"] == deployment
    assert set(_scores(rt, 50)) == {scores["prior"]}


def test_linear_steps_then_bake(host: LocalSageMaker, artifacts: dict[str, Path]) -> None:
    sm, _ = _setup(host, artifacts)
    deployment = {
        "BlueGreenUpdatePolicy": {
            "TrafficRoutingConfiguration": {
                "Type": "LINEAR",
                "WaitIntervalInSeconds": 1,
                "LinearStepSize": {"Type": "CAPACITY_PERCENT", "Value": 50},
            }
        }
    }
    host.clock.hold()
    sm.update_endpoint(EndpointName="ep", EndpointConfigName="green", DeploymentConfig=deployment)
    host.clock.advance(0.25)
    _wait_green(sm, "ActivatingTraffic")  # 50% of the traffic
    host.clock.advance(0.5)
    assert _green(sm) == "ActivatingTraffic"
    host.clock.advance(0.75)  # the second step: 100%, then a bake of WaitIntervalInSeconds
    baking = sm.describe_endpoint(EndpointName="ep")
    assert _green(sm) == "Baking" and baking["EndpointStatus"] == "Updating"
    host.clock.advance(1)
    assert wait_status(sm, "ep")["EndpointConfigName"] == "green"


def test_an_artifact_that_fails_to_load_fails_the_update(
    host: LocalSageMaker, artifacts: dict[str, Path], tmp_path: Path
) -> None:
    sm, rt = _setup(host, artifacts)
    broken = tmp_path / "broken.joblib"
    broken.write_bytes(b"this is not a pickle")
    create_model(sm, "broken", broken)
    sm.create_endpoint_config(EndpointConfigName="bad", ProductionVariants=[variant("AllTraffic", "broken")])
    sm.update_endpoint(EndpointName="ep", EndpointConfigName="bad")
    described = wait_status(sm, "ep")
    assert described["EndpointConfigName"] == "blue"
    assert "Failed to load model artifacts" in described["FailureReason"]
    assert "broken.joblib" in described["FailureReason"]
    assert set(_scores(rt, 10)) == {expected_scores(artifacts)["logistic"]}


def test_a_failing_create_ends_failed(host: LocalSageMaker, tmp_path: Path) -> None:
    sm = host.client("sagemaker")
    sm.create_model(
        ModelName="missing",
        PrimaryContainer={"Image": "i", "ModelDataUrl": "s3://bucket/none/model.tar.gz"},
    )
    sm.create_endpoint_config(EndpointConfigName="c", ProductionVariants=[variant("A", "missing")])
    sm.create_endpoint(EndpointName="ep", EndpointConfigName="c")
    described = wait_status(sm, "ep", wanted="Failed")
    assert "not found" in described["FailureReason"]


def test_alarm_in_alarm_rolls_the_update_back(host: LocalSageMaker, artifacts: dict[str, Path]) -> None:
    sm, rt = _setup(host, artifacts)
    cw = host.client("cloudwatch")
    cw.put_metric_alarm(
        AlarmName="ep-5xx",
        Namespace="AWS/SageMaker",
        MetricName="Invocation5XXErrors",
        Statistic="Sum",
        Period=60,
        EvaluationPeriods=1,
        Threshold=1,
        ComparisonOperator="GreaterThanOrEqualToThreshold",
    )
    deployment = {
        "BlueGreenUpdatePolicy": {
            "TrafficRoutingConfiguration": {"Type": "ALL_AT_ONCE", "WaitIntervalInSeconds": 30}
        },
        "AutoRollbackConfiguration": {"Alarms": [{"AlarmName": "ep-5xx"}]},
    }
    host.clock.hold()
    sm.update_endpoint(EndpointName="ep", EndpointConfigName="green", DeploymentConfig=deployment)
    host.clock.advance(0.25)
    _wait_green(sm, "Baking")
    cw.set_alarm_state(AlarmName="ep-5xx", StateValue="ALARM", StateReason="test")
    assert cw.describe_alarms(AlarmNames=["ep-5xx"])["MetricAlarms"][0]["StateValue"] == "ALARM"
    assert sm.describe_endpoint(EndpointName="ep")["EndpointStatus"] == "RollingBack"
    host.clock.advance(0.25)
    described = wait_status(sm, "ep")
    assert described["EndpointConfigName"] == "blue"
    assert "ep-5xx" in described["FailureReason"]
    assert set(_scores(rt, 10)) == {expected_scores(artifacts)["logistic"]}


def test_retained_variant_properties(host: LocalSageMaker, artifacts: dict[str, Path]) -> None:
    sm = host.client("sagemaker")
    for name in ("logistic", "prior"):
        create_model(sm, name, artifacts[name])
    two = [variant("A", "logistic"), variant("B", "prior")]
    sm.create_endpoint_config(EndpointConfigName="c1", ProductionVariants=two)
    sm.create_endpoint_config(EndpointConfigName="c2", ProductionVariants=two)
    sm.create_endpoint(EndpointName="ep", EndpointConfigName="c1")
    wait_status(sm, "ep")
    sm.update_endpoint_weights_and_capacities(
        EndpointName="ep",
        DesiredWeightsAndCapacities=[{"VariantName": "A", "DesiredWeight": 0.25, "DesiredInstanceCount": 3}],
    )
    wait_status(sm, "ep")

    def weights_and_counts() -> list[tuple[float, int]]:
        return [
            (v["CurrentWeight"], v["CurrentInstanceCount"])
            for v in wait_status(sm, "ep")["ProductionVariants"]
        ]

    sm.update_endpoint(EndpointName="ep", EndpointConfigName="c2", RetainAllVariantProperties=True)
    assert weights_and_counts() == [(0.25, 3), (1.0, 1)]
    sm.update_endpoint(
        EndpointName="ep",
        EndpointConfigName="c1",
        RetainAllVariantProperties=True,
        ExcludeRetainedVariantProperties=[{"VariantPropertyType": "DesiredWeight"}],
    )
    assert weights_and_counts() == [(1.0, 3), (1.0, 1)]
    sm.update_endpoint(EndpointName="ep", EndpointConfigName="c2")
    assert weights_and_counts() == [(1.0, 1), (1.0, 1)]


def test_shadow_variant_gets_a_copy_and_never_answers(
    host: LocalSageMaker, artifacts: dict[str, Path]
) -> None:
    sm, rt = host.client("sagemaker"), host.client("sagemaker-runtime")
    for name in ("logistic", "prior"):
        create_model(sm, name, artifacts[name])
    sm.create_endpoint_config(
        EndpointConfigName="c",
        ProductionVariants=[variant("Prod", "logistic")],
        ShadowProductionVariants=[variant("Shadow", "prior")],
    )
    sm.create_endpoint(EndpointName="ep", EndpointConfigName="c")
    described = wait_status(sm, "ep")
    assert [v["VariantName"] for v in described["ShadowProductionVariants"]] == ["Shadow"]
    row = first_row()
    answers = set()
    for _ in range(40):
        response = rt.invoke_endpoint(EndpointName="ep", ContentType="text/csv", Body=row)
        assert response["InvokedProductionVariant"] == "Prod"
        answers.add(float(response["Body"].read()))
    assert answers == {expected_scores(artifacts)["logistic"]}
    deadline = time.monotonic() + 30  # shadow copies run after each answer is sent
    while _shadow_count(host) < 40 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _shadow_count(host) == 40


def _epoch(seconds: float) -> Any:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(seconds, UTC)


def _shadow_count(host: LocalSageMaker) -> float:
    points = host.metrics.datapoints(("ep", "Shadow", "Invocations"), _epoch(0), _epoch(2**33), 60, "Sum")
    return sum(v for _, v in points)


def test_state_survives_a_restart(tmp_path: Path, artifacts: dict[str, Path]) -> None:
    state = tmp_path / "state"
    with LocalSageMaker(state, provision_delay=0.1) as first:
        sm = first.client("sagemaker")
        for name in ("logistic", "prior"):
            create_model(sm, name, artifacts[name])
        sm.create_endpoint_config(
            EndpointConfigName="c", ProductionVariants=[variant("A", "logistic"), variant("B", "prior")]
        )
        sm.create_endpoint(EndpointName="ep", EndpointConfigName="c")
        wait_status(sm, "ep")
        sm.update_endpoint_weights_and_capacities(
            EndpointName="ep", DesiredWeightsAndCapacities=[{"VariantName": "A", "DesiredWeight": 0}]
        )
        wait_status(sm, "ep")
    with LocalSageMaker(state, provision_delay=0.1) as second:
        sm, rt = second.client("sagemaker"), second.client("sagemaker-runtime")
        described = sm.describe_endpoint(EndpointName="ep")
        assert described["EndpointStatus"] == "InService"
        assert [v["CurrentWeight"] for v in described["ProductionVariants"]] == [0.0, 1.0]
        assert {m["ModelName"] for m in sm.list_models()["Models"]} == {"logistic", "prior"}
        response = rt.invoke_endpoint(EndpointName="ep", ContentType="text/csv", Body=first_row())
        assert response["InvokedProductionVariant"] == "B"
        assert float(response["Body"].read()) == expected_scores(artifacts)["prior"]


def test_fault_injection_returns_5xx_and_counts_them(
    host: LocalSageMaker, artifacts: dict[str, Path]
) -> None:
    sm, rt = host.client("sagemaker"), host.client("sagemaker-runtime", config=_no_retries())
    create_model(sm, "flaky", artifacts["logistic"], {"LOCAL_SAGEMAKER_FAULT_5XX_RATE": "1.0"})
    sm.create_endpoint_config(EndpointConfigName="c", ProductionVariants=[variant("A", "flaky")])
    sm.create_endpoint(EndpointName="ep", EndpointConfigName="c")
    wait_status(sm, "ep")
    from botocore.exceptions import ClientError

    for _ in range(5):
        with pytest.raises(ClientError) as info:
            rt.invoke_endpoint(EndpointName="ep", ContentType="text/csv", Body=first_row())
        assert info.value.response["Error"]["Code"] == "ModelError"
        assert info.value.response["OriginalStatusCode"] == 500
    points = host.metrics.datapoints(("ep", "A", "Invocation5XXErrors"), _epoch(0), _epoch(2**33), 60, "Sum")
    assert sum(v for _, v in points) == 5


def _no_retries() -> Any:
    from botocore.config import Config

    return Config(retries={"max_attempts": 1})
