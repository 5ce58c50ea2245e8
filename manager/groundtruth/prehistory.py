"""The history a pre-period covariate is fitted on (`adjust: prePeriodModel`): the baseline's captured
requests from the `window` before the rollout started, joined to their ground-truth labels, each
request's input as features and the baseline's outcome on it (correct or not, or its loss) as what to
predict. Read once, when the rollout's ingestion begins; bounded to `MAX_ROWS` requests, the newest
hours first. Capture keys are partitioned by hour (`<endpoint>/<variant>/yyyy/mm/dd/hh/`), so the
listing starts at the window's first hour and stops at the start's."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import numpy as np

from manager.groundtruth.records import Malformed, outcomes, parse_capture_request, parse_label, request_body
from manager.groundtruth.stores import ObjectStore
from manager.metrics import covariate

MAX_ROWS = 50_000
READ_LIMIT = 256 * 1024 * 1024  # bytes of history read at most


def fit(
    stores: Callable[[str], tuple[ObjectStore, str]],
    spec: Any,
    baseline_variant: str,
    measure: str,
    started_at: datetime,
    window: timedelta = timedelta(days=7),
) -> tuple[covariate.Covariate | None, str]:
    """(the covariate, what was done) or (None, why not): never raises for the data's sake."""
    store, root = stores(spec.capture_uri)
    prefix = f"{root}{spec.endpoint}/{baseline_variant}/"
    requests = _requests(store, prefix, started_at - window, started_at)
    if not requests:
        return None, f"no captured requests of {baseline_variant} in the {window} before the start"
    label_store, label_root = stores(spec.ground_truth_uri)
    labels = _labels(label_store, label_root, started_at - window, set(requests))
    # (features, outcome, served at) of each labelled request with a readable input
    joined: list[tuple[list[float], float, datetime]] = []
    for inference_id, label in labels.items():
        at, row, outputs = requests[inference_id]
        try:
            scored = dict(outcomes(spec.kind, spec.threshold, outputs, label))
        except Malformed:
            continue
        if measure in scored and row is not None:
            joined.append((row, scored[measure], at))
    if joined:  # the inputs of the most common width (a model takes one)
        width = Counter(len(row) for row, _, _ in joined).most_common(1)[0][0]
        joined = [j for j in joined if len(j[0]) == width]
    features, values = np.array([j[0] for j in joined]), np.array([j[1] for j in joined])
    try:
        fitted = covariate.fit(features, values, [j[2] for j in joined], started_at, measure)
    except ValueError as exc:
        return None, f"{exc}; judged unadjusted"
    return fitted, (
        f"fitted on {fitted.rows} labelled requests of {baseline_variant} served"
        f" {fitted.first_served.isoformat()} to {fitted.last_served.isoformat()}"
    )


def features_of(request: dict[str, str] | None) -> list[float] | None:
    """One request's input as numbers: a CSV row (the one line of a single-row request), else None."""
    if request is None:
        return None
    try:
        body, content_type = request_body(request)
        lines = [line for line in body.decode().splitlines() if line.strip()]
        if len(lines) != 1 or "json" in content_type:
            return None
        row = [float(x) for x in lines[0].split(",")]
    except (ValueError, UnicodeDecodeError):
        return None
    return row if row and all(math.isfinite(x) for x in row) else None


def _requests(
    store: ObjectStore, prefix: str, since: datetime, until: datetime
) -> dict[str, tuple[datetime, list[float] | None, list[list[float]]]]:
    out: dict[str, tuple[datetime, list[float] | None, list[list[float]]]] = {}
    stop = f"{prefix}{until:%Y/%m/%d/%H}/\uffff"
    read = 0
    for info in store.list(prefix, f"{prefix}{since:%Y/%m/%d/%H}"):
        if info.key > stop or len(out) >= MAX_ROWS or read > READ_LIMIT:
            break
        read += info.size
        for line in store.read(info.key, 0, info.size).splitlines():
            try:
                inference_id, at, request, outputs = parse_capture_request(line)
            except Malformed:
                continue
            if since <= at < until:  # only what was served before the start
                out.setdefault(inference_id, (at, features_of(request), outputs))
    return out


def _labels(store: ObjectStore, root: str, since: datetime, wanted: set[str]) -> dict[str, list[list[float]]]:
    out: dict[str, list[list[float]]] = {}
    read = 0
    for info in store.list(root, f"{root}{since:%Y/%m/%d/%H}"):
        if len(out) >= len(wanted) or read > READ_LIMIT:
            break
        read += info.size
        for line in store.read(info.key, 0, info.size).splitlines():
            try:
                inference_id, rows = parse_label(line)
            except Malformed:
                continue
            if inference_id in wanted:
                out.setdefault(inference_id, rows)
    return out
