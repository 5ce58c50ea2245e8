"""Registering a trained version in the SageMaker Model Registry: a versioned package in the group,
approved or left for a person as the offline gate and the config say, with its test metrics, and the
package's ARN recorded in our registry as the version's lineage."""

from __future__ import annotations

from typing import Any, Literal

from manager.config import DEFAULT_IMAGE
from manager.db import Database
from manager.registry import models

Approval = Literal["manual", "auto"]
METRICS_MAX = 40  # of CustomerMetadataProperties' 50 entries, leaving room for the outcome's


def approval_status(gate_status: str, approval: Approval) -> str:
    """A version the gate rejected is registered Rejected; one it passed waits for a person (`manual`)
    or is approved (`auto`)."""
    if gate_status == "rejected":
        return "Rejected"
    return "Approved" if approval == "auto" and gate_status == "approved" else "PendingManualApproval"


def package_request(version: Any, status: str, gate: str) -> dict[str, Any]:
    from manager.rollout.packages import metadata_text

    metrics = (version.metrics or {}).get("test") or {}
    properties = {"variantctl-model": version.ref, "variantctl-gate": metadata_text(gate)}
    for name, value in list(sorted(metrics.items()))[:METRICS_MAX]:
        if isinstance(value, int | float):
            properties[metadata_text(f"metric-{name}", 128)] = f"{value:.6g}"
    if version.dataset_fingerprint:
        properties["variantctl-dataset"] = version.dataset_fingerprint
    return {
        "ModelPackageDescription": f"variantctl {version.ref}: {gate}"[:1024],
        "InferenceSpecification": {
            "Containers": [
                {"Image": version.image_uri or DEFAULT_IMAGE, "ModelDataUrl": version.artifact_uri}
            ],
            "SupportedContentTypes": ["text/csv", "application/json"],
            "SupportedResponseMIMETypes": ["text/csv", "application/json"],
        },
        "ModelApprovalStatus": status,
        "CustomerMetadataProperties": properties,
    }


def register_package(
    database: Database, registry: Any, ref: str, group: str, approval: Approval, gate: str, actor: str
) -> tuple[str, str]:
    """Register `ref` in `group` (created if missing); its ARN and approval status."""
    with database.read() as session:
        version = models.get(session, ref)
        status = approval_status(version.status, approval)
        request = package_request(version, status, gate)
        version_metrics, artifact = dict(version.metrics or {}), version.artifact_uri
    registry.ensure_group(group, f"model versions of {version.name}, registered by variantctl")
    if quality := _evaluation(registry, version_metrics, artifact):
        request["ModelMetrics"] = quality
    arn = registry.register(group, request)
    with database.write() as session:
        row = models.get(session, ref)
        row.model_package_arn = arn
        models.record_event(
            session,
            row,
            actor,
            "model.package",
            f"registered as model package {arn} ({status})",
            {"package": arn, "group": group, "approval": status},
        )
    return arn, status


def _evaluation(registry: Any, metrics: dict[str, Any], artifact: str) -> dict[str, Any] | None:
    """A version on S3 gets its test metrics as model quality statistics beside its artifact
    (`evaluation.json`, in Model Monitor's `<problem>_metrics: {name: {value}}` shape, as SageMaker's
    own pipelines write it), and the package's ModelMetrics points there. A local artifact has no S3
    location: its metrics are in CustomerMetadataProperties only."""
    import json

    if not artifact.startswith("s3://") or getattr(registry, "s3", None) is None:
        return None
    test = {k: v for k, v in (metrics.get("test") or {}).items() if isinstance(v, int | float)}
    problem = "binary_classification_metrics" if "roc_auc" in test else "regression_metrics"
    if "roc_auc" not in test and "accuracy" in test:
        problem = "multiclass_classification_metrics"
    uri = artifact.rsplit("/", 1)[0] + "/evaluation.json"
    body = {problem: {name: {"value": value} for name, value in sorted(test.items())}}
    registry.put_evaluation(uri, json.dumps(body, indent=2).encode())
    return {"ModelQuality": {"Statistics": {"ContentType": "application/json", "S3Uri": uri}}}
