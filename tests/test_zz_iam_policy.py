"""docs/iam-policy.json allows every AWS operation the adapter and metric sources called in this
test session. Named to run last: the other tests record the calls (tests/aws_support.py)."""

from __future__ import annotations

import json
from fnmatch import fnmatch
from pathlib import Path

import pytest

from .aws_support import CALLED

POLICY = Path(__file__).resolve().parent.parent / "docs" / "iam-policy.json"
# IAM names a few operations differently from the API.
IAM_ACTION = {("s3", "ListObjectsV2"): "s3:ListBucket", ("s3", "ListObjects"): "s3:ListBucket"}
IAM_PREFIX = {"sagemaker": "sagemaker", "cloudwatch": "cloudwatch", "s3": "s3"}


def allowed_actions() -> list[str]:
    policy = json.loads(POLICY.read_text())
    actions: list[str] = []
    for statement in policy["Statement"]:
        assert statement["Effect"] == "Allow"
        listed = statement["Action"]
        actions += [listed] if isinstance(listed, str) else listed
    return actions


def test_policy_allows_every_operation_called() -> None:
    if not CALLED:
        pytest.skip("no AWS calls recorded: run the whole suite (the adapter and metric tests record them)")
    assert {service for service, _ in CALLED} >= {"sagemaker", "cloudwatch", "s3"}, CALLED
    actions = allowed_actions()
    missing = sorted(
        IAM_ACTION.get((service, op), f"{IAM_PREFIX[service]}:{op}")
        for service, op in CALLED
        if not any(fnmatch(IAM_ACTION.get((service, op), f"{IAM_PREFIX[service]}:{op}"), a) for a in actions)
    )
    assert missing == [], f"docs/iam-policy.json lacks {missing}"


def test_policy_is_least_privilege() -> None:
    actions = allowed_actions()
    assert not [a for a in actions if a.endswith(":*") or a == "*"], "no service-wide wildcards"
    forbidden = {"sagemaker:DeleteEndpoint", "sagemaker:DeleteModel", "s3:DeleteObject"}
    assert forbidden.isdisjoint(actions)
    for statement in json.loads(POLICY.read_text())["Statement"]:
        writes = [
            a for a in statement["Action"] if a.startswith(("s3:Put", "sagemaker:Create", "sagemaker:Update"))
        ]
        if writes:
            assert statement["Resource"] != "*", f"{writes} must name their resources"
