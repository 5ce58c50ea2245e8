"""SageMaker Model Monitor's JSON Lines records, parsed: capture records (`captureData` with
`eventMetadata.inferenceId`, or `eventId` when the caller gave none) and ground-truth records
(`groundTruthData` with `eventMetadata.eventId` naming the inference), and the outcome of a labelled
prediction. Anything else is `Malformed`: counted and skipped by the caller, never fatal."""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Literal

Kind = Literal["classification", "regression"]
# Requests a replay sends carry inference ids that start so: ingestion knows them and leaves them out.
REPLAY_PREFIX = "variantctl-replay-"


class Malformed(ValueError):
    """A line that is not a Model Monitor record of the expected kind."""


def _decode(part: dict[str, Any]) -> tuple[str, str]:
    data, encoding = part["data"], part.get("encoding", "CSV").upper()
    if encoding == "BASE64":
        return base64.b64decode(data).decode(), part.get("observedContentType", "text/csv")
    return data, "application/json" if encoding == "JSON" else "text/csv"


def _numbers(text: str, content_type: str) -> list[list[float]]:
    """Rows of numbers from a CSV body (a row per line) or a JSON one."""
    if content_type.split(";")[0].strip() == "application/json":
        value = json.loads(text)
        if isinstance(value, dict):
            value = value.get("predictions", value.get("labels", value))
        rows = [_json_row(v) for v in value] if isinstance(value, list) else [_json_row(value)]
    else:
        rows = [[float(x) for x in line.split(",")] for line in text.splitlines() if line.strip()]
    if not rows or any(not r or not all(math.isfinite(x) for x in r) for r in rows):
        raise Malformed("no finite numbers")
    return rows


def _json_row(value: Any) -> list[float]:
    if isinstance(value, dict):
        value = value.get("score", value.get("label", value.get("predicted_label")))
    if isinstance(value, list):
        return [float(v) for v in value]
    return [float(value)]


def parse_capture(line: bytes) -> tuple[str, datetime, list[list[float]]]:
    """(inference id, inference time, output rows) from one capture record."""
    inference_id, at, outputs, _record = _capture(line)
    return inference_id, at, outputs


def _capture(line: bytes) -> tuple[str, datetime, list[list[float]], dict[str, Any]]:
    """A capture record's id, time and outputs, and the record itself (parsed once)."""
    try:
        record = json.loads(line)
        meta = record["eventMetadata"]
        inference_id = meta.get("inferenceId") or meta["eventId"]
        at = datetime.fromisoformat(meta["inferenceTime"]).astimezone(UTC)
        outputs = _numbers(*_decode(record["captureData"]["endpointOutput"]))
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise Malformed(f"capture record: {type(exc).__name__}: {exc}") from None
    if not isinstance(inference_id, str) or not 0 < len(inference_id) <= 256:
        raise Malformed("capture record: inference id must be a string of 1-256 characters")
    return inference_id, at, outputs, record


def parse_capture_request(line: bytes) -> tuple[str, datetime, dict[str, str] | None, list[list[float]]]:
    """(inference id, time, the captured request or None, output rows) from one capture record; the
    request as Model Monitor keeps it: {"data", "encoding", "observedContentType"}."""
    inference_id, at, outputs, record = _capture(line)
    part = record["captureData"].get("endpointInput")
    if part is None:
        return inference_id, at, None, outputs
    if not isinstance(part, dict) or not isinstance(part.get("data"), str):
        raise Malformed("capture record: endpointInput has no data")
    return (
        inference_id,
        at,
        {
            "data": part["data"],
            "encoding": str(part.get("encoding", "CSV")).upper(),
            "observedContentType": str(part.get("observedContentType") or "text/csv"),
        },
        outputs,
    )


def request_body(request: dict[str, str]) -> tuple[bytes, str]:
    """The bytes and content type to send again, from a captured request."""
    data = request["data"]
    body = base64.b64decode(data) if request["encoding"] == "BASE64" else data.encode()
    return body, request["observedContentType"]


def parse_answer(body: bytes, content_type: str) -> list[list[float]]:
    """Output rows from an endpoint's answer, as a capture record would hold them."""
    try:
        return _numbers(body.decode(), content_type or "text/csv")
    except (ValueError, TypeError, AttributeError, UnicodeDecodeError) as exc:
        raise Malformed(f"answer: {type(exc).__name__}: {exc}") from None


def predicted_class(row: Sequence[float], threshold: float) -> float:
    """The class a row of scores predicts: a threshold on one score, else the largest."""
    if len(row) == 1:
        return 1.0 if row[0] >= threshold else 0.0
    return float(max(range(len(row)), key=row.__getitem__))


def parse_label(line: bytes) -> tuple[str, list[list[float]]]:
    """(inference id, label rows) from one ground-truth record."""
    try:
        record = json.loads(line)
        event_id = record["eventMetadata"]["eventId"]
        labels = _numbers(*_decode(record["groundTruthData"]))
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise Malformed(f"ground-truth record: {type(exc).__name__}: {exc}") from None
    if not isinstance(event_id, str) or not 0 < len(event_id) <= 256:
        raise Malformed("ground-truth record: eventId must be a string of 1-256 characters")
    return event_id, labels


def outcomes(
    kind: Kind, threshold: float, outputs: Sequence[Sequence[float]], labels: Sequence[Sequence[float]]
) -> list[tuple[str, float]]:
    """(metric, value) for each labelled row: accuracy for classification, errors for regression."""
    if len(outputs) != len(labels):
        raise Malformed(f"{len(outputs)} predictions but {len(labels)} labels")
    result = []
    for out, label_row in zip(outputs, labels, strict=True):
        label = label_row[0]
        if kind == "regression":
            error = out[0] - label
            result += [("abs_error", abs(error)), ("squared_error", error * error)]
        else:
            predicted = predicted_class(out, threshold)
            result.append(("accuracy", 1.0 if predicted == round(label) else 0.0))
    return result
