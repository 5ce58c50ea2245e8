"""The local SageMaker's Model Registry and its event queue, through real boto3 clients: package
groups, versioned packages, approval, CreateModel from a package, and the "SageMaker Model Package
State Change" events an EventBridge rule would put in an SQS queue. The rules are in
docs/aws-rules.md, "Model Registry"."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from manager.local_sagemaker import LocalSageMaker

from .local_sagemaker_support import ROLE, first_row, shape_problems, train_artifacts, variant, wait_status


@pytest.fixture
def held(tmp_path: Path) -> Iterator[LocalSageMaker]:
    with LocalSageMaker(tmp_path / "state", provision_delay=0.2, seed=7, clock="held") as running:
        yield running


def _spec(artifact: Path) -> dict[str, Any]:
    return {
        "Containers": [{"Image": "local/sklearn:1.9", "ModelDataUrl": artifact.as_uri()}],
        "SupportedContentTypes": ["text/csv"],
        "SupportedResponseMIMETypes": ["text/csv"],
    }


def _error(call: Any, **kwargs: Any) -> tuple[str, str]:
    with pytest.raises(ClientError) as caught:
        call(**kwargs)
    return caught.value.response["Error"]["Code"], caught.value.response["Error"]["Message"]


def test_packages_are_versioned_in_their_group_and_listed_filtered_sorted_and_paged(
    held: LocalSageMaker, tmp_path: Path
) -> None:
    sm = held.client("sagemaker")
    artifact = train_artifacts(tmp_path / "a")["logistic"]
    group_arn = sm.create_model_package_group(ModelPackageGroupName="Churn")["ModelPackageGroupArn"]
    assert group_arn == "arn:aws:sagemaker:us-east-1:123456789012:model-package-group/churn"
    assert _error(sm.create_model_package_group, ModelPackageGroupName="churn")[0] == "ValidationException"
    arns = []
    for status in ("PendingManualApproval", "Approved", None):
        request: dict[str, Any] = {
            "ModelPackageGroupName": "churn",
            "InferenceSpecification": _spec(artifact),
        }
        if status:
            request["ModelApprovalStatus"] = status
        arns.append(sm.create_model_package(**request)["ModelPackageArn"])
        held.clock.advance(1)
    assert [a.rsplit("/", 1)[-1] for a in arns] == ["1", "2", "3"]
    described = sm.describe_model_package(ModelPackageName=arns[2])
    assert described["ModelApprovalStatus"] == "PendingManualApproval"  # the default
    assert described["ModelPackageGroupName"] == "Churn" and described["ModelPackageVersion"] == 3
    raw = {k: v for k, v in described.items() if k != "ResponseMetadata"}
    assert shape_problems("DescribeModelPackage", json.loads(json.dumps(raw, default=str))) == []

    approved = sm.list_model_packages(ModelPackageGroupName="churn", ModelApprovalStatus="Approved")
    assert [p["ModelPackageVersion"] for p in approved["ModelPackageSummaryList"]] == [2]
    newest = sm.list_model_packages(
        ModelPackageGroupName=group_arn, ModelPackageType="Versioned", SortOrder="Descending", MaxResults=2
    )
    assert [p["ModelPackageVersion"] for p in newest["ModelPackageSummaryList"]] == [3, 2]
    rest = sm.list_model_packages(
        ModelPackageGroupName="churn", SortOrder="Descending", MaxResults=2, NextToken=newest["NextToken"]
    )
    assert [p["ModelPackageVersion"] for p in rest["ModelPackageSummaryList"]] == [1]
    # The documented default type is Unversioned: without a group, versioned packages are not listed.
    assert sm.list_model_packages()["ModelPackageSummaryList"] == []
    assert (
        _error(sm.list_model_packages, ModelPackageGroupName="churn", MaxResults=101)[0]
        == "ValidationException"
    )
    groups = sm.list_model_package_groups(NameContains="chu")["ModelPackageGroupSummaryList"]
    assert [g["ModelPackageGroupName"] for g in groups] == ["Churn"]

    code, message = _error(sm.delete_model_package_group, ModelPackageGroupName="churn")
    assert code == "ConflictException" and "still has model packages" in message


def test_what_aws_refuses_is_refused_in_its_words(held: LocalSageMaker, tmp_path: Path) -> None:
    sm = held.client("sagemaker")
    spec = _spec(train_artifacts(tmp_path / "a")["logistic"])
    code, message = _error(sm.create_model_package, ModelPackageGroupName="nope", InferenceSpecification=spec)
    assert code == "ValidationException" and "does not exist" in message
    sm.create_model_package_group(ModelPackageGroupName="g")
    both = _error(
        sm.create_model_package, ModelPackageGroupName="g", ModelPackageName="x", InferenceSpecification=spec
    )
    assert "Both ModelPackageName and ModelPackageGroupName are provided" in both[1]
    bad = [
        {"ModelApprovalStatus": "approved"},
        {"CustomerMetadataProperties": {"reason": "worse (by 3%)"}},
        {"CustomerMetadataProperties": {f"k{i}": "v" for i in range(51)}},
        {"ModelLifeCycle": {"Stage": "Production", "StageStatus": "Rolled back"}},
    ]
    for extra in bad:
        code, message = _error(
            sm.create_model_package, ModelPackageGroupName="g", InferenceSpecification=spec, **extra
        )
        assert code == "ValidationException" and "validation error detected" in message, (extra, message)
    assert sm.list_model_packages(ModelPackageGroupName="g")["ModelPackageSummaryList"] == []
    arn = sm.create_model_package(ModelPackageGroupName="g", InferenceSpecification=spec)["ModelPackageArn"]
    code, message = _error(
        sm.update_model_package,
        ModelPackageArn=arn,
        CustomerMetadataProperties={"a": "1"},
        CustomerMetadataPropertiesToRemove=["a"],
    )
    assert code == "ValidationException"
    assert _error(sm.describe_model_package, ModelPackageName=arn + "0")[0] == "ValidationException"


def test_updates_merge_metadata_and_a_model_from_a_package_serves_only_once_approved(
    held: LocalSageMaker, tmp_path: Path
) -> None:
    sm, runtime = held.client("sagemaker"), held.client("sagemaker-runtime")
    spec = _spec(train_artifacts(tmp_path / "a")["logistic"])
    sm.create_model_package_group(ModelPackageGroupName="g")
    arn = sm.create_model_package(
        ModelPackageGroupName="g",
        InferenceSpecification=spec,
        CustomerMetadataProperties={"trainer": "sklearn"},
    )["ModelPackageArn"]
    code, message = _error(
        sm.create_model, ModelName="m", Containers=[{"ModelPackageName": arn}], ExecutionRoleArn=ROLE
    )
    assert code == "ValidationException" and "must be Approved" in message
    held.clock.advance(5)
    sm.update_model_package(
        ModelPackageArn=arn,
        ModelApprovalStatus="Approved",
        ApprovalDescription="looks good",
        CustomerMetadataProperties={"rollout": "7"},
        ModelLifeCycle={"Stage": "Staging", "StageStatus": "Approved"},
    )
    described = sm.describe_model_package(ModelPackageName=arn)
    assert described["CustomerMetadataProperties"] == {"trainer": "sklearn", "rollout": "7"}
    assert described["ModelLifeCycle"] == {"Stage": "Staging", "StageStatus": "Approved"}
    assert described["LastModifiedTime"] > described["CreationTime"]
    sm.update_model_package(ModelPackageArn=arn, CustomerMetadataPropertiesToRemove=["trainer"])
    assert sm.describe_model_package(ModelPackageName=arn)["CustomerMetadataProperties"] == {"rollout": "7"}

    sm.create_model(ModelName="m", Containers=[{"ModelPackageName": arn}], ExecutionRoleArn=ROLE)
    container = sm.describe_model(ModelName="m")["Containers"][0]
    assert (
        container["ModelPackageName"] == arn
        and container["ModelDataUrl"] == spec["Containers"][0]["ModelDataUrl"]
    )
    sm.create_endpoint_config(EndpointConfigName="c", ProductionVariants=[variant("v", "m")])
    sm.create_endpoint(EndpointName="e", EndpointConfigName="c")
    held.clock.advance(60)
    wait_status(sm, "e")
    answer = runtime.invoke_endpoint(EndpointName="e", ContentType="text/csv", Body=first_row())
    assert answer["ResponseMetadata"]["HTTPStatusCode"] == 200


def test_each_change_reaches_the_queue_once_per_change_and_comes_back_until_deleted(
    held: LocalSageMaker, tmp_path: Path
) -> None:
    sm, sqs = held.client("sagemaker"), held.client("sqs")
    url = sqs.create_queue(QueueName="approvals", Attributes={"VisibilityTimeout": "30"})["QueueUrl"]
    assert sqs.get_queue_url(QueueName="approvals")["QueueUrl"] == url
    spec = _spec(train_artifacts(tmp_path / "a")["logistic"])
    sm.create_model_package_group(ModelPackageGroupName="g")
    arn = sm.create_model_package(ModelPackageGroupName="g", InferenceSpecification=spec)["ModelPackageArn"]
    sm.update_model_package(ModelPackageArn=arn, ModelApprovalStatus="Approved")
    got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, MessageSystemAttributeNames=["All"])
    events = [json.loads(m["Body"]) for m in got["Messages"]]
    assert [e["detail-type"] for e in events] == ["SageMaker Model Package State Change"] * 2
    assert [e["detail"]["ModelApprovalStatus"] for e in events] == ["PendingManualApproval", "Approved"]
    assert events[1]["resources"] == [arn] and events[1]["detail"]["ModelPackageVersion"] == 1
    assert sqs.receive_message(QueueUrl=url).get("Messages") is None  # in flight: invisible
    counts = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    assert (counts["ApproximateNumberOfMessages"], counts["ApproximateNumberOfMessagesNotVisible"]) == (
        "0",
        "2",
    )
    held.clock.advance(31)
    again = sqs.receive_message(
        QueueUrl=url, MaxNumberOfMessages=10, AttributeNames=["ApproximateReceiveCount"]
    )
    assert [m["Attributes"]["ApproximateReceiveCount"] for m in again["Messages"]] == ["2", "2"]
    for message in again["Messages"]:
        sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
    held.clock.advance(31)
    assert sqs.receive_message(QueueUrl=url, WaitTimeSeconds=1).get("Messages") is None
    with pytest.raises(ClientError) as caught:
        sqs.receive_message(QueueUrl=url.replace("approvals", "nope"))
    assert caught.value.response["Error"]["Code"] == "AWS.SimpleQueueService.NonExistentQueue"
    with pytest.raises(ClientError) as caught:
        sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=11)
    assert caught.value.response["Error"]["Code"] == "InvalidParameterValue"


def test_the_registry_and_the_queue_survive_a_restart(tmp_path: Path) -> None:
    spec = _spec(train_artifacts(tmp_path / "a")["logistic"])
    with LocalSageMaker(tmp_path / "state", provision_delay=0.2, seed=7) as first:
        sm, sqs = first.client("sagemaker"), first.client("sqs")
        sqs.create_queue(QueueName="q")
        sm.create_model_package_group(ModelPackageGroupName="g")
        arn = sm.create_model_package(ModelPackageGroupName="g", InferenceSpecification=spec)[
            "ModelPackageArn"
        ]
    with LocalSageMaker(tmp_path / "state", provision_delay=0.2, seed=7) as second:
        sm, sqs = second.client("sagemaker"), second.client("sqs")
        assert sm.describe_model_package(ModelPackageName=arn)["ModelPackageVersion"] == 1
        url = sqs.get_queue_url(QueueName="q")["QueueUrl"]
        assert len(sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10)["Messages"]) == 1
        second_arn = sm.create_model_package(ModelPackageGroupName="g", InferenceSpecification=spec)
        assert second_arn["ModelPackageArn"].endswith("/2")
