"""docs/iam-policy.json allows every AWS operation the product can call, and nothing service-wide.

The operations are read from the source of the modules that hold the product's boto3 clients (every
client method named there, mapped to its API name by botocore's own service model), so the check
needs no other test to have run first and covers code paths no test reaches. Operations that other
tests in the same session did record (tests/aws_support.py) must be among them: the scan missed
nothing that really ran."""

from __future__ import annotations

import ast
import json
from fnmatch import fnmatch
from pathlib import Path

import boto3

from .aws_support import CALLED

ROOT = Path(__file__).resolve().parent.parent
POLICY = ROOT / "docs" / "iam-policy.json"
# The modules that call AWS (DESIGN.md: everything else reaches it through their protocols).
AWS_MODULES = (
    "manager/platforms/sagemaker.py",
    "manager/platforms/scaling.py",
    "manager/metrics/cloudwatch.py",
    "manager/groundtruth/stores.py",
    "trainers/sagemaker_job.py",
    "manager/platforms/packages.py",
)
# IAM names a few operations differently from the API.
IAM_ACTION = {("s3", "ListObjectsV2"): "s3:ListBucket", ("s3", "ListObjects"): "s3:ListBucket"}
IAM_PREFIX = {
    "sagemaker": "sagemaker",
    "cloudwatch": "cloudwatch",
    "s3": "s3",
    "application-autoscaling": "application-autoscaling",
    "sqs": "sqs",
}


def allowed_actions() -> list[str]:
    policy = json.loads(POLICY.read_text())
    actions: list[str] = []
    for statement in policy["Statement"]:
        assert statement["Effect"] == "Allow"
        listed = statement["Action"]
        actions += [listed] if isinstance(listed, str) else listed
    return actions


def operations_in_source() -> set[tuple[str, str]]:
    """(service, API operation) for every client method named in AWS_MODULES, as an attribute
    (`client.get_object(...)`) or as a string (`self._call("describe_endpoint", ...)`)."""
    words: set[str] = set()
    for module in AWS_MODULES:
        for node in ast.walk(ast.parse((ROOT / module).read_text())):
            if isinstance(node, ast.Attribute):
                words.add(node.attr)
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                words.add(node.value)
    found = set()
    for service in IAM_PREFIX:
        mapping = boto3.client(service, region_name="us-east-1").meta.method_to_api_mapping
        found |= {(service, mapping[w]) for w in words if w in mapping}
    return found


def _action(service: str, op: str) -> str:
    return IAM_ACTION.get((service, op), f"{IAM_PREFIX[service]}:{op}")


# What only an operator's own command calls, never the daemon: deliberately outside its policy
# (README: `endpoints forget --delete-endpoint` needs it).
OPERATOR_ONLY = {("sagemaker", "DeleteEndpoint")}


def test_policy_allows_every_operation_the_product_can_call() -> None:
    called = operations_in_source() - OPERATOR_ONLY
    assert {service for service, _ in called} == {
        "sagemaker",
        "cloudwatch",
        "s3",
        "application-autoscaling",
        "sqs",
    }
    assert ("sagemaker", "UpdateEndpoint") in called and ("cloudwatch", "GetMetricData") in called
    actions = allowed_actions()
    missing = sorted(
        _action(service, op)
        for service, op in called
        if not any(fnmatch(_action(service, op), a) for a in actions)
    )
    assert missing == [], f"docs/iam-policy.json lacks {missing}"


def test_the_source_scan_misses_no_operation_that_ran() -> None:
    """Whatever the product's clients were seen calling in this session is in the scan's set."""
    assert set(CALLED) - operations_in_source() == set()


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
