"""Every constraint botocore's service model states for what variantctl sends SageMaker, sent broken
to the local SageMaker: each must be refused with AWS's `ValidationException` and change nothing.

The requests are the product's own (built by `manager/platforms/requests.py` from specs), so the walk
covers exactly the operations and members variantctl sends. botocore itself checks only `min` and
required members client-side, so the client here sends unchecked, as AWS would receive them.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import botocore.session
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from manager.local_sagemaker import LocalSageMaker
from manager.platforms.base import BlueGreen, CaptureSpec, ConfigSpec, ModelSpec, VariantSpec
from manager.platforms.requests import config_request, deployment_config, model_request

MODEL = botocore.session.get_session().get_service_model("sagemaker")
ROLE = "arn:aws:iam::123456789012:role/variantctl"
PATTERN_BREAKERS = ("!", " ", "a b", "-", "\u00e9", "x" * 3000)


def _requests(artifact: Path) -> dict[str, dict[str, Any]]:
    """One valid request per operation, as variantctl builds it, over an existing model `m-v1`, an
    endpoint `ep` serving config `base`, and a config `next` to update it to."""
    model = model_request(ModelSpec("m-v2", "local/sklearn:1.9", artifact.as_uri(), ROLE, {"A": "1"}))
    variant = VariantSpec("prod", "m-v1", "ml.m5.large", 1, 1.0, settings={"VolumeSizeInGB": 4})
    shadow = VariantSpec("cand-shadow", "m-v1", "ml.m5.large", 1, 50.0, shadow=True)
    config = config_request(ConfigSpec("cfg-new", (variant, shadow), CaptureSpec("s3://capture/ep")))
    bg = deployment_config(BlueGreen("LINEAR", 50, 0, ("alarm-a",), 0, 600))
    return {
        "CreateModel": model,
        "CreateEndpointConfig": config,
        "CreateEndpoint": {"EndpointName": "ep-new", "EndpointConfigName": "base"},
        "UpdateEndpoint": {
            "EndpointName": "ep",
            "EndpointConfigName": "next",
            "RetainAllVariantProperties": False,
            "DeploymentConfig": bg,
        },
        "UpdateEndpointWeightsAndCapacities": {
            "EndpointName": "ep",
            "DesiredWeightsAndCapacities": [{"VariantName": "prod", "DesiredWeight": 1.0}],
        },
        "DescribeEndpoint": {"EndpointName": "ep"},
        "DescribeEndpointConfig": {"EndpointConfigName": "base"},
        "DescribeModel": {"ModelName": "m-v1"},
        "ListEndpoints": {"MaxResults": 100},
        "DeleteEndpointConfig": {"EndpointConfigName": "base"},
        "DeleteEndpoint": {"EndpointName": "ep"},
    }


def _java(pattern: str) -> str:
    """A model's pattern as Python reads it: Java's \\p{Print}, and ranges of surrogate pairs."""
    return pattern.replace(r"\p{Print}", r"[\x20-\x7e]").replace(
        r"\uD800\uDC00-\uDBFF\uDFFF", r"\U00010000-\U0010FFFF"
    )


def _broken(shape: Any, value: Any) -> Iterator[tuple[str, Any]]:
    """(constraint, a value that breaks it) for one member's own constraints."""
    meta = shape.metadata
    if shape.type_name == "string":
        if "enum" in meta:
            yield "enum", "NOT-ONE-OF-THEM"
        if "pattern" in meta:
            pattern = _java(meta["pattern"])
            bad = next((b for b in PATTERN_BREAKERS if not re.fullmatch(pattern, b)), None)
            if bad is not None:
                yield "pattern", bad
        if "max" in meta:
            yield "max", "a" * (meta["max"] + 1)
        if meta.get("min", 0) > 0:
            yield "min", ""
    elif shape.type_name in ("integer", "long", "float", "double"):
        if "min" in meta:
            yield "min", type(value)(meta["min"] - 1)
        if "max" in meta:
            yield "max", type(value)(meta["max"] + 1)
    elif shape.type_name == "list":
        if "max" in meta and meta["max"] <= 100 and value:
            yield "max", [copy.deepcopy(value[0]) for _ in range(meta["max"] + 1)]
        if meta.get("min", 0) > 0:
            yield "min", []


def _walk(shape: Any, value: Any, path: str) -> Iterator[tuple[str, str, Any, Any]]:
    """(path, constraint, setter's path, broken value) for every constrained member present."""
    for constraint, bad in _broken(shape, value):
        yield path, constraint, path, bad
    if shape.type_name == "structure":
        for name, member in shape.members.items():
            if name in value:
                yield from _walk(member, value[name], f"{path}.{name}" if path else name)
    elif shape.type_name == "list" and value:
        yield from _walk(shape.member, value[0], f"{path}[0]")


def _set(request: dict[str, Any], path: str, bad: Any) -> dict[str, Any]:
    out = copy.deepcopy(request)
    keys = [k for part in path.split(".") for k in re.split(r"\[(\d+)\]", part) if k != ""]
    node: Any = out
    for key in keys[:-1]:
        node = node[int(key)] if key.isdigit() else node[key]
    last = keys[-1]
    if last.isdigit():
        node[int(last)] = bad
    else:
        node[last] = bad
    return out


def _cases(artifact: Path) -> list[tuple[str, str, str, dict[str, Any]]]:
    cases = []
    for operation, request in _requests(artifact).items():
        shape = MODEL.operation_model(operation).input_shape
        for path, constraint, where, bad in _walk(shape, request, ""):
            cases.append((operation, path, constraint, _set(request, where, bad)))
    return cases


@pytest.fixture
def world(tmp_path: Path, artifacts: dict[str, Path]) -> Iterator[tuple[LocalSageMaker, Any]]:
    with LocalSageMaker(tmp_path / "state", provision_delay=0.01) as host:
        sm = host.client("sagemaker", config=Config(parameter_validation=False, retries={"max_attempts": 1}))
        uri = artifacts["logistic"].as_uri()
        sm.create_model(
            ModelName="m-v1", PrimaryContainer={"Image": "local/sklearn:1.9", "ModelDataUrl": uri}
        )
        for name in ("base", "next"):
            sm.create_endpoint_config(
                EndpointConfigName=name,
                ProductionVariants=[
                    {
                        "VariantName": "prod",
                        "ModelName": "m-v1",
                        "InstanceType": "ml.m5.large",
                        "InitialInstanceCount": 2,
                    }
                ],
            )
        sm.create_endpoint(EndpointName="ep", EndpointConfigName="base")
        sm.get_waiter("endpoint_in_service").wait(
            EndpointName="ep", WaiterConfig={"Delay": 0.05, "MaxAttempts": 400}
        )
        yield host, sm


def test_every_constraint_on_what_variantctl_sends_is_refused_as_aws_refuses_it(
    world: tuple[LocalSageMaker, Any], artifacts: dict[str, Path]
) -> None:
    _, sm = world
    cases = _cases(artifacts["logistic"])
    accepted, checked = [], 0
    for operation, path, constraint, request in cases:
        call = getattr(sm, botocore.xform_name(operation))
        try:
            call(**request)
        except ClientError as exc:
            error = exc.response["Error"]
            status = exc.response["ResponseMetadata"]["HTTPStatusCode"]
            if error["Code"] != "ValidationException" or status != 400:
                accepted.append(f"{operation} {path} ({constraint}): {status} {error['Code']}")
            checked += 1
            continue
        accepted.append(f"{operation} {path} ({constraint}): accepted")
        checked += 1
    print(f"\n{checked} constraints checked over {len({c[0] for c in cases})} operations")
    assert checked >= 60, checked
    assert not accepted, "\n".join(accepted)
    state = sm.describe_endpoint(EndpointName="ep")
    assert (state["EndpointStatus"], state["EndpointConfigName"]) == ("InService", "base"), "nothing changed"


class _Recorder:
    """Stands in for the application-autoscaling client to capture the requests the adapter makes."""

    def __init__(self) -> None:
        self.sent: dict[str, dict[str, Any]] = {}

    def __getattr__(self, method: str) -> Any:
        def call(**request: Any) -> dict[str, Any]:
            operation = AUTOSCALING.operation_model(
                next(o for o in AUTOSCALING.operation_names if botocore.xform_name(o) == method)
            ).name
            self.sent.setdefault(operation, request)
            return {}

        return call


AUTOSCALING = botocore.session.get_session().get_service_model("application-autoscaling")


def _autoscaling_requests() -> dict[str, dict[str, Any]]:
    """The requests variantctl's adapter (`platforms/scaling.py`) sends, for an endpoint `ep` whose
    variant `prod` is registered with a target-tracking policy."""
    from manager.platforms.scaling import AutoScaling, Scaling, ScalingPolicy

    tracking = {
        "TargetValue": 100.0,
        "PredefinedMetricSpecification": {"PredefinedMetricType": "SageMakerVariantInvocationsPerInstance"},
        "ScaleInCooldown": 60,
    }
    scaling = Scaling(1, 3, (ScalingPolicy("invocations", "TargetTrackingScaling", tracking),))
    recorder = _Recorder()
    adapter = AutoScaling(recorder)
    adapter.register("ep", "prod", scaling)
    adapter.registered("ep")
    recorder.sent["DescribeScalingPolicies"] = {
        "ServiceNamespace": "sagemaker",
        "ResourceId": "endpoint/ep/variant/prod",
        "ScalableDimension": "sagemaker:variant:DesiredInstanceCount",
    }
    adapter.deregister("ep", "prod", scaling)
    return recorder.sent


def test_every_constraint_on_what_variantctl_sends_application_auto_scaling_is_refused(
    world: tuple[LocalSageMaker, Any],
) -> None:
    host, _ = world
    aas = host.client(
        "application-autoscaling", config=Config(parameter_validation=False, retries={"max_attempts": 1})
    )
    requests = _autoscaling_requests()
    assert set(requests) == {
        "RegisterScalableTarget",
        "PutScalingPolicy",
        "DescribeScalableTargets",
        "DescribeScalingPolicies",
        "DeleteScalingPolicy",
        "DeregisterScalableTarget",
    }
    accepted, checked = [], 0
    for operation, request in requests.items():
        shape = AUTOSCALING.operation_model(operation).input_shape
        for path, constraint, where, bad in _walk(shape, request, ""):
            try:
                getattr(aas, botocore.xform_name(operation))(**_set(request, where, bad))
                accepted.append(f"{operation} {path} ({constraint}): accepted")
            except ClientError as exc:
                if exc.response["Error"]["Code"] != "ValidationException":
                    accepted.append(f"{operation} {path} ({constraint}): {exc.response['Error']['Code']}")
            checked += 1
    print(f"\n{checked} Application Auto Scaling constraints checked over {len(requests)} operations")
    assert checked >= 15, checked
    assert not accepted, "\n".join(accepted)
    assert aas.describe_scalable_targets(ServiceNamespace="sagemaker")["ScalableTargets"] == [], (
        "nothing changed"
    )


@pytest.mark.parametrize(
    "operation", ["GetMetricData", "PutMetricData", "GetMetricStatistics", "SetAlarmState"]
)
@pytest.mark.parametrize(
    "body",
    [
        {"MetricDataQueries": ["x"], "StartTime": 0, "EndTime": 100},
        {"MetricDataQueries": "x", "MetricData": "x", "Namespace": "A", "MetricName": "B"},
        {"MetricData": ["x"], "Namespace": "A", "Dimensions": "x", "Statistics": 3},
        {"AlarmName": {"a": 1}, "StateValue": {}, "StateReason": []},
    ],
)
def test_cloudwatch_members_of_the_wrong_type_are_a_client_error_never_a_500(
    tmp_path: Path, operation: str, body: dict[str, Any]
) -> None:
    """Smithy RPC v2 CBOR, as newer botocore sends CloudWatch: a member of the wrong type is the
    caller's mistake (4xx with an error type), never the host's 500."""
    import urllib.error
    import urllib.request

    import cbor2

    with LocalSageMaker(tmp_path / "state") as host:
        sent = urllib.request.Request(
            f"{host.url}/service/GraniteServiceVersion20100801/operation/{operation}",
            data=cbor2.dumps(body),
            headers={"Content-Type": "application/cbor", "Smithy-Protocol": "rpc-v2-cbor"},
            method="POST",
        )
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(sent, timeout=30)
        assert 400 <= caught.value.code < 500, caught.value.code
        assert cbor2.loads(caught.value.read())["__type"]
