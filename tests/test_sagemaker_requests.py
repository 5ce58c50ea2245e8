"""Exact request shapes (botocore Stubber) and faults the adapter must survive."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.stub import Stubber

from manager.platforms.aws import RETRIES
from manager.platforms.base import BlueGreen, NotNow, PlatformError
from manager.platforms.sagemaker import SageMakerPlatform

from .aws_support import record_operations

ARN = "arn:aws:sagemaker:us-east-1:123456789012:endpoint/ep"


@pytest.fixture
def stubbed() -> Iterator[tuple[SageMakerPlatform, Stubber, list[str]]]:
    # The adapter's own retry settings, with no waiting between attempts.
    config = RETRIES.merge(Config(retries={"mode": "standard", "max_attempts": 3}))
    client = boto3.client(
        "sagemaker", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x", config=config
    )
    client.meta.events.register("before-sleep", lambda **_: None)
    calls: list[str] = []
    record_operations(client, calls)
    # Application Auto Scaling, asked before each UpdateEndpoint which variants are registered: none.
    scaling = boto3.client(
        "application-autoscaling", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x"
    )
    with Stubber(client) as stubber, Stubber(scaling) as unscaled:  # no retries: Stubber answers first
        for _ in range(3):
            unscaled.add_response(
                "describe_scalable_targets",
                {"ScalableTargets": []},
                {
                    "ServiceNamespace": "sagemaker",
                    "ScalableDimension": "sagemaker:variant:DesiredInstanceCount",
                },
            )
        yield SageMakerPlatform(client, autoscaling=scaling), stubber, calls
        stubber.assert_no_pending_responses()


def _described(
    status: str = "InService", config: str = "old", failure: str | None = None, pending: str | None = None
) -> dict[str, Any]:
    described: dict[str, Any] = {
        "EndpointName": "ep",
        "EndpointArn": ARN,
        "EndpointConfigName": config,
        "EndpointStatus": status,
        "CreationTime": datetime(2026, 11, 1, tzinfo=UTC),
        "LastModifiedTime": datetime(2026, 11, 1, tzinfo=UTC),
        "ProductionVariants": [
            {
                "VariantName": "baseline",
                "CurrentWeight": 95.0,
                "DesiredWeight": 95.0,
                "CurrentInstanceCount": 1,
                "DesiredInstanceCount": 1,
            },
            {
                "VariantName": "candidate",
                "CurrentWeight": 5.0,
                "DesiredWeight": 5.0,
                "CurrentInstanceCount": 1,
                "DesiredInstanceCount": 1,
            },
        ],
    }
    if failure:
        described["FailureReason"] = failure
    if pending:
        described["PendingDeploymentSummary"] = {"EndpointConfigName": pending}
    return described


@pytest.mark.parametrize("routing,size,key", [("CANARY", 10, "CanarySize"), ("LINEAR", 25, "LinearStepSize")])
def test_update_endpoint_with_blue_green_guardrails(stubbed: Any, routing: str, size: int, key: str) -> None:
    platform, stubber, _ = stubbed
    stubber.add_response("describe_endpoint", _described(), {"EndpointName": "ep"})
    stubber.add_response(
        "update_endpoint",
        {"EndpointArn": ARN},
        {
            "EndpointName": "ep",
            "EndpointConfigName": "new",
            "RetainAllVariantProperties": False,
            "DeploymentConfig": {
                "BlueGreenUpdatePolicy": {
                    "TrafficRoutingConfiguration": {
                        "Type": routing,
                        "WaitIntervalInSeconds": 300,
                        key: {"Type": "CAPACITY_PERCENT", "Value": size},
                    },
                    "TerminationWaitInSeconds": 120,
                    "MaximumExecutionTimeoutInSeconds": 3600,
                },
                "AutoRollbackConfiguration": {"Alarms": [{"AlarmName": "ep-5xx"}, {"AlarmName": "ep-p99"}]},
            },
        },
    )
    platform.update_endpoint(
        "ep",
        "new",
        BlueGreen(
            routing,
            size,
            300,
            ("ep-5xx", "ep-p99"),  # type: ignore[arg-type]
            termination_wait_seconds=120,
            max_execution_seconds=3600,
        ),
    )


def test_update_endpoint_weights_request(stubbed: Any) -> None:
    platform, stubber, _ = stubbed
    stubber.add_response("describe_endpoint", _described(), {"EndpointName": "ep"})
    stubber.add_response(
        "update_endpoint_weights_and_capacities",
        {"EndpointArn": ARN},
        {
            "EndpointName": "ep",
            "DesiredWeightsAndCapacities": [
                {"VariantName": "baseline", "DesiredWeight": 75.0},
                {"VariantName": "candidate", "DesiredWeight": 25.0},
            ],
        },
    )
    platform.set_weights("ep", {"baseline": 75, "candidate": 25})


class _Body:
    def __init__(self, data: bytes) -> None:
        self.data = data

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self.data


def _inject(client: Any, faults: list[tuple[int, str]]) -> list[int]:
    """Answer the next requests with these (HTTP status, AWS error code) before they leave the
    machine, as a botocore `before-send` hook; later requests reach the real host. Returns the
    list of statuses actually served, one per attempt."""
    from botocore.awsrequest import AWSResponse

    served: list[int] = []

    def before_send(request: Any, **_: Any) -> AWSResponse | None:
        if not faults:
            served.append(200)
            return None
        status, code = faults.pop(0)
        served.append(status)
        body = json.dumps({"__type": code, "message": f"injected {code}"}).encode()
        return AWSResponse(request.url, status, {"x-amzn-errortype": code}, _Body(body))

    client.meta.events.register("before-send.sagemaker.*", before_send)
    return served


@pytest.fixture
def live(tmp_path: Any) -> Iterator[tuple[SageMakerPlatform, Any]]:
    from manager.local_sagemaker import LocalSageMaker

    with LocalSageMaker(tmp_path / "state", provision_delay=0) as host:
        three_attempts = Config(retries={"mode": "standard", "total_max_attempts": 3})
        client = host.client("sagemaker", config=RETRIES.merge(three_attempts))
        client.meta.events.register("before-sleep", lambda **_: None)
        yield SageMakerPlatform(client), client


@pytest.mark.parametrize(
    "status,code",
    [
        (400, "ThrottlingException"),
        (429, "TooManyRequestsException"),
        (500, "InternalFailure"),
        (503, "ServiceUnavailable"),
    ],
)
def test_throttling_and_server_errors_are_retried(live: Any, status: int, code: str) -> None:
    platform, client = live
    served = _inject(client, [(status, code), (status, code)])
    assert platform.describe("nope") is None  # the third attempt reaches the host
    assert served == [status, status, 200]


def test_persistent_server_errors_end_in_one_clear_error(live: Any) -> None:
    platform, client = live
    served = _inject(client, [(500, "InternalFailure")] * 3)
    with pytest.raises(PlatformError, match="InternalFailure: injected InternalFailure"):
        platform.describe("ep")
    assert served == [500, 500, 500]


def test_validation_errors_are_never_retried(live: Any) -> None:
    platform, client = live
    served = _inject(client, [(400, "ValidationException")])
    with pytest.raises(PlatformError, match="ValidationException"):
        platform.describe("ep")
    assert served == [400]


def test_validation_exception_while_updating_is_not_now_and_not_retried(stubbed: Any) -> None:
    platform, stubber, _ = stubbed
    # The describe raced with an update someone else started: SageMaker refuses the update.
    stubber.add_response("describe_endpoint", _described(), {"EndpointName": "ep"})
    stubber.add_client_error(
        "update_endpoint", "ValidationException", f'Cannot update in-progress endpoint "{ARN}".', 400
    )
    with pytest.raises(NotNow):
        platform.update_endpoint("ep", "new")
    # assert_no_pending_responses (in the fixture) proves there was exactly one UpdateEndpoint


def test_other_validation_errors_are_failures_not_retried(stubbed: Any) -> None:
    platform, stubber, _ = stubbed
    stubber.add_response("describe_endpoint", _described(), {"EndpointName": "ep"})
    stubber.add_client_error(
        "update_endpoint", "ValidationException", "Could not find endpoint configuration", 400
    )
    with pytest.raises(PlatformError, match="Could not find endpoint configuration"):
        platform.update_endpoint("ep", "new")


def test_update_that_ends_on_the_old_config_is_a_failed_update(stubbed: Any) -> None:
    platform, stubber, _ = stubbed
    stubber.add_response(
        "describe_endpoint", _described(status="Updating", pending="new"), {"EndpointName": "ep"}
    )
    stubber.add_response(
        "describe_endpoint",
        _described(failure="Failed to load model artifacts: not found"),
        {"EndpointName": "ep"},
    )
    during = platform.describe("ep")
    assert during is not None and during.update_outcome("new") == "pending"
    after = platform.describe("ep")
    assert after is not None and after.update_outcome("new") == "failed"
    assert after.failure_reason == "Failed to load model artifacts: not found"


@pytest.mark.parametrize("status", ["Failed", "UpdateRollbackFailed"])
def test_failed_endpoints_are_surfaced_with_the_reason(stubbed: Any, status: str) -> None:
    from manager.platforms.base import EndpointBroken

    platform, stubber, _ = stubbed
    stubber.add_response(
        "describe_endpoint", _described(status=status, failure="capacity error"), {"EndpointName": "ep"}
    )
    state = platform.describe("ep")
    assert state is not None and state.broken
    with pytest.raises(EndpointBroken, match=f"{status}: capacity error"):
        state.update_outcome("new")


def test_the_same_update_in_progress_is_not_repeated(stubbed: Any) -> None:
    platform, stubber, _ = stubbed
    stubber.add_response(
        "describe_endpoint", _described(status="Updating", pending="new"), {"EndpointName": "ep"}
    )
    platform.update_endpoint("ep", "new")  # no UpdateEndpoint stubbed: a call would fail the test
