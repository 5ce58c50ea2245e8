"""The Model Registry's input rules, as botocore's model states them (docs/aws-rules.md, "Model
Registry"), refused in AWS's "1 validation error detected" words."""

from __future__ import annotations

import re
import unicodedata
from typing import Any

from manager.local_sagemaker.protocol import validation

APPROVAL_STATUSES = ("Approved", "Rejected", "PendingManualApproval")
NAME_PATTERN = r"[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}"
METADATA_SYMBOLS = set("_.:/=+-@")
METADATA_MAX = 50
CONTAINERS_MAX = 15
DESCRIPTION_MAX = 1024


def _failed(value: Any, where: str, constraint: str) -> Exception:
    return validation(
        f"1 validation error detected: Value '{value}' at '{where}' failed to satisfy "
        f"constraint: {constraint}"
    )


def approval(value: Any, where: str = "modelApprovalStatus") -> str:
    if value not in APPROVAL_STATUSES:
        raise _failed(value, where, f"Member must satisfy enum value set: [{', '.join(APPROVAL_STATUSES)}]")
    return str(value)


def _metadata_text(text: Any, where: str, limit: int) -> str:
    """A key or value of CustomerMetadataProperties: 1-limit characters of [\\p{L}\\p{Z}\\p{N}_.:/=+\\-@]."""
    if not isinstance(text, str) or not 1 <= len(text) <= limit:
        raise _failed(text, where, f"Member must have length between 1 and {limit}")
    bad = [c for c in text if unicodedata.category(c)[0] not in "LZN" and c not in METADATA_SYMBOLS]
    if bad:
        raise _failed(
            text,
            where,
            "Member must satisfy regular expression pattern: ^([\\p{L}\\p{Z}\\p{N}_.:/=+\\-@]*)${1,256}",
        )
    return text


def metadata(value: Any, where: str = "customerMetadataProperties") -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise validation(f"{where} must be a map of strings")
    if len(value) > METADATA_MAX:
        raise _failed("...", where, f"Map must have length less than or equal to {METADATA_MAX}")
    return {
        _metadata_text(k, f"{where}.key", 128): _metadata_text(v, f"{where}.{k}.member", 256)
        for k, v in value.items()
    }


def life_cycle(value: Any) -> dict[str, str] | None:
    """ModelLifeCycle: Stage and StageStatus required, each a name; StageDescription at most 1,024."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise validation("modelLifeCycle must be a structure")
    for member in ("Stage", "StageStatus"):
        text = value.get(member)
        if text is None:
            raise _failed(
                "null", f"modelLifeCycle.{member[0].lower()}{member[1:]}", "Member must not be null"
            )
        if not isinstance(text, str) or not re.fullmatch(NAME_PATTERN, text):
            raise _failed(
                text,
                f"modelLifeCycle.{member[0].lower()}{member[1:]}",
                f"Member must satisfy regular expression pattern: {NAME_PATTERN}",
            )
    described = value.get("StageDescription")
    if described is not None and (not isinstance(described, str) or len(described) > DESCRIPTION_MAX):
        raise _failed(
            described,
            "modelLifeCycle.stageDescription",
            f"Member must have length less than or equal to {DESCRIPTION_MAX}",
        )
    return {k: v for k, v in value.items() if k in ("Stage", "StageStatus", "StageDescription")}


def description(value: Any, where: str) -> str | None:
    if value is not None and (not isinstance(value, str) or len(value) > DESCRIPTION_MAX):
        raise _failed(value, where, f"Member must have length less than or equal to {DESCRIPTION_MAX}")
    return value


def inference_specification(value: Any) -> dict[str, Any]:
    """InferenceSpecification needs Containers (1-15), each with an Image; the host serves the first."""
    if not isinstance(value, dict):
        raise validation(
            "The local SageMaker registers model packages from an InferenceSpecification only "
            "(no SourceAlgorithmSpecification: it runs no Marketplace algorithms)"
        )
    containers = value.get("Containers")
    if not isinstance(containers, list) or not 1 <= len(containers) <= CONTAINERS_MAX:
        raise _failed(
            containers,
            "inferenceSpecification.containers",
            f"Member must have length between 1 and {CONTAINERS_MAX}",
        )
    for i, container in enumerate(containers):
        if not isinstance(container, dict) or not container.get("Image"):
            raise _failed(
                "null", f"inferenceSpecification.containers.{i + 1}.member.image", "Member must not be null"
            )
    return value
