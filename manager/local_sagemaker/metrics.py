"""Per-variant endpoint metrics in the AWS/SageMaker namespace, and CloudWatch's GetMetricData.

Each invocation records, as AWS does: Invocations (1), Invocation4XXErrors and
Invocation5XXErrors (1 for such a response, else 0), and ModelLatency and
OverheadLatency in microseconds. Values are kept in buckets (60 s by default)
with count, sum, min, max and a bounded sample for percentiles.
"""

from __future__ import annotations

import base64
import json
import random
import re
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np

from manager.local_sagemaker.protocol import AwsError, as_datetime

NAMESPACE = "AWS/SageMaker"
UNITS = {
    "Invocations": "None",
    "Invocation4XXErrors": "None",
    "Invocation5XXErrors": "None",
    "InvocationsPerInstance": "None",
    "ModelLatency": "Microseconds",
    "OverheadLatency": "Microseconds",
}
SAMPLE_CAP = 10_000
MAX_DATAPOINTS = 100_800
_PERCENTILE = re.compile(r"^p(\d{1,2}(?:\.\d{1,10})?|100)$")
_BASIC = ("SampleCount", "Sum", "Average", "Minimum", "Maximum")
# Percentile rank: the percentage of values in (low, high], either bound left out (CloudWatch's
# "Statistics definitions": the lower bound is not inclusive, the upper one is).
_RANK = re.compile(r"^PR\((\d+(?:\.\d{1,10})?)?:(\d+(?:\.\d{1,10})?)?\)$")

Key = tuple[str, str, str]  # endpoint, variant, metric


def invalid(message: str) -> AwsError:
    """GetMetricStatistics' and PutMetricData's bad-value error."""
    return AwsError("InvalidParameterValue", message)


def rejected(message: str) -> AwsError:
    """GetMetricData's: AWS answers its bad requests with the generic ValidationError."""
    return AwsError("ValidationError", message)


@dataclass
class Bucket:
    count: int = 0
    total: float = 0.0
    low: float = float("inf")
    high: float = float("-inf")
    sample: list[float] = field(default_factory=list)

    def add(self, value: float, rng: random.Random) -> None:
        self.count += 1
        self.total += value
        self.low = min(self.low, value)
        self.high = max(self.high, value)
        if len(self.sample) < SAMPLE_CAP:
            self.sample.append(value)
        else:  # reservoir sampling keeps percentiles unbiased past the cap
            slot = rng.randrange(self.count)
            if slot < SAMPLE_CAP:
                self.sample[slot] = value

    def add_many(self, value: float, times: int, rng: random.Random) -> None:
        """`value` seen `times` times (PutMetricData's Counts): count, sum, minimum and maximum are
        exact; the sample takes at most SAMPLE_CAP copies, so a huge count costs no more than that."""
        for _ in range(min(times, SAMPLE_CAP)):
            self.add(value, rng)
        rest = times - min(times, SAMPLE_CAP)
        self.count += rest
        self.total += value * rest

    def merge(self, other: Bucket) -> None:
        self.count += other.count
        self.total += other.total
        self.low = min(self.low, other.low)
        self.high = max(self.high, other.high)
        self.sample.extend(other.sample)

    def stat(self, name: str) -> float:
        if name == "SampleCount":
            return float(self.count)
        if name == "Sum":
            return self.total
        if name == "Average":
            return self.total / self.count
        if name == "Minimum":
            return self.low
        if name == "Maximum":
            return self.high
        rank = _RANK.match(name)
        if rank:
            low, high = (float(b) if b else None for b in rank.groups())
            values = np.asarray(self.sample)
            inside = np.ones(values.size, dtype=bool)
            if low is not None:
                inside &= values > low
            if high is not None:
                inside &= values <= high
            return 100.0 * float(inside.mean()) if values.size else 0.0
        return float(np.percentile(self.sample, float(name[1:])))


class MetricStore:
    def __init__(
        self,
        bucket_seconds: int = 60,
        retention_seconds: int = 3 * 3600,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.bucket_seconds = bucket_seconds
        self.retention_seconds = retention_seconds
        self.clock = clock
        self._series: dict[Key, dict[int, Bucket]] = defaultdict(dict)
        self._lock = threading.Lock()
        self._rng = random.Random()
        self.units: dict[Key, str] = {}

    def record_invocation(
        self, endpoint: str, variant: str, status: int, model_us: float | None, overhead_us: float
    ) -> None:
        now = self.clock()
        with self._lock:
            self._add(endpoint, variant, "Invocations", 1.0, now)
            self._add(endpoint, variant, "Invocation4XXErrors", float(400 <= status < 500), now)
            self._add(endpoint, variant, "Invocation5XXErrors", float(status >= 500), now)
            if model_us is not None:
                self._add(endpoint, variant, "ModelLatency", model_us, now)
            self._add(endpoint, variant, "OverheadLatency", overhead_us, now)

    def _add(self, endpoint: str, variant: str, metric: str, value: float, now: float) -> None:
        self._bucket((endpoint, variant, metric), now).add(value, self._rng)

    def _bucket(self, key: Key, now: float) -> Bucket:
        start = int(now // self.bucket_seconds * self.bucket_seconds)
        series = self._series[key]
        bucket = series.get(start)
        if bucket is None:
            bucket = series[start] = Bucket()
            self._expire(series, now)
        return bucket

    def _expire(self, series: dict[int, Bucket], now: float) -> None:
        horizon = now - self.retention_seconds
        for start in [s for s in series if s < horizon]:
            del series[start]

    def record(
        self, key: Key, values: list[float], counts: list[float], at: float | None, unit: str | None
    ) -> None:
        """PutMetricData's values (each `count` times), at their timestamp or now."""
        now = at if at is not None else self.clock()
        with self._lock:
            if unit:
                self.units[key] = unit
            for value, count in zip(values, counts, strict=True):
                self._bucket(key, now).add_many(value, int(count), self._rng)

    def record_statistics(self, key: Key, stats: dict[str, Any], at: float | None, unit: str | None) -> None:
        now = at if at is not None else self.clock()
        part = Bucket(
            int(stats["SampleCount"]), float(stats["Sum"]), float(stats["Minimum"]), float(stats["Maximum"])
        )
        with self._lock:
            if unit:
                self.units[key] = unit
            self._bucket(key, now).merge(part)

    def periods(self, key: Key, start: datetime, end: datetime, period: int) -> list[tuple[int, Bucket]]:
        """(period start, merged bucket) for each period in [start, end) that has data, oldest first."""
        lo, hi = start.timestamp(), end.timestamp()
        periods: dict[int, Bucket] = {}
        with self._lock:
            for bucket_start, bucket in self._series.get(key, {}).items():
                if lo <= bucket_start < hi and bucket.count:
                    slot = bucket_start // period * period
                    periods.setdefault(slot, Bucket()).merge(bucket)
        return [(slot, periods[slot]) for slot in sorted(periods)]

    def datapoints(
        self, key: Key, start: datetime, end: datetime, period: int, stat: str
    ) -> list[tuple[int, float]]:
        """(period start, value) for each period in [start, end) that has data, oldest first."""
        return [(slot, bucket.stat(stat)) for slot, bucket in self.periods(key, start, end, period)]


def check_stat(stat: str) -> str:
    rank = _RANK.match(stat)
    if stat in _BASIC or _PERCENTILE.match(stat) or (rank and any(rank.groups())):
        return stat
    raise rejected(
        f"The value {stat} for parameter Stat is not supported by the local SageMaker; "
        f"use {', '.join(_BASIC)}, pNN or PR(low:high)"
    )


def get_metric_data(store: MetricStore, request: dict[str, Any]) -> dict[str, Any]:
    """GetMetricData for MetricStat queries on AWS/SageMaker (no metric math)."""
    queries = request.get("MetricDataQueries") or []
    if not 1 <= len(queries) <= 500:
        raise rejected("The collection MetricDataQueries must hold between 1 and 500 items.")
    ids = [q.get("Id") for q in queries]
    if len(set(map(str, ids))) < len(ids):
        raise rejected("The values for parameter id in MetricDataQueries are not unique.")
    start = as_datetime(request.get("StartTime"), "StartTime")
    end = as_datetime(request.get("EndTime"), "EndTime")
    # AWS's wording, as moto copies it. AWS compares whole seconds: two times in one second are equal.
    if int(start.timestamp()) == int(end.timestamp()):
        raise rejected("The parameter StartTime must not equal parameter EndTime.")
    if start > end:
        raise rejected("The parameter EndTime must be greater than StartTime.")
    newest_first = request.get("ScanBy", "TimestampDescending") == "TimestampDescending"
    limit = int(request.get("MaxDatapoints") or MAX_DATAPOINTS)
    offset = _decode_token(request.get("NextToken"))

    series = [_run_query(store, q, start, end, newest_first) for q in queries]
    results, budget, position, cut = [], limit, 0, False
    for query, (label, points) in zip(queries, series, strict=True):
        if query.get("ReturnData") is False:
            continue
        skip = max(0, min(len(points), offset - position))
        position += len(points)
        remaining = points[skip:]
        taken = remaining[:budget]
        budget -= len(taken)
        partial = len(taken) < len(remaining)
        cut = cut or partial
        results.append(
            {
                "Id": query["Id"],
                "Label": query.get("Label") or label,
                "Timestamps": [datetime.fromtimestamp(ts, UTC) for ts, _ in taken],
                "Values": [value for _, value in taken],
                "StatusCode": "PartialData" if partial else "Complete",
            }
        )
    response: dict[str, Any] = {"MetricDataResults": results, "Messages": []}
    if cut:
        response["NextToken"] = _encode_token(offset + limit)
    return response


def _run_query(
    store: MetricStore, query: dict[str, Any], start: datetime, end: datetime, newest_first: bool
) -> tuple[str, list[tuple[int, float]]]:
    query_id = query.get("Id")
    if not isinstance(query_id, str) or not re.match(r"^[a-z][a-zA-Z0-9_]*$", query_id):
        raise rejected(
            f"Invalid metric data query id {query_id}: it must start with a lowercase letter and hold "
            "only letters, digits and underscores."
        )
    if "Expression" in query:
        raise rejected("Metric math expressions are not supported by the local SageMaker.")
    stat_spec = query.get("MetricStat")
    if not stat_spec:
        raise rejected(f"The metric data query {query_id} must have either a MetricStat or an Expression.")
    metric = stat_spec.get("Metric") or {}
    stat = check_stat(str(stat_spec.get("Stat", "")))
    period = int(stat_spec.get("Period") or 0)
    if period not in (1, 5, 10, 20, 30) and (period <= 0 or period % 60):
        raise rejected(
            f"The Period of metric data query {query_id} must be 1, 5, 10, 20, 30 or a multiple of 60."
        )
    name = metric.get("MetricName", "")
    dims = {d["Name"]: d["Value"] for d in metric.get("Dimensions", [])}
    label = name
    wanted_unit = stat_spec.get("Unit")
    key = series_key(metric.get("Namespace"), name, dims)
    if wanted_unit and wanted_unit != (store.units.get(key) or UNITS.get(name)):
        return label, []
    points = store.datapoints(key, start, end, period, stat)
    return label, points[::-1] if newest_first else points


def series_key(namespace: Any, name: str, dims: dict[str, str]) -> Key:
    """Endpoint metrics are keyed (endpoint, variant, metric); any other series, as PutMetricData
    wrote it, by its namespace and exact dimensions."""
    if namespace == NAMESPACE and set(dims) == {"EndpointName", "VariantName"}:
        return dims["EndpointName"], dims["VariantName"], name
    return f"ns:{namespace}", json.dumps(sorted(dims.items())), name


MAX_STATISTICS_POINTS = 1440


def get_metric_statistics(store: MetricStore, request: dict[str, Any]) -> dict[str, Any]:
    """GetMetricStatistics: one metric, one set of dimensions, the statistics asked for."""
    name = str(request.get("MetricName") or "")
    namespace = request.get("Namespace")
    if not name or not namespace:
        raise AwsError("MissingParameter", "The parameters Namespace and MetricName are required.")
    start = as_datetime(request.get("StartTime"), "StartTime")
    end = as_datetime(request.get("EndTime"), "EndTime")
    if start >= end:
        raise invalid("The parameter StartTime must be less than the parameter EndTime.")
    period = request.get("Period")
    if not isinstance(period, int) or (period not in (1, 5, 10, 30) and (period <= 0 or period % 60)):
        raise invalid("The parameter Period must be 1, 5, 10, 30 or a multiple of 60.")
    basic = list(request.get("Statistics") or [])
    extended = list(request.get("ExtendedStatistics") or [])
    if not basic and not extended:
        raise AwsError(
            "MissingParameter", "Must specify either Statistics or ExtendedStatistics, but not both."
        )
    for stat in basic:
        if stat not in _BASIC:
            raise invalid(f"The parameter Statistics.member.1 must be one of {', '.join(_BASIC)}.")
    for stat in extended:
        if not _PERCENTILE.match(stat):
            raise invalid(f"The value {stat} for parameter ExtendedStatistics is not supported.")
    points = (end.timestamp() - start.timestamp()) / period
    if points > MAX_STATISTICS_POINTS:
        raise AwsError(
            "InvalidParameterCombination",
            f"You have requested up to {int(points)} datapoints, which exceeds the limit of 1440. You "
            "may reduce the datapoints requested by increasing Period, or decreasing the time range.",
        )
    dims = {d["Name"]: d["Value"] for d in request.get("Dimensions") or []}
    key = series_key(namespace, name, dims)
    unit = store.units.get(key) or UNITS.get(name, "None")
    if request.get("Unit") and request["Unit"] != unit:
        return {"Label": name, "Datapoints": []}
    buckets = store.periods(key, start, end, period)
    datapoints = []
    for slot, bucket in buckets:
        point: dict[str, Any] = {"Timestamp": datetime.fromtimestamp(slot, UTC), "Unit": unit}
        for stat in basic:
            point[stat] = bucket.stat(stat)
        if extended:
            point["ExtendedStatistics"] = {stat: bucket.stat(stat) for stat in extended}
        datapoints.append(point)
    return {"Label": name, "Datapoints": datapoints}


def put_metric_data(store: MetricStore, request: dict[str, Any]) -> dict[str, Any]:
    """PutMetricData into a namespace of your own (AWS's namespaces are refused, as on AWS)."""
    namespace = str(request.get("Namespace") or "")
    if not namespace or namespace.startswith("AWS/"):
        raise invalid(f"The value {namespace or 'null'} for parameter Namespace is invalid.")
    data = request.get("MetricData") or []
    if not 1 <= len(data) <= 1000:
        raise invalid("The collection MetricData must hold between 1 and 1000 items.")
    for i, datum in enumerate(data, 1):
        name = datum.get("MetricName")
        if not name:
            raise AwsError("MissingParameter", f"The parameter MetricData.member.{i}.MetricName is required.")
        dims = {d["Name"]: d["Value"] for d in datum.get("Dimensions") or []}
        at = as_datetime(datum["Timestamp"], "Timestamp").timestamp() if datum.get("Timestamp") else None
        key = series_key(namespace, name, dims)
        if "Value" in datum:
            values, counts = [float(datum["Value"])], [1.0]
        elif "Values" in datum:
            values = [float(v) for v in datum["Values"]]
            counts = [float(c) for c in datum.get("Counts") or [1.0] * len(values)]
            if len(counts) != len(values):
                raise invalid(f"MetricData.member.{i}: Values and Counts must be the same length.")
        elif "StatisticValues" in datum:
            store.record_statistics(key, datum["StatisticValues"], at, datum.get("Unit"))
            continue
        else:
            raise invalid(f"MetricData.member.{i} needs Value, Values or StatisticValues.")
        if not all(np.isfinite(values)):
            raise invalid(f"The value for parameter MetricData.member.{i}.Value is not a finite number.")
        store.record(key, values, counts, at, datum.get("Unit"))
    return {}


def _encode_token(offset: int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"offset": offset}).encode()).decode()


def _decode_token(token: str | None) -> int:
    if not token:
        return 0
    try:
        return int(json.loads(base64.urlsafe_b64decode(token.encode()))["offset"])
    except (ValueError, KeyError, TypeError):
        raise AwsError("InvalidNextToken", "The service couldn't process the NextToken provided.") from None


@dataclass
class Alarm:
    name: str
    state: str = "INSUFFICIENT_DATA"
    reason: str = "created"
    definition: dict[str, Any] = field(default_factory=dict)
    updated: float = 0.0  # set by the book, on the host's clock


class AlarmBook:
    """Alarms exist to be named by blue/green deployments; their state is set, never evaluated."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self.alarms: dict[str, Alarm] = {}

    def put(self, request: dict[str, Any]) -> dict[str, Any]:
        name = request.get("AlarmName")
        if not name:
            raise invalid("AlarmName is required")
        self.alarms[name] = Alarm(name, definition=request, updated=self.clock())
        return {}

    def set_state(self, request: dict[str, Any]) -> dict[str, Any]:
        name = request.get("AlarmName", "")
        state = request.get("StateValue")
        if name not in self.alarms:
            raise AwsError("ResourceNotFound", f"Alarm {name} not found", status=404)
        if state not in ("OK", "ALARM", "INSUFFICIENT_DATA"):
            raise invalid("StateValue must be OK, ALARM or INSUFFICIENT_DATA")
        alarm = self.alarms[name]
        alarm.state, alarm.reason, alarm.updated = state, request.get("StateReason", ""), self.clock()
        return {}

    def describe(self, request: dict[str, Any]) -> dict[str, Any]:
        names = request.get("AlarmNames")
        chosen = [a for a in self.alarms.values() if not names or a.name in names]
        return {
            "MetricAlarms": [
                {
                    "AlarmName": a.name,
                    "StateValue": a.state,
                    "StateReason": a.reason,
                    "StateUpdatedTimestamp": datetime.fromtimestamp(a.updated, UTC),
                    **{
                        k: v
                        for k, v in a.definition.items()
                        if k
                        in (
                            "MetricName",
                            "Namespace",
                            "Statistic",
                            "Period",
                            "Threshold",
                            "ComparisonOperator",
                        )
                    },
                }
                for a in chosen
            ],
            "CompositeAlarms": [],
        }

    def delete(self, request: dict[str, Any]) -> dict[str, Any]:
        for name in request.get("AlarmNames", []):
            self.alarms.pop(name, None)
        return {}

    def firing(self, names: list[str]) -> list[str]:
        return [n for n in names if n in self.alarms and self.alarms[n].state == "ALARM"]
