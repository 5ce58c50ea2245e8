"""SageMaker's naming rules, checked before any call (botocore checks neither patterns nor lengths)."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict
from datetime import datetime
from typing import Any

from manager.clock import utcnow
from manager.errors import UserError

# EndpointName, EndpointConfigName, ModelName and VariantName share this pattern.
RESOURCE_NAME = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")
MAX_LENGTH = 63
STAMP = "%Y%m%d%H%M%S"


def check_name(kind: str, value: str) -> str:
    """Return `value` when SageMaker would accept it as a `kind` name, else raise one clear line."""
    if not value:
        raise UserError(f"{kind} name is empty")
    if len(value) > MAX_LENGTH:
        raise UserError(f"{kind} name {value!r} is {len(value)} characters; the limit is {MAX_LENGTH}")
    if not RESOURCE_NAME.match(value):
        raise UserError(
            f"{kind} name {value!r} is invalid: use letters, digits and hyphens, "
            "starting and ending with a letter or digit"
        )
    return value


def shadow_variant(candidate_variant: str) -> str:
    """The candidate's variant while it shadows: data capture files its answers under this name, with
    the inference id of the production request they copy."""
    return f"{candidate_variant[:56]}-shadow"


def model_name(name: str, version: int) -> str:
    """The SageMaker model for version `version` of registry model `name`: `<name>-v<version>`, the name
    truncated so that the whole fits (every caller, the reconciler's and the offline gate's, uses this)."""
    suffix = f"-v{version}"
    return check_name("model", name[: min(55, MAX_LENGTH - len(suffix))].rstrip("-") + suffix)


def readable_name(base: str, spec: Any, now: datetime | None = None) -> str:
    """`<base>-<yyyymmddHHMMSS>-<6 hex of the spec>`, at most 63 characters, valid for SageMaker.
    `spec` is a dataclass; the same base, spec and second give the same name (safe to repeat)."""
    digest = hashlib.sha256(json.dumps(asdict(spec), sort_keys=True, default=str).encode()).hexdigest()[:6]
    suffix = f"-{(now or utcnow()).strftime(STAMP)}-{digest}"
    head = re.sub(r"[^a-zA-Z0-9-]", "-", base)[: MAX_LENGTH - len(suffix)].strip("-") or "x"
    return check_name("generated", head + suffix)
