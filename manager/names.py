"""SageMaker's naming rules, checked before any call (botocore checks neither patterns nor lengths)."""

from __future__ import annotations

import re

from manager.errors import UserError

# EndpointName, EndpointConfigName, ModelName and VariantName share this pattern.
RESOURCE_NAME = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")
MAX_LENGTH = 63


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
