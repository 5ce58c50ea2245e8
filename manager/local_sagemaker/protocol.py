"""The AWS wire formats the host speaks: JSON 1.0/1.1 and Smithy RPC v2 CBOR, and their errors."""

from __future__ import annotations

import functools
import json
import re
from datetime import UTC, datetime
from typing import Any

import cbor2
from starlette.responses import Response

JSON_11 = "application/x-amz-json-1.1"
JSON_10 = "application/x-amz-json-1.0"
CBOR = "application/cbor"


class AwsError(Exception):
    """An error in AWS's shape: botocore raises ClientError with `code` and `message`."""

    def __init__(self, code: str, message: str, status: int = 400, **fields: Any) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status
        self.fields = fields


def validation(message: str) -> AwsError:
    return AwsError("ValidationException", message)


ACCOUNT = "123456789012"  # the host's one account, in every ARN and message that names one


def sagemaker_arn(region: str, kind: str, name: str) -> str:
    """As SageMaker writes its ARNs: the resource name in lower case."""
    return f"arn:aws:sagemaker:{region}:{ACCOUNT}:{kind}/{name.lower()}"


def iso(ts: float) -> datetime:
    """An epoch time as the datetime the wire formats send."""
    return datetime.fromtimestamp(ts, UTC)


TIME_FIELDS = ("Time", "StartTime", "EndTime", "Timestamp")


def wire_times(value: Any) -> Any:
    """A record as sent: epoch numbers in its `...Time`/`Timestamp` fields become timestamps, and
    fields that are None are left out, as AWS leaves out what is not set."""
    if isinstance(value, dict):
        return {
            k: iso(v)
            if isinstance(v, int | float) and not isinstance(v, bool) and k.endswith(TIME_FIELDS)
            else wire_times(v)
            for k, v in value.items()
            if v is not None
        }
    if isinstance(value, list):
        return [wire_times(v) for v in value]
    return value


def check_name(field_name: str, value: Any, limit: int = 63) -> str:
    """A SageMaker resource name (63 characters; 32 for tuning jobs), refused in AWS's words."""
    if not isinstance(value, str) or not value:
        raise validation(
            f"1 validation error detected: Value at '{field_name}' failed to satisfy "
            "constraint: Member must not be null"
        )
    if len(value) > limit:
        raise validation(
            f"1 validation error detected: Value '{value}' at '{field_name}' failed to "
            f"satisfy constraint: Member must have length less than or equal to {limit}"
        )
    if not re.fullmatch(rf"[a-zA-Z0-9](-*[a-zA-Z0-9]){{0,{limit - 1}}}", value):
        raise validation(
            f"1 validation error detected: Value '{value}' at '{field_name}' failed to "
            "satisfy constraint: Member must satisfy regular expression pattern: "
            f"^[a-zA-Z0-9](-*[a-zA-Z0-9]){{0,{limit - 1}}}"
        )
    return value


@functools.cache
def _sagemaker_model() -> Any:
    """botocore's copy of SageMaker's service model, loaded once (it takes ~80 ms to load)."""
    import botocore.session

    return botocore.session.get_session().get_service_model("sagemaker")


@functools.cache
def _enum(shape: str) -> tuple[str, ...]:
    """The values SageMaker's service model allows for an enum shape (from botocore's own copy)."""
    return tuple(_sagemaker_model().shape_for(shape).enum)


@functools.cache
def _integer_bounds(structure: str) -> tuple[tuple[str, int | None, int | None], ...]:
    """(member, min, max) of each integer member of a structure shape of SageMaker's model."""
    shape = _sagemaker_model().shape_for(structure)
    return tuple(
        (name, member.metadata.get("min"), member.metadata.get("max"))
        for name, member in shape.members.items()
        if member.type_name == "integer"
    )


def check_bounds(structure: str, value: dict[str, Any], where: str, skip: tuple[str, ...] = ()) -> None:
    """Each integer member of `value` against the min/max botocore's model gives the `structure`
    shape, worded as AWS's validation errors are (`where`: the member path AWS names)."""
    for name, low, high in _integer_bounds(structure):
        if name in skip or name not in value:
            continue
        got = value[name]
        field = f"{where}.{name[0].lower()}{name[1:]}"
        if not isinstance(got, int) or isinstance(got, bool):
            raise validation(f"1 validation error detected: Value '{got}' at '{field}' must be an integer")
        broken = (low is not None and got < low) or (high is not None and got > high)
        if broken:
            rule = (
                f"Member must have value between {low} and {high}"
                if low is not None and high is not None
                else f"Member must have value greater than or equal to {low}"
                if low is not None
                else f"Member must have value less than or equal to {high}"
            )
            raise validation(
                f"1 validation error detected: Value '{got}' at '{field}' failed to satisfy "
                f"constraint: {rule}"
            )


def check_instance_type(shape: str, field: str, value: Any) -> str:
    """InstanceType against the service model's enum, worded as AWS's validation errors are."""
    allowed = _enum(shape)
    if value is None:
        raise validation(
            f"1 validation error detected: Value null at '{field}' failed to satisfy constraint: "
            "Member must not be null"
        )
    if value not in allowed:
        raise validation(
            f"1 validation error detected: Value '{value}' at '{field}' failed to satisfy constraint: "
            f"Member must satisfy enum value set: [{', '.join(allowed)}]"
        )
    return str(value)


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return round(value.timestamp(), 3)  # AWS's JSON times carry milliseconds, no finer
    raise TypeError(f"cannot encode {type(value).__name__}")


def json_response(payload: dict[str, Any], content_type: str = JSON_11) -> Response:
    body = json.dumps(payload, default=_json_default, separators=(",", ":"))
    return Response(body, media_type=content_type)


def json_error(error: AwsError, content_type: str = JSON_11) -> Response:
    body = {"__type": error.code, "message": error.message, **error.fields}
    return Response(
        json.dumps(body),
        status_code=error.status,
        media_type=content_type,
        headers={"x-amzn-errortype": error.code},
    )


def cbor_response(payload: dict[str, Any]) -> Response:
    body = cbor2.dumps(payload, datetime_as_timestamp=True, timezone=UTC)
    return Response(body, media_type=CBOR, headers={"smithy-protocol": "rpc-v2-cbor"})


def cbor_error(error: AwsError) -> Response:
    body = cbor2.dumps({"__type": error.code, "message": error.message, **error.fields})
    return Response(
        body, status_code=error.status, media_type=CBOR, headers={"smithy-protocol": "rpc-v2-cbor"}
    )


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")  # AWS's parsers refuse NaN and Infinity


def parse_json(body: bytes) -> dict[str, Any]:
    if not body:
        return {}
    try:
        value = json.loads(body, parse_constant=_no_constant)
    except ValueError:
        raise AwsError("SerializationException", "request body is not valid JSON") from None
    except RecursionError:
        raise AwsError("SerializationException", "request body is nested too deeply") from None
    if not isinstance(value, dict):
        raise AwsError("SerializationException", "request body must be a JSON object")
    return value


def parse_cbor(body: bytes) -> dict[str, Any]:
    if not body:
        return {}
    try:
        value = cbor2.loads(body)
    except (cbor2.CBORDecodeError, ValueError):
        raise AwsError("SerializationException", "request body is not valid CBOR") from None
    except RecursionError:
        raise AwsError("SerializationException", "request body is nested too deeply") from None
    if not isinstance(value, dict):
        raise AwsError("SerializationException", "request body must be a CBOR map")
    return value


def as_datetime(value: Any, field: str) -> datetime:
    """A timestamp as botocore sends it: epoch seconds in JSON, a tagged datetime in CBOR."""
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value, UTC)
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            pass
    raise validation(f"{field} is not a timestamp")
