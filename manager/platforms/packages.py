"""The SageMaker Model Registry and its event queue, on boto3 clients from `aws.py`: list the approved
versions of a package group, describe and update a package, register a new one, and read the
"SageMaker Model Package State Change" events an EventBridge rule puts in an SQS queue."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from manager.platforms import aws

EVENT_TYPE = "SageMaker Model Package State Change"


@dataclass(frozen=True)
class Package:
    """A versioned model package, as the trigger and the importer need it."""

    arn: str
    group: str
    version: int
    approval: str
    image: str | None = None
    artifact: str | None = None
    environment: dict[str, str] | None = None

    @property
    def ref(self) -> str:
        return f"{self.group}/{self.version}"


def package(described: dict[str, Any]) -> Package:
    containers = (described.get("InferenceSpecification") or {}).get("Containers") or [{}]
    first = containers[0]
    return Package(
        arn=described["ModelPackageArn"],
        group=described.get("ModelPackageGroupName") or "",
        version=int(described.get("ModelPackageVersion") or 0),
        approval=described.get("ModelApprovalStatus") or "PendingManualApproval",
        image=first.get("Image"),
        artifact=first.get("ModelDataUrl"),
        environment=first.get("Environment"),
    )


@dataclass(frozen=True)
class Event:
    """One message of the queue: its receipt (to delete it) and the event it carries (None when the body
    is not a Model Package State Change event: counted and deleted, never fatal)."""

    receipt: str
    group: str | None
    version: int | None
    approval: str | None


class ModelRegistry:
    def __init__(self, sagemaker: Any, sqs: Any = None, s3: Any = None) -> None:
        self.sagemaker = sagemaker
        self._sqs = sqs
        self.s3 = s3  # where a trained version's evaluation goes, beside its artifact

    @classmethod
    def beside(cls, sagemaker: Any) -> ModelRegistry:
        """On the same host, region and credentials as a platform's sagemaker client."""
        return cls(sagemaker, aws.beside(sagemaker, "sqs"), aws.beside(sagemaker, "s3"))

    def approved(self, group: str) -> list[Package]:
        """Every approved version of `group`, newest first (all pages)."""
        found: list[Package] = []
        request: dict[str, Any] = {
            "ModelPackageGroupName": group,
            "ModelPackageType": "Versioned",
            "ModelApprovalStatus": "Approved",
            "SortBy": "CreationTime",
            "SortOrder": "Descending",
            "MaxResults": 100,
        }
        while True:
            answer = self.sagemaker.list_model_packages(**request)
            for summary in answer.get("ModelPackageSummaryList", []):
                found.append(package(summary))
            if not answer.get("NextToken"):
                break
            request["NextToken"] = answer["NextToken"]
        return sorted(found, key=lambda p: p.version, reverse=True)

    def describe(self, arn: str) -> Package:
        from botocore.exceptions import ClientError

        from manager.platforms.base import PlatformError

        try:
            return package(self.sagemaker.describe_model_package(ModelPackageName=arn))
        except ClientError as exc:
            error = exc.response.get("Error", {})
            raise PlatformError(
                f"DescribeModelPackage failed: {error.get('Code')}: {error.get('Message')}"
            ) from None

    def update(self, arn: str, request: dict[str, Any]) -> None:
        self.sagemaker.update_model_package(ModelPackageArn=arn, **request)

    def ensure_group(self, group: str, description: str) -> None:
        from botocore.exceptions import ClientError

        try:
            self.sagemaker.describe_model_package_group(ModelPackageGroupName=group)
        except ClientError:
            self.sagemaker.create_model_package_group(
                ModelPackageGroupName=group, ModelPackageGroupDescription=description
            )

    def put_evaluation(self, uri: str, body: bytes) -> None:
        """The model quality statistics a package's ModelMetrics points at (`s3://bucket/key`)."""
        bucket, _, key = uri.removeprefix("s3://").partition("/")
        self.s3.put_object(Bucket=bucket, Key=key, Body=body, ContentType="application/json")

    def register(self, group: str, request: dict[str, Any]) -> str:
        arn: str = self.sagemaker.create_model_package(ModelPackageGroupName=group, **request)[
            "ModelPackageArn"
        ]
        return arn

    # ---- the event queue ----------------------------------------------------------------------

    def receive(self, queue_url: str, wait_seconds: int = 0, visibility: int = 60) -> list[Event]:
        answer = self._sqs.receive_message(
            QueueUrl=queue_url,
            MaxNumberOfMessages=10,
            WaitTimeSeconds=wait_seconds,
            VisibilityTimeout=visibility,
        )
        return [_event(m) for m in answer.get("Messages", [])]

    def delete(self, queue_url: str, receipt: str) -> None:
        self._sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=receipt)


def _event(message: dict[str, Any]) -> Event:
    try:
        body = json.loads(message.get("Body") or "")
        if body.get("detail-type") != EVENT_TYPE:
            raise ValueError("not a Model Package State Change")
        detail = body["detail"]
        return Event(
            message["ReceiptHandle"],
            str(detail["ModelPackageGroupName"]),
            int(detail["ModelPackageVersion"]),
            str(detail.get("ModelApprovalStatus")),
        )
    except (ValueError, KeyError, TypeError, AttributeError):
        return Event(message["ReceiptHandle"], None, None, None)
