"""The local SageMaker, driven only through unmodified boto3 clients over real HTTP."""

from __future__ import annotations

import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from manager.local_sagemaker import LocalSageMaker

from .local_sagemaker_support import (
    binomial_bounds,
    create_model,
    expected_scores,
    first_row,
    settle,
    until,
    variant,
    wait_status,
)


@pytest.fixture
def sm(host: LocalSageMaker) -> Any:
    return host.client("sagemaker")


@pytest.fixture
def sm_raw(host: LocalSageMaker) -> Any:
    """botocore's own checks off, so every rule a test sees is the host's, as on AWS."""
    return host.client("sagemaker", config=Config(parameter_validation=False, retries={"max_attempts": 1}))


@pytest.fixture
def rt(host: LocalSageMaker) -> Any:
    return host.client("sagemaker-runtime")


@pytest.fixture
def cw(host: LocalSageMaker) -> Any:
    return host.client("cloudwatch")


def _deploy(
    sm: Any,
    artifacts: dict[str, Path],
    endpoint: str = "ep",
    variants: list[dict[str, Any]] | None = None,
    **config: Any,
) -> None:
    for name in ("logistic", "prior"):
        create_model(sm, name, artifacts[name])
    sm.create_endpoint_config(
        EndpointConfigName=f"{endpoint}-c1",
        ProductionVariants=variants or [variant("A", "logistic"), variant("B", "prior")],
        **config,
    )
    sm.create_endpoint(EndpointName=endpoint, EndpointConfigName=f"{endpoint}-c1")
    wait_status(sm, endpoint)


def _invoke_many(rt: Any, n: int, endpoint: str = "ep", threads: int = 4, **kwargs: Any) -> Counter[str]:
    row = first_row()

    def one(_: int) -> str:
        response = rt.invoke_endpoint(EndpointName=endpoint, ContentType="text/csv", Body=row, **kwargs)
        response["Body"].read()
        return str(response["InvokedProductionVariant"])

    with ThreadPoolExecutor(threads) as pool:
        return Counter(pool.map(one, range(n)))


def _code(info: pytest.ExceptionInfo[ClientError]) -> str:
    return str(info.value.response["Error"]["Code"])


def _metric_sum(cw: Any, endpoint: str, variant_name: str, metric: str, stat: str = "Sum") -> float:
    now = datetime.now(UTC)
    result = cw.get_metric_data(
        MetricDataQueries=[
            {
                "Id": "q",
                "MetricStat": {
                    "Metric": {
                        "Namespace": "AWS/SageMaker",
                        "MetricName": metric,
                        "Dimensions": [
                            {"Name": "EndpointName", "Value": endpoint},
                            {"Name": "VariantName", "Value": variant_name},
                        ],
                    },
                    "Period": 60,
                    "Stat": stat,
                },
            }
        ],
        StartTime=now - timedelta(minutes=30),
        EndTime=now + timedelta(minutes=1),
    )
    return float(sum(result["MetricDataResults"][0]["Values"]))


@pytest.mark.slow
def test_public_ab_flow(host: LocalSageMaker, sm: Any, rt: Any, cw: Any, artifacts: dict[str, Path]) -> None:
    # 1. two models, one config with two variants at weight 1
    _deploy(sm, artifacts)
    described = sm.describe_endpoint(EndpointName="ep")
    assert [(v["VariantName"], v["CurrentWeight"]) for v in described["ProductionVariants"]] == [
        ("A", 1.0),
        ("B", 1.0),
    ]

    # 2. 4,000 invocations split by weight
    counts = _invoke_many(rt, 4000)
    low, high = binomial_bounds(4000, 0.5)
    assert low <= counts["A"] / 4000 <= high and counts["A"] + counts["B"] == 4000

    # 3. TargetVariant overrides the weights
    assert _invoke_many(rt, 50, TargetVariant="B") == Counter({"B": 50})

    # 4. weights to 25/75: Updating, then InService with the new CurrentWeight, and routed so. The
    # host's clock is held from here: each state lasts until the test moves it on.
    host.clock.hold()
    sm.update_endpoint_weights_and_capacities(
        EndpointName="ep",
        DesiredWeightsAndCapacities=[
            {"VariantName": "A", "DesiredWeight": 1},
            {"VariantName": "B", "DesiredWeight": 3},
        ],
    )
    updating = sm.describe_endpoint(EndpointName="ep")
    assert updating["EndpointStatus"] == "Updating"
    assert updating["ProductionVariants"][1]["DesiredWeight"] == 3.0
    assert updating["ProductionVariants"][1]["CurrentWeight"] == 1.0
    assert updating["ProductionVariants"][1]["VariantStatus"][0]["Status"] == "Updating"
    assert sm.describe_endpoint(EndpointName="ep")["EndpointStatus"] == "Updating"
    done = settle(host, sm, "ep", seconds=1)
    assert [v["CurrentWeight"] for v in done["ProductionVariants"]] == [1.0, 3.0]
    shifted = _invoke_many(rt, 4000)
    low, high = binomial_bounds(4000, 0.25)
    assert low <= shifted["A"] / 4000 <= high

    # 5. weights to 0/1: everything goes to B
    sm.update_endpoint_weights_and_capacities(
        EndpointName="ep",
        DesiredWeightsAndCapacities=[
            {"VariantName": "A", "DesiredWeight": 0},
            {"VariantName": "B", "DesiredWeight": 1},
        ],
    )
    settle(host, sm, "ep", seconds=1)
    assert _invoke_many(rt, 200) == Counter({"B": 200})

    # 6. UpdateEndpoint to a single-variant config
    sm.create_endpoint_config(EndpointConfigName="ep-c2", ProductionVariants=[variant("B", "prior")])
    sm.update_endpoint(EndpointName="ep", EndpointConfigName="ep-c2")
    pending = sm.describe_endpoint(EndpointName="ep")
    assert pending["EndpointStatus"] == "Updating" and pending["EndpointConfigName"] == "ep-c1"
    assert pending["PendingDeploymentSummary"]["EndpointConfigName"] == "ep-c2"
    final = settle(host, sm, "ep", seconds=1)
    assert final["EndpointConfigName"] == "ep-c2"
    assert [v["VariantName"] for v in final["ProductionVariants"]] == ["B"]
    assert "PendingDeploymentSummary" not in final
    assert _invoke_many(rt, 20) == Counter({"B": 20})

    # 7. CloudWatch counts every invocation, per variant
    total_a = counts["A"] + shifted["A"]
    total_b = counts["B"] + 50 + shifted["B"] + 200 + 20
    assert _metric_sum(cw, "ep", "A", "Invocations") == total_a
    assert _metric_sum(cw, "ep", "B", "Invocations") == total_b
    assert _metric_sum(cw, "ep", "B", "Invocation5XXErrors") == 0
    assert _metric_sum(cw, "ep", "A", "ModelLatency", "SampleCount") == total_a

    # 8. delete everything: the endpoint shows Deleting, stops answering, then is gone, as on AWS,
    # where a user waits with the endpoint_deleted waiter
    sm.delete_endpoint(EndpointName="ep")
    assert sm.describe_endpoint(EndpointName="ep")["EndpointStatus"] == "Deleting"
    with pytest.raises(ClientError, match="not in service"):
        rt.invoke_endpoint(EndpointName="ep", ContentType="text/csv", Body=first_row())
    assert sm.describe_endpoint(EndpointName="ep")["EndpointStatus"] == "Deleting"
    host.clock.advance(1)
    sm.get_waiter("endpoint_deleted").wait(
        EndpointName="ep", WaiterConfig={"Delay": 0.05, "MaxAttempts": 200}
    )
    for config in ("ep-c1", "ep-c2"):
        sm.delete_endpoint_config(EndpointConfigName=config)
    for model in ("logistic", "prior"):
        sm.delete_model(ModelName=model)
    assert sm.list_endpoints()["Endpoints"] == []
    assert sm.list_endpoint_configs()["EndpointConfigs"] == []
    assert sm.list_models()["Models"] == []


def test_update_endpoint_under_load_drops_no_request(
    sm: Any, host: LocalSageMaker, artifacts: dict[str, Path]
) -> None:
    scores = expected_scores(artifacts)
    _deploy(sm, artifacts, variants=[variant("AllTraffic", "logistic")])
    sm.create_endpoint_config(EndpointConfigName="ep-c2", ProductionVariants=[variant("AllTraffic", "prior")])
    stop = threading.Event()
    answers: list[float] = []
    failures: list[BaseException] = []
    lock = threading.Lock()

    def client_loop() -> None:
        rt = host.client("sagemaker-runtime")
        row = first_row()
        while not stop.is_set():
            try:
                body = rt.invoke_endpoint(EndpointName="ep", ContentType="text/csv", Body=row)["Body"].read()
                with lock:
                    answers.append(float(body))
            except BaseException as exc:  # every failure is a defect here; collect them all
                with lock:
                    failures.append(exc)

    threads = [threading.Thread(target=client_loop) for _ in range(8)]
    for t in threads:
        t.start()
    until(lambda: len(answers) > 50, "answers from the first config")
    sm.update_endpoint(EndpointName="ep", EndpointConfigName="ep-c2")
    wait_status(sm, "ep")
    served = len(answers)
    until(lambda: len(answers) > served + 50, "answers after the update")
    stop.set()
    for t in threads:
        t.join()

    assert failures == []
    assert len(answers) > 100
    assert set(answers) == {scores["logistic"], scores["prior"]}
    assert answers[-1] == scores["prior"]


def _error(call: Any, **kwargs: Any) -> tuple[str, str]:
    with pytest.raises(ClientError) as info:
        call(**kwargs)
    return _code(info), str(info.value.response["Error"]["Message"])


def test_validation_rules_give_aws_error_codes(sm_raw: Any, artifacts: dict[str, Path]) -> None:
    sm = sm_raw
    create_model(sm, "logistic", artifacts["logistic"])
    v = variant("A", "logistic")
    cases = [
        (
            sm.create_model,
            {"ModelName": "x" * 64, "PrimaryContainer": {"Image": "i"}},
            "length less than or equal to 63",
        ),
        (
            sm.create_model,
            {"ModelName": "bad_name", "PrimaryContainer": {"Image": "i"}},
            "regular expression",
        ),
        (
            sm.create_endpoint_config,
            {"EndpointConfigName": "c0", "ProductionVariants": []},
            "between 1 and 10",
        ),
        (
            sm.create_endpoint_config,
            {
                "EndpointConfigName": "c11",
                "ProductionVariants": [variant(f"v{i}", "logistic") for i in range(11)],
            },
            "between 1 and 10",
        ),
        (
            sm.create_endpoint_config,
            {"EndpointConfigName": "cdup", "ProductionVariants": [v, v]},
            "not unique",
        ),
        (
            sm.create_endpoint_config,
            {"EndpointConfigName": "cneg", "ProductionVariants": [variant("A", "logistic", weight=-1)]},
            ">= 0",
        ),
        (
            sm.create_endpoint_config,
            {"EndpointConfigName": "cmiss", "ProductionVariants": [variant("A", "ghost")]},
            "Could not find model",
        ),
        (
            sm.create_endpoint,
            {"EndpointName": "e1", "EndpointConfigName": "nope"},
            "Could not find endpoint configuration",
        ),
        (sm.describe_endpoint, {"EndpointName": "nope"}, "Could not find endpoint"),
        (sm.describe_model, {"ModelName": "nope"}, "Could not find model"),
        (
            sm.create_model,
            {"ModelName": "logistic", "PrimaryContainer": {"Image": "i"}},
            "Cannot create already existing model",
        ),
    ]
    for call, kwargs, fragment in cases:
        code, message = _error(call, **kwargs)
        assert code == "ValidationException", (kwargs, message)
        assert fragment in message, (kwargs, message)


def test_endpoint_lifecycle_rules(sm_raw: Any, artifacts: dict[str, Path]) -> None:
    sm = sm_raw
    create_model(sm, "logistic", artifacts["logistic"])
    sm.create_endpoint_config(EndpointConfigName="c1", ProductionVariants=[variant("A", "logistic")])
    sm.create_endpoint(EndpointName="ep", EndpointConfigName="c1")
    assert _error(sm.create_endpoint, EndpointName="ep", EndpointConfigName="c1") == (
        "ValidationException",
        'Cannot create already existing endpoint "arn:aws:sagemaker:us-east-1:123456789012:endpoint/ep".',
    )
    code, message = _error(sm.update_endpoint, EndpointName="ep", EndpointConfigName="c1")
    assert (code, message.startswith("Cannot update in-progress endpoint")) == ("ValidationException", True)
    wait_status(sm, "ep")
    sm.update_endpoint_weights_and_capacities(
        EndpointName="ep", DesiredWeightsAndCapacities=[{"VariantName": "A", "DesiredWeight": 2}]
    )
    code, message = _error(sm.update_endpoint, EndpointName="ep", EndpointConfigName="c1")
    assert code == "ValidationException" and "in-progress" in message
    wait_status(sm, "ep")
    code, message = _error(
        sm.update_endpoint_weights_and_capacities,
        EndpointName="ep",
        DesiredWeightsAndCapacities=[{"VariantName": "Z", "DesiredWeight": 1}],
    )
    assert code == "ValidationException" and "not present" in message
    code, _ = _error(
        sm.update_endpoint_weights_and_capacities,
        EndpointName="ep",
        DesiredWeightsAndCapacities=[{"VariantName": "A", "DesiredWeight": -1}],
    )
    assert code == "ValidationException"
    # Like AWS, an in-use config can be deleted; the endpoint keeps serving.
    sm.delete_endpoint_config(EndpointConfigName="c1")
    assert sm.describe_endpoint(EndpointName="ep")["EndpointStatus"] == "InService"


def test_bad_payloads_get_4xx_and_the_host_survives(
    sm: Any, rt: Any, host: LocalSageMaker, artifacts: dict[str, Path]
) -> None:
    _deploy(sm, artifacts, variants=[variant("A", "logistic")])
    payloads = [b"garbage,1,2", b"", b"1,2,3", b"\xff\xfe\x00", b"nan," * 29 + b"nan"]
    for body in payloads:
        with pytest.raises(ClientError) as info:
            rt.invoke_endpoint(EndpointName="ep", ContentType="text/csv", Body=body)
        assert _code(info) == "ModelError"
        assert info.value.response["OriginalStatusCode"] == 400
        assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 424
    for body in (b"{not json", b'{"instances": "x"}'):
        with pytest.raises(ClientError) as info:
            rt.invoke_endpoint(EndpointName="ep", ContentType="application/json", Body=body)
        assert info.value.response["OriginalStatusCode"] == 400
    with pytest.raises(ClientError) as info:
        rt.invoke_endpoint(EndpointName="ep", ContentType="text/csv", Body=b"1," * (3_200_000))
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 413
    with pytest.raises(ClientError) as info:
        rt.invoke_endpoint(EndpointName="ghost", ContentType="text/csv", Body=first_row())
    assert _code(info) == "ValidationError" and "ghost" in str(info.value)
    ok = rt.invoke_endpoint(
        EndpointName="ep", ContentType="application/json", Body='{"instances": [[' + first_row() + "]]}"
    )
    assert ok["ContentType"] == "application/json"
    assert 0 <= __import__("json").loads(ok["Body"].read())["predictions"][0]["score"] <= 1
    cw = host.client("cloudwatch")
    assert _metric_sum(cw, "ep", "A", "Invocation4XXErrors") == len(payloads) + 2
    assert _metric_sum(cw, "ep", "A", "Invocations") == len(payloads) + 3
