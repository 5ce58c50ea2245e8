"""The local SageMaker never falls over: deleting a model in use, path traversal in S3 URIs,
malformed requests, non-finite weights, and no file descriptor left open by deleted endpoints."""

from __future__ import annotations

import json
import os
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from manager.local_sagemaker import LocalSageMaker

from .local_sagemaker_support import create_model, first_row, variant, wait_status

RAW = Config(parameter_validation=False, retries={"max_attempts": 1})


@pytest.fixture
def raw(host: LocalSageMaker) -> Any:
    """botocore's own checks off: what reaches the host is what a careless client could send."""
    return host.client("sagemaker", config=RAW)


def _error(call: Any, **kwargs: Any) -> tuple[int, str, str]:
    with pytest.raises(ClientError) as info:
        call(**kwargs)
    response = info.value.response
    return (
        response["ResponseMetadata"]["HTTPStatusCode"],
        response["Error"]["Code"],
        response["Error"]["Message"],
    )


def test_deleting_a_model_while_its_endpoint_is_creating_breaks_nothing(
    host: LocalSageMaker, artifacts: dict[str, Path]
) -> None:
    sm, rt = host.client("sagemaker"), host.client("sagemaker-runtime")
    create_model(sm, "m", artifacts["logistic"])
    sm.create_endpoint_config(EndpointConfigName="c", ProductionVariants=[variant("A", "m")])
    sm.create_endpoint(EndpointName="ep", EndpointConfigName="c")
    sm.delete_model(ModelName="m")  # as on AWS: the endpoint keeps what it was created with
    wait_status(sm, "ep")
    answer = rt.invoke_endpoint(EndpointName="ep", ContentType="text/csv", Body=first_row())
    assert answer["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert sm.list_endpoints()["Endpoints"][0]["EndpointStatus"] == "InService"
    assert sm.list_models()["Models"] == []


@pytest.mark.parametrize(
    "uri",
    [
        "s3://bucket/../../outside/model.joblib",
        "s3://bucket/%2e%2e/%2e%2e/outside/model.joblib",
        "s3://bucket/a/%2E%2E/%2E%2E/%2E%2E/outside",
        "s3://../outside/model.joblib",
        "s3://bucket/a/./b",
    ],
)
def test_s3_uris_cannot_leave_the_state_directory(raw: Any, uri: str, artifacts: dict[str, Path]) -> None:
    status, code, message = _error(
        raw.create_model,
        ModelName="m",
        PrimaryContainer={"Image": "local/sklearn", "ModelDataUrl": uri},
        ExecutionRoleArn="arn:aws:iam::000000000000:role/r",
    )
    assert (status, code) == (400, "ValidationException") and "ModelDataUrl" in message
    create_model(raw, "ok", artifacts["logistic"])
    capture = {
        "EnableCapture": True,
        "InitialSamplingPercentage": 100,
        "DestinationS3Uri": uri,
        "CaptureOptions": [{"CaptureMode": "Input"}],
    }
    status, code, message = _error(
        raw.create_endpoint_config,
        EndpointConfigName="c",
        ProductionVariants=[variant("A", "ok")],
        DataCaptureConfig=capture,
    )
    assert (status, code) == (400, "ValidationException") and "DestinationS3Uri" in message


@pytest.mark.parametrize(
    "operation,request_body",
    [
        ("CreateModel", {"ModelName": "m", "PrimaryContainer": "not-a-container"}),
        ("CreateModel", {"ModelName": "m", "Containers": ["x"]}),
        ("CreateModel", {"ModelName": 7, "PrimaryContainer": {"Image": "i"}}),
        ("ListModels", {"MaxResults": "abc"}),
        ("ListModels", {"MaxResults": -5}),
        ("ListModels", {"NextToken": "not-a-token"}),
        ("CreateEndpointConfig", {"EndpointConfigName": "c", "ProductionVariants": "A"}),
        ("CreateEndpointConfig", {"EndpointConfigName": "c", "ProductionVariants": [["A"]]}),
        ("CreateEndpointConfig", {"EndpointConfigName": "c", "ProductionVariants": [{"VariantName": "A"}]}),
        ("DescribeEndpoint", {"EndpointName": ["ep"]}),
        ("UpdateEndpointWeightsAndCapacities", {"EndpointName": "ep", "DesiredWeightsAndCapacities": ["A"]}),
    ],
)
def test_malformed_requests_get_a_4xx_in_aws_shape(
    host: LocalSageMaker, raw: Any, operation: str, request_body: dict[str, Any]
) -> None:
    """Sent as raw JSON: botocore's serializer would refuse most of these before they leave."""
    status, error = _post(host.url, f"SageMaker.{operation}", json.dumps(request_body).encode())
    assert 400 <= status < 500, (status, error)
    assert error["__type"] in ("ValidationException", "SerializationException"), error
    assert raw.list_models()["ResponseMetadata"]["HTTPStatusCode"] == 200, "the host still answers"


def _post(url: str, target: str, body: bytes) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(
        url,
        data=body,
        headers={"X-Amz-Target": target, "Content-Type": "application/x-amz-json-1.1"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


@pytest.mark.parametrize(
    "body",
    [b'{"ModelName": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", b"[1, 2]", b"{not json", b'{"a": NaN}'],
    ids=["deep-nesting", "not-an-object", "not-json", "nan"],
)
def test_bodies_that_are_not_requests_get_a_serialization_error(host: LocalSageMaker, body: bytes) -> None:
    status, error = _post(host.url, "SageMaker.ListModels", body)
    assert status == 400 and error["__type"] == "SerializationException", (status, error)


def test_non_finite_weights_are_refused(raw: Any, host: LocalSageMaker, artifacts: dict[str, Path]) -> None:
    create_model(raw, "m", artifacts["logistic"])
    for weight in ("NaN", "Infinity", "-Infinity"):
        body = json.dumps(
            {
                "EndpointConfigName": "c",
                "ProductionVariants": [{**variant("A", "m"), "InitialVariantWeight": 0}],
            }
        ).replace('"InitialVariantWeight": 0', f'"InitialVariantWeight": {weight}')
        status, error = _post(host.url, "SageMaker.CreateEndpointConfig", body.encode())
        assert status == 400, (weight, status, error)
    raw.create_endpoint_config(EndpointConfigName="c", ProductionVariants=[variant("A", "m")])
    raw.create_endpoint(EndpointName="ep", EndpointConfigName="c")
    wait_status(raw, "ep")
    body = json.dumps(
        {"EndpointName": "ep", "DesiredWeightsAndCapacities": [{"VariantName": "A", "DesiredWeight": 1}]}
    ).replace('"DesiredWeight": 1', '"DesiredWeight": Infinity')
    status, error = _post(host.url, "SageMaker.UpdateEndpointWeightsAndCapacities", body.encode())
    assert status == 400, (status, error)


@pytest.fixture
def quick_host(tmp_path: Path) -> Iterator[LocalSageMaker]:
    with LocalSageMaker(tmp_path / "state", provision_delay=0.0) as running:
        yield running


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_no_file_descriptor_is_left_open_by_deleted_endpoints(
    quick_host: LocalSageMaker, artifacts: dict[str, Path]
) -> None:
    sm, rt = quick_host.client("sagemaker"), quick_host.client("sagemaker-runtime")
    create_model(sm, "m", artifacts["logistic"])
    capture = {
        "EnableCapture": True,
        "InitialSamplingPercentage": 100,
        "DestinationS3Uri": "s3://capture/data",
        "CaptureOptions": [{"CaptureMode": "Input"}, {"CaptureMode": "Output"}],
    }
    sm.create_endpoint_config(
        EndpointConfigName="c", ProductionVariants=[variant("A", "m")], DataCaptureConfig=capture
    )

    def cycle(i: int) -> None:
        sm.create_endpoint(EndpointName=f"ep-{i}", EndpointConfigName="c")
        wait_status(sm, f"ep-{i}")
        rt.invoke_endpoint(EndpointName=f"ep-{i}", ContentType="text/csv", Body=first_row())
        captured = quick_host.s3_root / "capture" / "data" / f"ep-{i}"
        wait_until_written(captured)
        sm.delete_endpoint(EndpointName=f"ep-{i}")

    for i in range(5):  # warm up: connection pools, thread pools, caches
        cycle(i)
    before = _open_fds()
    for i in range(5, 205):
        cycle(i)
    assert _open_fds() - before <= 5, f"{_open_fds() - before} descriptors more after 200 endpoints"


def wait_until_written(folder: Path) -> None:
    from .local_sagemaker_support import until

    until(lambda: any(folder.rglob("*.jsonl")) or None, f"a capture file under {folder}")


def test_every_response_carries_a_request_id(host: LocalSageMaker, artifacts: dict[str, Path]) -> None:
    """As AWS's do: boto3 reads `x-amzn-RequestId` into ResponseMetadata, on success and on error,
    for the JSON, CBOR and runtime protocols alike; each request gets its own."""
    sm, rt = host.client("sagemaker"), host.client("sagemaker-runtime")
    cloudwatch = host.client("cloudwatch")
    now = datetime.now(UTC)
    create_model(sm, "m", artifacts["logistic"])
    sm.create_endpoint_config(EndpointConfigName="c", ProductionVariants=[variant("A", "m")])
    created = sm.create_endpoint(EndpointName="ep", EndpointConfigName="c")
    wait_status(sm, "ep")
    answers = [
        created,
        sm.list_endpoints(),
        rt.invoke_endpoint(EndpointName="ep", ContentType="text/csv", Body=first_row()),
        cloudwatch.get_metric_data(
            MetricDataQueries=[
                {
                    "Id": "n",
                    "MetricStat": {
                        "Metric": {
                            "Namespace": "AWS/SageMaker",
                            "MetricName": "Invocations",
                            "Dimensions": [
                                {"Name": "EndpointName", "Value": "ep"},
                                {"Name": "VariantName", "Value": "A"},
                            ],
                        },
                        "Period": 60,
                        "Stat": "Sum",
                    },
                }
            ],
            StartTime=now - timedelta(minutes=5),
            EndTime=now,
        ),
    ]
    with pytest.raises(ClientError) as missing:
        sm.describe_endpoint(EndpointName="nope")
    ids = [a["ResponseMetadata"]["RequestId"] for a in answers]
    ids.append(missing.value.response["ResponseMetadata"]["RequestId"])
    assert all(len(i) == 36 for i in ids) and len(set(ids)) == len(ids), ids
