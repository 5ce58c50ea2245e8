"""The SageMaker Python SDK v2's Model Registry flow, unmodified, against the local SageMaker:
`Model.register()` into a package group (which the SDK creates), `ModelPackage.update_approval_status`,
then `ModelPackage.deploy()` and a prediction from the package's endpoint. The SDK looks for the group
with `Search` first, which the host does not implement; the SDK falls back to ListModelPackageGroups
itself, as it does on any error there."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from manager.local_sagemaker import LocalSageMaker

from .local_sagemaker_support import expected_scores, first_row, train_artifacts
from .test_sagemaker_sdk import sdk_env  # noqa: F401 (the fixture)

sagemaker = pytest.importorskip("sagemaker", reason="the SageMaker SDK is in the test extra")

pytestmark = pytest.mark.slow
ROLE = "arn:aws:iam::123456789012:role/SageMakerRole"


def test_sdk_registers_approves_and_deploys_a_model_package(sdk_env: LocalSageMaker, tmp_path: Path) -> None:  # noqa: F811
    import boto3
    from sagemaker.serializers import CSVSerializer

    session = sagemaker.Session(
        boto_session=boto3.Session(region_name="us-east-1"), default_bucket="sdk-registry"
    )
    paths = train_artifacts(tmp_path / "models")
    model = sagemaker.model.Model(
        image_uri="local/sklearn:1.9",
        model_data=paths["logistic"].as_uri(),
        role=ROLE,
        sagemaker_session=session,
    )
    package: Any = model.register(
        content_types=["text/csv"],
        response_types=["text/csv"],
        inference_instances=["ml.m5.large"],
        transform_instances=["ml.m5.large"],
        model_package_group_name="sdk-churn",
        approval_status="PendingManualApproval",
        description="registered by the SDK",
        customer_metadata_properties={"team": "churn"},
    )
    sm = sdk_env.client("sagemaker")
    arn = package.model_package_arn
    assert arn.endswith(":model-package/sdk-churn/1")
    assert (
        sm.describe_model_package_group(ModelPackageGroupName="sdk-churn")["ModelPackageGroupStatus"]
        == "Completed"
    )
    described = sm.describe_model_package(ModelPackageName=arn)
    assert described["ModelApprovalStatus"] == "PendingManualApproval"
    assert described["InferenceSpecification"]["SupportedRealtimeInferenceInstanceTypes"] == ["ml.m5.large"]
    assert described["CustomerMetadataProperties"] == {"team": "churn"}

    package.update_approval_status("Approved", approval_description="reviewed")
    assert sm.describe_model_package(ModelPackageName=arn)["ModelApprovalStatus"] == "Approved"
    # A ModelPackage has no predictor class of its own: deploy() returns None, and the SDK's Predictor
    # is aimed at the endpoint by name.
    package.deploy(initial_instance_count=1, instance_type="ml.m5.large", endpoint_name="sdk-package")
    predictor = sagemaker.predictor.Predictor(
        "sdk-package", sagemaker_session=session, serializer=CSVSerializer()
    )
    [container] = sm.describe_model(ModelName=package.name)["Containers"]
    assert container["ModelPackageName"] == arn
    answer = float(predictor.predict(first_row()).decode().strip())
    assert answer == pytest.approx(expected_scores(paths)["logistic"], abs=1e-9)
    predictor.delete_endpoint()
