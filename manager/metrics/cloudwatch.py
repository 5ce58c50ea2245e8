"""Per-variant endpoint metrics from CloudWatch (namespace AWS/SageMaker) through GetMetricData.

One call covers every variant and metric of an endpoint (following NextToken). The newest
buckets are dropped: CloudWatch data arrives minutes late, so only windows that end `lag`
before now are complete. ModelLatency and OverheadLatency arrive in microseconds and leave in
milliseconds. Error metrics come back as counts (errors out of invocations), latency as one
observation per minute (that minute's mean) plus the minute's percentiles.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from manager.metrics.base import MetricsUnavailable, VariantWindow

NAMESPACE = "AWS/SageMaker"
COUNTS = {
    "Invocations": "invocations",
    "Invocation4XXErrors": "errors_4xx",
    "Invocation5XXErrors": "errors_5xx",
}
LATENCIES = {"ModelLatency": "model_latency_ms", "OverheadLatency": "overhead_latency_ms"}
LATENCY_METRIC = {measure: metric for metric, measure in LATENCIES.items()}  # measure -> CloudWatch's name
MICROSECONDS_PER_MS = 1000.0
MAX_QUERIES = 500


def align(instant: datetime, period: int) -> datetime:
    seconds = int(instant.timestamp()) // period * period
    return datetime.fromtimestamp(seconds, UTC)


@dataclass(frozen=True)
class _Query:
    id: str
    variant: str
    metric: str
    stat: str


class CloudWatchSource:
    def __init__(
        self,
        client: Any,
        lag: timedelta = timedelta(minutes=3),
        period: int = 60,
        percentiles: Sequence[str] = ("p50", "p90", "p99"),
    ) -> None:
        self.client = client
        self.lag = lag
        self.period = period
        self.percentiles = tuple(percentiles)

    def _queries(self, variants: Sequence[str]) -> list[_Query]:
        queries = []
        for v_index, variant in enumerate(variants):
            for metric in COUNTS:
                queries.append(_Query(f"v{v_index}_{metric.lower()}", variant, metric, "Sum"))
            for metric in LATENCIES:
                for stat in ("Average", "SampleCount", *self.percentiles):
                    queries.append(
                        _Query(
                            f"v{v_index}_{metric.lower()}_{stat.lower().replace('.', '_')}",
                            variant,
                            metric,
                            stat,
                        )
                    )
        if len(queries) > MAX_QUERIES:
            raise ValueError(f"{len(variants)} variants need {len(queries)} queries; GetMetricData takes 500")
        return queries

    def _stat(
        self, query_id: str, namespace: str, metric: str, dims: dict[str, str], stat: str
    ) -> dict[str, Any]:
        return {
            "Id": query_id,
            "MetricStat": {
                "Metric": {
                    "Namespace": namespace,
                    "MetricName": metric,
                    "Dimensions": [{"Name": k, "Value": v} for k, v in dims.items()],
                },
                "Period": self.period,
                "Stat": stat,
            },
            "ReturnData": True,
        }

    def _fetch(
        self, endpoint: str, queries: list[_Query], start: datetime, end: datetime
    ) -> dict[str, dict[datetime, float]]:
        dims = {q.id: {"EndpointName": endpoint, "VariantName": q.variant} for q in queries}
        stats = [self._stat(q.id, NAMESPACE, q.metric, dims[q.id], q.stat) for q in queries]
        return self._get(endpoint, stats, start, end)

    @staticmethod
    def _bounded(stats: list[dict[str, Any]], what: str) -> list[dict[str, Any]]:
        """The queries, if one GetMetricData call takes them all (500 at most)."""
        if len(stats) > MAX_QUERIES:
            raise ValueError(f"{len(stats)} {what} queries; GetMetricData takes {MAX_QUERIES}")
        return stats

    def _get(
        self, endpoint: str, stats: list[dict[str, Any]], start: datetime, end: datetime
    ) -> dict[str, dict[datetime, float]]:
        request = {
            "MetricDataQueries": stats,
            "StartTime": start,
            "EndTime": end,
            "ScanBy": "TimestampAscending",
        }
        series: dict[str, dict[datetime, float]] = defaultdict(dict)
        token = None
        while True:
            try:
                page = self.client.get_metric_data(**request, **({"NextToken": token} if token else {}))
            except (ClientError, BotoCoreError) as exc:
                raise MetricsUnavailable(f"GetMetricData for {endpoint} failed: {exc}") from None
            for result in page.get("MetricDataResults", []):
                if result.get("StatusCode") in ("InternalError", "Forbidden"):
                    messages = "; ".join(m.get("Value", "") for m in result.get("Messages", []))
                    raise MetricsUnavailable(
                        f"GetMetricData {result['Id']}: {result['StatusCode']} {messages}"
                    )
                # PartialData means more pages follow (NextToken); the pages are merged here.
                for stamp, value in zip(result.get("Timestamps", []), result.get("Values", []), strict=True):
                    series[result["Id"]][stamp.astimezone(UTC)] = float(value)
            token = page.get("NextToken")
            if not token:
                return series

    def windows(
        self, endpoint: str, variants: Sequence[str], since: datetime, now: datetime
    ) -> list[VariantWindow]:
        start, end = align(since, self.period), align(now - self.lag, self.period)
        if end <= start or not variants:
            return []
        queries = self._queries(variants)
        series = self._fetch(endpoint, queries, start, end)
        by_key = {(q.variant, q.metric, q.stat): series.get(q.id, {}) for q in queries}
        step = timedelta(seconds=self.period)
        out: list[VariantWindow] = []
        for variant in variants:
            invocations = by_key[(variant, "Invocations", "Sum")]
            for stamp, count in sorted(invocations.items()):
                n = round(count)
                for metric in ("Invocation4XXErrors", "Invocation5XXErrors"):
                    errors = by_key[(variant, metric, "Sum")].get(stamp, 0.0)
                    out.append(VariantWindow(variant, COUNTS[metric], stamp, stamp + step, n, errors, errors))
                out.append(VariantWindow(variant, "invocations", stamp, stamp + step, n, float(n), float(n)))
            for metric, name in LATENCIES.items():
                averages = by_key[(variant, metric, "Average")]
                for stamp, average_us in sorted(averages.items()):
                    if not by_key[(variant, metric, "SampleCount")].get(stamp):
                        continue
                    mean_ms = average_us / MICROSECONDS_PER_MS
                    quantiles = {
                        p: by_key[(variant, metric, p)][stamp] / MICROSECONDS_PER_MS
                        for p in self.percentiles
                        if stamp in by_key[(variant, metric, p)]
                    }
                    out.append(
                        VariantWindow(
                            variant, name, stamp, stamp + step, 1, mean_ms, mean_ms * mean_ms, quantiles
                        )
                    )
        return sorted(out, key=lambda w: (w.start, w.variant, w.metric))

    def custom_windows(
        self, endpoint: str, variants: Sequence[str], metrics: Sequence[Any], since: datetime, now: datetime
    ) -> list[VariantWindow]:
        """Each metric with a `query` (a policy's own CloudWatch metric), per variant and window: a mean
        is one observation per window (its value, as the model latency's minute means are); errors are
        the value counted out of the variant's invocations in the window."""
        start, end = align(since, self.period), align(now - self.lag, self.period)
        if end <= start or not variants or not metrics:
            return []
        stats, wanted = [], []
        for v_index, variant in enumerate(variants):
            for m_index, metric in enumerate(metrics):
                query = metric.query
                query_id = f"c{m_index}_v{v_index}"
                stats.append(
                    self._stat(
                        query_id, query.namespace, query.metric, query.resolved(endpoint, variant), query.stat
                    )
                )
                wanted.append((query_id, variant, metric))
            if any(m.kind == "errors" for m in metrics):
                dims = {"EndpointName": endpoint, "VariantName": variant}
                stats.append(self._stat(f"i_v{v_index}", NAMESPACE, "Invocations", dims, "Sum"))
        series = self._get(endpoint, self._bounded(stats, "custom"), start, end)
        step = timedelta(seconds=self.period)
        out: list[VariantWindow] = []
        for query_id, variant, metric in wanted:
            invocations = series.get(f"i_v{variants.index(variant)}", {})
            for stamp, value in sorted(series.get(query_id, {}).items()):
                if metric.kind == "errors":
                    n = round(invocations.get(stamp, 0.0))
                    if n > 0:
                        out.append(
                            VariantWindow(variant, metric.measure, stamp, stamp + step, n, value, value)
                        )
                else:
                    out.append(
                        VariantWindow(variant, metric.measure, stamp, stamp + step, 1, value, value * value)
                    )
        return sorted(out, key=lambda w: (w.start, w.variant, w.metric))

    def quantile_windows(
        self,
        endpoint: str,
        variants: Sequence[str],
        thresholds: Sequence[tuple[Any, float]],
        since: datetime,
        now: datetime,
    ) -> list[VariantWindow]:
        """For each (quantile metric, threshold in ms): per variant and window, the requests and how
        many took longer than the threshold, from CloudWatch's SampleCount and percentile rank
        `PR(:threshold)` (the percentage of values at most the threshold) of the metric's latency."""
        start, end = align(since, self.period), align(now - self.lag, self.period)
        if end <= start or not variants or not thresholds:
            return []
        stats, wanted = [], []
        for v_index, variant in enumerate(variants):
            dims = {"EndpointName": endpoint, "VariantName": variant}
            for m_index, (metric, threshold_ms) in enumerate(thresholds):
                latency = LATENCY_METRIC[metric.latency]
                stat = f"PR(:{threshold_ms * MICROSECONDS_PER_MS:.3f})"
                stats.append(self._stat(f"q{m_index}_v{v_index}_r", NAMESPACE, latency, dims, stat))
                stats.append(self._stat(f"q{m_index}_v{v_index}_n", NAMESPACE, latency, dims, "SampleCount"))
                wanted.append((f"q{m_index}_v{v_index}", variant, metric))
        series = self._get(endpoint, self._bounded(stats, "quantile"), start, end)
        step = timedelta(seconds=self.period)
        out: list[VariantWindow] = []
        for query_id, variant, metric in wanted:
            counts = series.get(f"{query_id}_n", {})
            for stamp, at_most in sorted(series.get(f"{query_id}_r", {}).items()):
                n = round(counts.get(stamp, 0.0))
                if n > 0:
                    over = float(round(n * (1 - at_most / 100)))
                    out.append(VariantWindow(variant, metric.measure, stamp, stamp + step, n, over, over))
        return sorted(out, key=lambda w: (w.start, w.variant, w.metric))

    def baseline_quantile(
        self, endpoint: str, variant: str, latency: str, quantile: float, until: datetime
    ) -> float | None:
        """The variant's latency percentile (ms) over the hour before `until`, or None without data:
        the per-minute percentiles' median, each minute weighted by its requests (a percentile over
        the hour would need the hour's own bucket, which CloudWatch aligns as it will). Any threshold
        fixed before the rollout's data keeps the test valid; this one makes it about that percentile."""
        metric = LATENCY_METRIC[latency]
        start, end = align(until - timedelta(hours=1), self.period), align(until, self.period)
        dims = {"EndpointName": endpoint, "VariantName": variant}
        stats = [
            self._stat("p", NAMESPACE, metric, dims, f"p{quantile:g}"),
            self._stat("n", NAMESPACE, metric, dims, "SampleCount"),
        ]
        series = self._get(endpoint, stats, start, end) if end > start else {}
        minutes = sorted(
            (value, series.get("n", {}).get(stamp, 0.0)) for stamp, value in series.get("p", {}).items()
        )
        total = sum(n for _, n in minutes)
        if total <= 0:
            return None
        seen = 0.0
        for value, n in minutes:
            seen += n
            if seen >= total / 2:
                return value / MICROSECONDS_PER_MS
        return minutes[-1][0] / MICROSECONDS_PER_MS
