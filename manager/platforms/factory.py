"""The platform factory: the SageMaker platform on one session's clients (`aws.py`), as every command
and the daemon use it."""

from __future__ import annotations

from typing import Any

from manager.platforms import aws
from manager.platforms.sagemaker import SageMakerPlatform


def model_registry(
    region: str | None = None, endpoint_url: str | None = None, profile: str | None = None
) -> Any:
    """The SageMaker Model Registry, SQS (its event queue) and S3 (evaluations) on one session's clients."""
    from manager.platforms.packages import ModelRegistry

    made = aws.session(region, profile)
    return ModelRegistry(
        aws.client("sagemaker", aws.RETRIES, endpoint_url, made),
        aws.client("sqs", aws.RETRIES, endpoint_url, made),
        aws.client("s3", aws.RETRIES, endpoint_url, made),
    )


def platform(
    region: str | None = None, endpoint_url: str | None = None, profile: str | None = None
) -> SageMakerPlatform:
    """The SageMaker platform on one session's clients; Application Auto Scaling's client is built
    when first needed (a config change): most commands never need it."""
    made = aws.session(region, profile)
    built = SageMakerPlatform(
        aws.client("sagemaker", aws.RETRIES, endpoint_url, made),
        aws.client("sagemaker-runtime", aws.RUNTIME_RETRIES, endpoint_url, made),
    )
    built.make_autoscaling = lambda: aws.client("application-autoscaling", aws.RETRIES, endpoint_url, made)
    return built
