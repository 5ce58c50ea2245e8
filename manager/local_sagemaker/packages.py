"""The SageMaker Model Registry: model package groups and their versioned model packages.

CreateModelPackageGroup, DescribeModelPackageGroup, ListModelPackageGroups, DeleteModelPackageGroup;
CreateModelPackage (versioned, from an InferenceSpecification), DescribeModelPackage,
ListModelPackages, UpdateModelPackage. Each package's creation and each change emits the EventBridge
event "SageMaker Model Package State Change" (`on_event`), which the host's SQS queues receive as
an EventBridge rule with that pattern would deliver it. The rules and their sources are in
docs/aws-rules.md, "Model Registry".
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from manager.local_sagemaker import package_rules as rules
from manager.local_sagemaker.book import Shared, find
from manager.local_sagemaker.listing import page, sorted_by
from manager.local_sagemaker.protocol import ACCOUNT, AwsError, check_name, iso, validation

EVENT_TYPE = "SageMaker Model Package State Change"
SUMMARY = (
    "ModelPackageName",
    "ModelPackageGroupName",
    "ModelPackageVersion",
    "ModelPackageArn",
    "ModelPackageDescription",
    "CreationTime",
    "ModelPackageStatus",
    "ModelApprovalStatus",
    "ModelLifeCycle",
)
KEPT = (
    "ModelPackageDescription",
    "InferenceSpecification",
    "MetadataProperties",
    "ModelMetrics",
    "Domain",
    "Task",
    "SamplePayloadUrl",
    "DriftCheckBaselines",
    "SourceUri",
    "SkipModelValidation",
)


def _stamp(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Packages:
    def __init__(self, shared: Shared) -> None:
        self.shared = shared
        self.groups: dict[str, dict[str, Any]] = {}
        self.versions: dict[str, dict[str, Any]] = {}  # by ARN
        self.tokens: dict[str, str] = {}  # ClientToken -> ARN
        self.on_event: Callable[[dict[str, Any]], None] = lambda event: None

    # ---- groups -------------------------------------------------------------------------------

    def _group_arn(self, name: str) -> str:
        return self.shared.arn("model-package-group", name)

    def group(self, name_or_arn: Any) -> dict[str, Any]:
        key = str(name_or_arn or "")
        if key.startswith("arn:"):
            key = key.rsplit("/", 1)[-1]
        found = find(self.groups, key)
        if found is None:
            raise validation(f"ModelPackageGroup {self._group_arn(key)} does not exist.")
        return found

    def op_CreateModelPackageGroup(self, req: dict[str, Any]) -> dict[str, Any]:
        name = check_name("modelPackageGroupName", req.get("ModelPackageGroupName"))
        if find(self.groups, name) is not None:
            raise validation(f"Model Package Group already exists: {self._group_arn(name)}")
        self.shared.tags.add(self._group_arn(name), req.get("Tags") or [])
        self.groups[name] = {
            "ModelPackageGroupName": name,
            "ModelPackageGroupArn": self._group_arn(name),
            "ModelPackageGroupDescription": rules.description(
                req.get("ModelPackageGroupDescription"), "modelPackageGroupDescription"
            ),
            "CreationTime": self.shared.clock(),
            "ModelPackageGroupStatus": "Completed",
        }
        self.shared.save()
        return {"ModelPackageGroupArn": self._group_arn(name)}

    def op_DescribeModelPackageGroup(self, req: dict[str, Any]) -> dict[str, Any]:
        found = self.group(req.get("ModelPackageGroupName"))
        return {
            k: v for k, v in {**found, "CreationTime": iso(found["CreationTime"])}.items() if v is not None
        }

    def op_ListModelPackageGroups(self, req: dict[str, Any]) -> dict[str, Any]:
        rows = [dict(g) for g in self.groups.values()]
        req = {"SortOrder": "Ascending", **req}  # AWS's default order for this list
        return page(req, rows, "ModelPackageGroupSummaryList", sorted_by("ModelPackageGroupName"))

    def op_DeleteModelPackageGroup(self, req: dict[str, Any]) -> dict[str, Any]:
        found = self.group(req.get("ModelPackageGroupName"))
        name = found["ModelPackageGroupName"]
        if any(v["ModelPackageGroupName"] == name for v in self.versions.values()):
            raise AwsError(
                "ConflictException",
                f"Model Package Group {found['ModelPackageGroupArn']} cannot be deleted: it still has "
                "model packages. Delete them first.",
            )
        del self.groups[name]
        self.shared.tags.forget(found["ModelPackageGroupArn"])
        self.shared.save()
        return {}

    # ---- versioned packages ---------------------------------------------------------------------

    def package(self, name_or_arn: Any) -> dict[str, Any]:
        """A versioned package by its ARN, or by `<group>/<version>`."""
        key = str(name_or_arn or "")
        found = self.versions.get(key)
        if found is None and not key.startswith("arn:") and "/" in key:
            group, _, number = key.partition("/")
            found = self.versions.get(f"{self._package_prefix(group)}/{number}")
        if found is None:
            found = next((v for a, v in self.versions.items() if a.lower() == key.lower()), None)
        if found is None:
            raise validation(f"ModelPackage {key} does not exist.")
        return found

    def _package_prefix(self, group: str) -> str:
        return self.shared.arn("model-package", group)

    def op_CreateModelPackage(self, req: dict[str, Any]) -> dict[str, Any]:
        if req.get("ModelPackageName") and req.get("ModelPackageGroupName"):
            raise validation(
                "Both ModelPackageName and ModelPackageGroupName are provided in the input. "
                "Cannot determine which one to use."
            )
        if not req.get("ModelPackageGroupName"):
            raise validation(
                "The local SageMaker registers versioned model packages only: give "
                "ModelPackageGroupName (unversioned packages are for AWS Marketplace)"
            )
        token = req.get("ClientToken")
        if token and token in self.tokens:  # idempotent: the same request again is the same package
            return {"ModelPackageArn": self.tokens[token]}
        group = self.group(req["ModelPackageGroupName"])
        entry = self._new_package(group, req)
        self.versions[entry["ModelPackageArn"]] = entry
        if token:
            self.tokens[str(token)] = entry["ModelPackageArn"]
        self.shared.save()
        self._emit(entry)
        return {"ModelPackageArn": entry["ModelPackageArn"]}

    def _new_package(self, group: dict[str, Any], req: dict[str, Any]) -> dict[str, Any]:
        name = group["ModelPackageGroupName"]
        spec = rules.inference_specification(req.get("InferenceSpecification"))
        status = rules.approval(req.get("ModelApprovalStatus") or "PendingManualApproval")
        number = 1 + max(
            (v["ModelPackageVersion"] for v in self.versions.values() if v["ModelPackageGroupName"] == name),
            default=0,
        )
        now = self.shared.clock()
        rules.description(req.get("ModelPackageDescription"), "modelPackageDescription")
        return {
            **{k: req[k] for k in KEPT if req.get(k) is not None},
            "InferenceSpecification": spec,
            "ModelPackageName": name,
            "ModelPackageGroupName": name,
            "ModelPackageVersion": number,
            "ModelPackageArn": f"{self._package_prefix(name)}/{number}",
            "ModelPackageRegistrationType": "Registered",
            "CreationTime": now,
            "LastModifiedTime": now,
            "ModelPackageStatus": "Completed",
            "ModelPackageStatusDetails": {"ValidationStatuses": [], "ImageScanStatuses": []},
            "CertifyForMarketplace": bool(req.get("CertifyForMarketplace", False)),
            "ModelApprovalStatus": status,
            "CustomerMetadataProperties": rules.metadata(req.get("CustomerMetadataProperties")) or None,
            "ModelLifeCycle": rules.life_cycle(req.get("ModelLifeCycle")),
        }

    def op_DescribeModelPackage(self, req: dict[str, Any]) -> dict[str, Any]:
        found = self.package(req.get("ModelPackageName"))
        return self._described(found)

    @staticmethod
    def _described(entry: dict[str, Any]) -> dict[str, Any]:
        out = {k: v for k, v in entry.items() if v is not None}
        for field in ("CreationTime", "LastModifiedTime"):
            out[field] = iso(entry[field])
        return out

    def op_ListModelPackages(self, req: dict[str, Any]) -> dict[str, Any]:
        kind = req.get("ModelPackageType")
        if kind is not None and kind not in ("Versioned", "Unversioned", "Both"):
            raise validation(
                f"1 validation error detected: Value '{kind}' at 'modelPackageType' failed to satisfy "
                "constraint: Member must satisfy enum value set: [Versioned, Both, Unversioned]"
            )
        if kind == "Unversioned" or (kind is None and not req.get("ModelPackageGroupName")):
            rows: list[dict[str, Any]] = []  # the host holds no unversioned packages
        else:
            rows = list(self.versions.values())
        if req.get("ModelPackageGroupName"):
            name = self.group(req["ModelPackageGroupName"])["ModelPackageGroupName"]
            rows = [r for r in rows if r["ModelPackageGroupName"] == name]
        if req.get("ModelApprovalStatus") is not None:
            wanted = rules.approval(req["ModelApprovalStatus"])
            rows = [r for r in rows if r["ModelApprovalStatus"] == wanted]
        summaries = [{k: r[k] for k in SUMMARY if r.get(k) is not None} for r in rows]
        sorts = {
            "Name": lambda r: (r["ModelPackageName"], r["ModelPackageVersion"]),
            "CreationTime": lambda r: (r["CreationTime"], r["ModelPackageVersion"]),
        }
        return page({"SortOrder": "Ascending", **req}, summaries, "ModelPackageSummaryList", sorts)

    def op_UpdateModelPackage(self, req: dict[str, Any]) -> dict[str, Any]:
        if not req.get("ModelPackageArn"):
            raise validation(
                "1 validation error detected: Value null at 'modelPackageArn' failed to satisfy "
                "constraint: Member must not be null"
            )
        entry = self.package(req["ModelPackageArn"])
        changes = self._changes(entry, req)
        if changes:
            entry.update(changes)
            entry["LastModifiedTime"] = self.shared.clock()
            self.shared.save()
            self._emit(entry)
        return {"ModelPackageArn": entry["ModelPackageArn"]}

    @staticmethod
    def _changes(entry: dict[str, Any], req: dict[str, Any]) -> dict[str, Any]:
        changes: dict[str, Any] = {}
        if req.get("ModelApprovalStatus") is not None:
            changes["ModelApprovalStatus"] = rules.approval(req["ModelApprovalStatus"])
        if req.get("ApprovalDescription") is not None:
            changes["ApprovalDescription"] = rules.description(
                req["ApprovalDescription"], "approvalDescription"
            )
        added = rules.metadata(req.get("CustomerMetadataProperties"))
        removed = req.get("CustomerMetadataPropertiesToRemove") or []
        if set(added) & set(removed):
            raise validation(
                "A key cannot be both added and removed in one request: "
                + ", ".join(sorted(set(added) & set(removed)))
            )
        if added or removed:
            merged = {**(entry.get("CustomerMetadataProperties") or {}), **added}
            for key in removed:
                merged.pop(key, None)
            if len(merged) > rules.METADATA_MAX:
                raise validation(
                    f"A model package may carry at most {rules.METADATA_MAX} CustomerMetadataProperties"
                )
            changes["CustomerMetadataProperties"] = merged or None
        if req.get("ModelLifeCycle") is not None:
            changes["ModelLifeCycle"] = rules.life_cycle(req["ModelLifeCycle"])
        return changes

    def _emit(self, entry: dict[str, Any]) -> None:
        detail = {k: v for k, v in entry.items() if v is not None}
        detail["CreationTime"] = _stamp(entry["CreationTime"])
        detail["LastModifiedTime"] = _stamp(entry["LastModifiedTime"])
        self.on_event(
            {
                "version": "0",
                "id": str(uuid.uuid4()),
                "detail-type": EVENT_TYPE,
                "source": "aws.sagemaker",
                "account": ACCOUNT,
                "time": _stamp(self.shared.clock()),
                "region": self.shared.region,
                "resources": [entry["ModelPackageArn"]],
                "detail": detail,
            }
        )

    # ---- persistence and CreateModel ----------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        return {"groups": self.groups, "versions": self.versions, "tokens": self.tokens}

    def restore(self, state: dict[str, Any]) -> None:
        self.groups = state.get("groups", {})
        self.versions = state.get("versions", {})
        self.tokens = state.get("tokens", {})

    def servable(self, name_or_arn: Any) -> dict[str, Any]:
        """The container CreateModel serves for `ModelPackageName`: the package's first container.
        A versioned package must be Approved to be deployed (CreateModelPackage's documentation of
        ModelApprovalStatus)."""
        entry = self.package(name_or_arn)
        if entry["ModelApprovalStatus"] != "Approved":
            raise validation(
                f"Model Package {entry['ModelPackageArn']} has ModelApprovalStatus "
                f"{entry['ModelApprovalStatus']}: a versioned model package must be Approved to be deployed"
            )
        first: dict[str, Any] = entry["InferenceSpecification"]["Containers"][0]
        return first
