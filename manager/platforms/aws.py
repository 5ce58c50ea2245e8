"""The one place that builds AWS clients: a boto3 session (the default chain, or a named profile and
region) and clients on it with our retry settings (`factory.py` builds the platform on them). Every
other module asks here (the layering test names the modules that may import boto3), so the endpoint
URL, credentials and retries of every client come from one place: AWS, moto or the local SageMaker
alike, by `AWS_ENDPOINT_URL` or an explicit `endpoint_url`."""

from __future__ import annotations

from typing import Any

from botocore.config import Config

RETRIES = Config(retries={"mode": "standard", "max_attempts": 5}, connect_timeout=5, read_timeout=60)
# Invocations are retried by the caller (a replay keeps the request queued), so botocore tries twice.
RUNTIME_RETRIES = Config(
    retries={"mode": "standard", "max_attempts": 2},
    connect_timeout=5,
    read_timeout=60,
    max_pool_connections=16,
)


def session(region: str | None = None, profile: str | None = None) -> Any:
    """A boto3 session: the default credential chain and region, or the profile and region named."""
    import boto3

    return boto3.Session(profile_name=profile, region_name=region)


def client(service: str, config: Config = RETRIES, endpoint_url: str | None = None, on: Any = None) -> Any:
    """A client of `service` (on the session `on`, or the default one) with our retries."""
    return (on or session()).client(service, endpoint_url=endpoint_url, config=config)


def beside(sagemaker: Any, service: str, config: Config = RETRIES) -> Any:
    """A client of `service` beside a sagemaker client built elsewhere (a test's, aimed at moto or the
    local SageMaker): the same host when that is not AWS's, the same region and credentials (a client
    built with explicit keys has them in no chain)."""
    import boto3

    meta = sagemaker.meta
    url = meta.endpoint_url
    credentials = getattr(getattr(sagemaker, "_request_signer", None), "_credentials", None)
    keys = {}
    if credentials is not None:
        frozen = credentials.get_frozen_credentials()
        keys = {
            "aws_access_key_id": frozen.access_key,
            "aws_secret_access_key": frozen.secret_key,
            "aws_session_token": frozen.token,
        }
    return boto3.client(
        service,
        region_name=meta.region_name,
        endpoint_url=None if "amazonaws.com" in url else url,
        config=config,
        **keys,
    )
