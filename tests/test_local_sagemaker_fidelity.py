"""What AWS checks, keeps and says, the local SageMaker checks, keeps and says too: names in any case,
variant lists, serverless sizes, instance types, settings it cannot honour, the endpoint's
Deleting state, ModelError's body and GetMetricData's errors. Each was found with a client we did
not write, where a typo passed locally and failed on AWS."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from manager.local_sagemaker import LocalSageMaker

from .local_sagemaker_support import ROLE, create_model, first_row, variant, wait_status


def _error(call: Any, **kwargs: Any) -> tuple[str, str]:
    with pytest.raises(ClientError) as info:
        call(**kwargs)
    return info.value.response["Error"]["Code"], info.value.response["Error"]["Message"]


@pytest.fixture
def sm(host: LocalSageMaker) -> Any:
    return host.client("sagemaker")


def test_names_that_differ_only_in_case_are_one_name(
    host: LocalSageMaker, sm: Any, artifacts: dict[str, Path]
) -> None:
    create_model(sm, "MyModel", artifacts["logistic"])
    assert _error(sm.create_model, ModelName="mymodel", PrimaryContainer={"Image": "i"})[0] == (
        "ValidationException"
    )
    assert sm.describe_model(ModelName="MYMODEL")["ModelName"] == "MyModel"
    assert sm.describe_model(ModelName="mymodel")["ModelArn"].endswith(":model/mymodel")
    sm.create_endpoint_config(EndpointConfigName="Cfg", ProductionVariants=[variant("A", "mymodel")])
    code, message = _error(
        sm.create_endpoint_config, EndpointConfigName="CFG", ProductionVariants=[variant("A", "MyModel")]
    )
    assert (code, "already existing" in message) == ("ValidationException", True)
    sm.create_endpoint(EndpointName="Ep", EndpointConfigName="cfg")
    wait_status(sm, "ep")
    assert _error(sm.create_endpoint, EndpointName="EP", EndpointConfigName="Cfg")[0] == "ValidationException"
    # The runtime finds it in any case too, and tags follow the one resource.
    answer = host.client("sagemaker-runtime").invoke_endpoint(
        EndpointName="EP", ContentType="text/csv", Body=first_row()
    )
    assert answer["InvokedProductionVariant"] == "A"
    arn = sm.describe_endpoint(EndpointName="EP")["EndpointArn"]
    assert arn.endswith(":endpoint/ep")
    sm.add_tags(ResourceArn=arn, Tags=[{"Key": "team", "Value": "ml"}])
    assert sm.list_tags(ResourceArn=arn)["Tags"] == [{"Key": "team", "Value": "ml"}]
    sm.delete_model(ModelName="MYMODEL")
    assert sm.list_models()["Models"] == []


def test_variant_lists_in_weight_updates_are_checked_as_aws_does(
    host: LocalSageMaker, sm: Any, artifacts: dict[str, Path]
) -> None:
    create_model(sm, "m", artifacts["logistic"])
    sm.create_endpoint_config(
        EndpointConfigName="c", ProductionVariants=[variant("A", "m"), variant("B", "m")]
    )
    sm.create_endpoint(EndpointName="ep", EndpointConfigName="c")
    wait_status(sm, "ep")
    arn = sm.describe_endpoint(EndpointName="ep")["EndpointArn"]
    code, message = _error(
        sm.update_endpoint_weights_and_capacities,
        EndpointName="ep",
        DesiredWeightsAndCapacities=[
            {"VariantName": "Z", "DesiredWeight": 1},
            {"VariantName": "Y", "DesiredWeight": 1},
        ],
    )
    # AWS lists the names in brackets without quotes; never a Python list's repr.
    assert (code, message) == (
        "ValidationException",
        f'The variant(s) "[Z, Y]" is/are not present in the endpoint "{arn}".',
    )
    code, message = _error(
        sm.update_endpoint_weights_and_capacities,
        EndpointName="ep",
        DesiredWeightsAndCapacities=[
            {"VariantName": "A", "DesiredWeight": 1},
            {"VariantName": "A", "DesiredWeight": 3},
        ],
    )
    assert code == "ValidationException" and "[A]" in message and "more than once" in message
    # Neither refused call changed anything.
    described = sm.describe_endpoint(EndpointName="ep")
    assert described["EndpointStatus"] == "InService"
    assert [v["CurrentWeight"] for v in described["ProductionVariants"]] == [1.0, 1.0]


@pytest.mark.parametrize(
    ("serverless", "fragment"),
    [
        ({"MemorySizeInMB": 512, "MaxConcurrency": 5}, "between 1024 and 6144"),
        ({"MemorySizeInMB": 1500, "MaxConcurrency": 5}, "not offered"),
        ({"MemorySizeInMB": 2048, "MaxConcurrency": 0}, "maxConcurrency"),
        ({"MemorySizeInMB": 2048, "MaxConcurrency": 5, "ProvisionedConcurrency": 6}, "must not exceed"),
    ],
)
def test_serverless_sizes_are_those_aws_offers(
    host: LocalSageMaker, artifacts: dict[str, Path], serverless: dict[str, int], fragment: str
) -> None:
    # botocore checks the bounds itself; SDKs that do not (and 1500 MB, which is in bounds) meet ours.
    sm = host.client("sagemaker", config=Config(parameter_validation=False))
    create_model(sm, "m", artifacts["logistic"])
    spec = {"VariantName": "A", "ModelName": "m", "ServerlessConfig": serverless}
    code, message = _error(sm.create_endpoint_config, EndpointConfigName="c", ProductionVariants=[spec])
    assert code == "ValidationException" and fragment in message, message
    assert sm.list_endpoint_configs()["EndpointConfigs"] == []


def test_a_serverless_variant_with_a_size_aws_offers_serves(
    sm: Any, host: LocalSageMaker, artifacts: dict[str, Path]
) -> None:
    create_model(sm, "m", artifacts["logistic"])
    spec = {
        "VariantName": "A",
        "ModelName": "m",
        "ServerlessConfig": {"MemorySizeInMB": 2048, "MaxConcurrency": 5},
    }
    sm.create_endpoint_config(EndpointConfigName="c", ProductionVariants=[spec])
    assert (
        sm.describe_endpoint_config(EndpointConfigName="c")["ProductionVariants"][0]["ServerlessConfig"]
        == (spec["ServerlessConfig"])
    )
    sm.create_endpoint(EndpointName="ep", EndpointConfigName="c")
    wait_status(sm, "ep")
    answer = host.client("sagemaker-runtime").invoke_endpoint(
        EndpointName="ep", ContentType="text/csv", Body=first_row()
    )
    assert 0.0 <= float(answer["Body"].read()) <= 1.0


def test_an_endpoint_instance_type_is_checked_against_the_service_model(
    sm: Any, artifacts: dict[str, Path]
) -> None:
    create_model(sm, "m", artifacts["logistic"])
    spec = {**variant("A", "m"), "InstanceType": "ml.m5.largee"}
    code, message = _error(sm.create_endpoint_config, EndpointConfigName="c", ProductionVariants=[spec])
    assert code == "ValidationException"
    assert message.startswith(
        "1 validation error detected: Value 'ml.m5.largee' at 'productionVariants.1.member.instanceType'"
    )
    assert "ml.m5.large," in message  # the allowed values, from botocore's copy of the service model


def test_settings_are_kept_and_returned_or_refused_never_dropped(
    sm: Any, host: LocalSageMaker, tmp_path: Path, artifacts: dict[str, Path]
) -> None:
    vpc = {"SecurityGroupIds": ["sg-0123456789abcdef0"], "Subnets": ["subnet-0123456789abcdef0"]}
    sm.create_model(
        ModelName="m",
        PrimaryContainer={"Image": "local/sklearn:1.9", "ModelDataUrl": artifacts["logistic"].as_uri()},
        ExecutionRoleArn=ROLE,
        VpcConfig=vpc,
        EnableNetworkIsolation=True,
    )
    model = sm.describe_model(ModelName="m")
    assert (model["VpcConfig"], model["EnableNetworkIsolation"]) == (vpc, True)

    key = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
    capture = {
        "EnableCapture": True,
        "InitialSamplingPercentage": 100,
        "DestinationS3Uri": (tmp_path / "capture").as_uri(),
        "CaptureOptions": [{"CaptureMode": "Input"}, {"CaptureMode": "Output"}],
        "KmsKeyId": key,
    }
    sm.create_endpoint_config(
        EndpointConfigName="c",
        ProductionVariants=[variant("A", "m")],
        KmsKeyId=key,
        DataCaptureConfig=capture,
    )
    config = sm.describe_endpoint_config(EndpointConfigName="c")
    assert (config["KmsKeyId"], config["DataCaptureConfig"]["KmsKeyId"]) == (key, key)
    sm.create_endpoint(EndpointName="ep", EndpointConfigName="c")
    assert wait_status(sm, "ep")["DataCaptureConfig"]["KmsKeyId"] == key

    code, message = _error(
        sm.create_endpoint_config,
        EndpointConfigName="async",
        ProductionVariants=[variant("A", "m")],
        AsyncInferenceConfig={"OutputConfig": {"S3OutputPath": "s3://bucket/out"}},
    )
    assert code == "ValidationException" and message.startswith("AsyncInferenceConfig is not supported")
    container = {"Image": "local/sklearn:1.9", "ModelDataUrl": artifacts["logistic"].as_uri()}
    code, message = _error(
        sm.create_model, ModelName="pipeline", Containers=[container, container], ExecutionRoleArn=ROLE
    )
    assert code == "ValidationException" and "inference pipelines" in message
    assert {c["EndpointConfigName"] for c in sm.list_endpoint_configs()["EndpointConfigs"]} == {"c"}
    assert {m["ModelName"] for m in sm.list_models()["Models"]} == {"m"}


def test_a_deleted_endpoint_shows_deleting_then_goes(tmp_path: Path, artifacts: dict[str, Path]) -> None:
    with LocalSageMaker(tmp_path / "state", provision_delay=0.5, seed=1) as host:
        sm, rt = host.client("sagemaker"), host.client("sagemaker-runtime")
        create_model(sm, "m", artifacts["logistic"])
        sm.create_endpoint_config(EndpointConfigName="c", ProductionVariants=[variant("A", "m")])
        sm.create_endpoint(EndpointName="ep", EndpointConfigName="c")
        wait_status(sm, "ep")
        host.clock.hold()  # Deleting lasts until the clock moves, however slow the checks below
        sm.delete_endpoint(EndpointName="ep")
        assert sm.describe_endpoint(EndpointName="ep")["EndpointStatus"] == "Deleting"
        assert [e["EndpointStatus"] for e in sm.list_endpoints()["Endpoints"]] == ["Deleting"]
        with pytest.raises(ClientError, match="Deleting"):
            rt.invoke_endpoint(EndpointName="ep", ContentType="text/csv", Body=first_row())
        code, message = _error(sm.create_endpoint, EndpointName="ep", EndpointConfigName="c")
        assert code == "ValidationException" and "already existing" in message
        host.clock.release()
        sm.get_waiter("endpoint_deleted").wait(
            EndpointName="ep", WaiterConfig={"Delay": 0.1, "MaxAttempts": 100}
        )
        assert _error(sm.describe_endpoint, EndpointName="ep")[1].startswith("Could not find endpoint")
        sm.create_endpoint(EndpointName="ep", EndpointConfigName="c")  # the name is free again
        wait_status(sm, "ep")


def test_the_model_error_body_is_as_aws_sends_it(
    host: LocalSageMaker, sm: Any, artifacts: dict[str, Path]
) -> None:
    create_model(sm, "m", artifacts["logistic"])
    sm.create_endpoint_config(EndpointConfigName="c", ProductionVariants=[variant("A", "m")])
    sm.create_endpoint(EndpointName="ep", EndpointConfigName="c")
    wait_status(sm, "ep")
    rt = host.client("sagemaker-runtime")
    bodies: list[bytes] = []
    rt.meta.events.register(
        "after-call.sagemaker-runtime.InvokeEndpoint",
        lambda http_response, **_: bodies.append(http_response.content),
    )
    with pytest.raises(ClientError) as info:
        rt.invoke_endpoint(EndpointName="ep", ContentType="text/csv", Body=b"garbage,1,2")
    assert info.value.response["Error"]["Code"] == "ModelError"
    body = json.loads(bodies[-1])
    assert set(body) == {"ErrorCode", "Message", "OriginalStatusCode", "OriginalMessage", "LogStreamArn"}
    assert body["ErrorCode"] == "CLIENT_ERROR_FROM_MODEL" and body["OriginalStatusCode"] == 400
    assert body["LogStreamArn"].startswith(
        "arn:aws:logs:us-east-1:123456789012:log-group:/aws/sagemaker/Endpoints/ep"
    )


def test_get_metric_data_errors_are_aws_codes_and_words(host: LocalSageMaker) -> None:
    cloudwatch = host.client("cloudwatch")
    now = datetime.now(UTC).replace(microsecond=0)

    def query(query_id: str = "n", stat: str = "Sum", period: int = 60) -> dict[str, Any]:
        metric = {
            "Namespace": "AWS/SageMaker",
            "MetricName": "Invocations",
            "Dimensions": [{"Name": "EndpointName", "Value": "ep"}, {"Name": "VariantName", "Value": "A"}],
        }
        return {"Id": query_id, "MetricStat": {"Metric": metric, "Period": period, "Stat": stat}}

    window = {"StartTime": now - timedelta(minutes=5), "EndTime": now}
    cases = [
        (
            {"MetricDataQueries": [query()], "StartTime": now, "EndTime": now},
            "ValidationError",
            "The parameter StartTime must not equal parameter EndTime.",
        ),
        (
            {"MetricDataQueries": [query()], "StartTime": now, "EndTime": now - timedelta(minutes=1)},
            "ValidationError",
            "The parameter EndTime must be greater than StartTime.",
        ),
        (
            {"MetricDataQueries": [query(), query()], **window},
            "ValidationError",
            "The values for parameter id in MetricDataQueries are not unique.",
        ),
        ({"MetricDataQueries": [query("Bad")], **window}, "ValidationError", None),
        ({"MetricDataQueries": [query(stat="bogus")], **window}, "ValidationError", None),
        ({"MetricDataQueries": [query(period=45)], **window}, "ValidationError", None),
        ({"MetricDataQueries": [query()], "NextToken": "not-a-token", **window}, "InvalidNextToken", None),
    ]
    for kwargs, code, message in cases:
        got = _error(cloudwatch.get_metric_data, **kwargs)
        assert got[0] == code, (kwargs, got)
        assert message is None or got[1] == message, got
    # The valid query still answers: nothing above broke the store.
    assert (
        cloudwatch.get_metric_data(MetricDataQueries=[query()], **window)["MetricDataResults"][0]["Values"]
        == []
    )
