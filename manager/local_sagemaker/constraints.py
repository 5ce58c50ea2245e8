"""A request checked against botocore's copy of a service model, as AWS checks it before anything
else: each member present against its enum, length, pattern and range, refused with AWS's "1
validation error detected: Value ... at '...' failed to satisfy constraint: ..." sentence.

Used for Application Auto Scaling, whose whole input is checked this way; SageMaker's operations
check their members one by one where they are handled (`protocol.check_bounds`, `check_name`).
"""

from __future__ import annotations

import functools
import re
from typing import Any

from manager.local_sagemaker.protocol import validation

# Java's \p{Print} (printable ASCII), and a range written as surrogate pairs (Java reads each pair as
# one code point), which Python's re reads otherwise.
_JAVA_CLASSES = {
    r"\p{Print}": r"[\x20-\x7e]",
    r"\uD800\uDC00-\uDBFF\uDFFF": r"\U00010000-\U0010FFFF",
}


@functools.cache
def _model(service: str) -> Any:
    import botocore.session

    return botocore.session.get_session().get_service_model(service)


@functools.cache
def _pattern(pattern: str) -> re.Pattern[str] | None:
    for java, python in _JAVA_CLASSES.items():
        pattern = pattern.replace(java, python)
    try:
        return re.compile(pattern)
    except re.error:  # a class Python cannot read: not checked, rather than wrongly refused
        return None


def check(service: str, operation: str, request: dict[str, Any]) -> None:
    """Raise AWS's ValidationException for the first member of `request` that breaks its shape."""
    shape = _model(service).operation_model(operation).input_shape
    for name in shape.required_members:
        if name not in request or request[name] is None:
            raise _error(None, _lower(name), "Member must not be null")
    _walk(shape, request, "")


def _lower(name: str) -> str:
    return name[:1].lower() + name[1:]


def _error(value: Any, path: str, constraint: str) -> Exception:
    shown = "null" if value is None else str(value)
    return validation(
        f"1 validation error detected: Value '{shown}' at '{path}' failed to satisfy constraint: {constraint}"
    )


def _walk(shape: Any, value: Any, path: str) -> None:
    meta = shape.metadata
    kind = shape.type_name
    if kind == "structure" and isinstance(value, dict):
        for name, member in shape.members.items():
            if name in value and value[name] is not None:
                _walk(member, value[name], f"{path}.{_lower(name)}" if path else _lower(name))
    elif kind == "list" and isinstance(value, list):
        if "max" in meta and len(value) > meta["max"]:
            raise _error(value, path, f"Member must have length less than or equal to {meta['max']}")
        if meta.get("min", 0) > len(value):
            raise _error(value, path, f"Member must have length greater than or equal to {meta['min']}")
        for i, item in enumerate(value):
            _walk(shape.member, item, f"{path}.{i + 1}.member")
    elif kind == "string" and isinstance(value, str):
        _string(meta, value, path)
    elif kind in ("integer", "long", "double", "float") and isinstance(value, int | float):
        if "min" in meta and value < meta["min"]:
            raise _error(value, path, f"Member must have value greater than or equal to {meta['min']}")
        if "max" in meta and value > meta["max"]:
            raise _error(value, path, f"Member must have value less than or equal to {meta['max']}")


def _string(meta: dict[str, Any], value: str, path: str) -> None:
    if "enum" in meta and value not in meta["enum"]:
        raise _error(value, path, f"Member must satisfy enum value set: [{', '.join(meta['enum'])}]")
    if "max" in meta and len(value) > meta["max"]:
        raise _error(value, path, f"Member must have length less than or equal to {meta['max']}")
    if len(value) < meta.get("min", 0):
        raise _error(value, path, f"Member must have length greater than or equal to {meta['min']}")
    pattern = _pattern(meta["pattern"]) if "pattern" in meta else None
    if pattern is not None and not pattern.fullmatch(value):
        raise _error(value, path, f"Member must satisfy regular expression pattern: {meta['pattern']}")
