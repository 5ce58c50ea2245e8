"""CloudWatch metric windows: from the local SageMaker's real traffic, from moto, and edge cases."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from botocore.stub import Stubber
from moto import mock_aws

from manager.local_sagemaker import LocalSageMaker
from manager.metrics.base import MetricsUnavailable, VariantWindow
from manager.metrics.cloudwatch import CloudWatchSource

from .aws_support import record_operations
from .local_sagemaker_support import create_model, first_row, until, variant, wait_status


@pytest.fixture
def second_buckets(tmp_path: Path) -> Iterator[LocalSageMaker]:
    with LocalSageMaker(tmp_path / "state", provision_delay=0.05, metric_bucket_seconds=1) as host:
        yield host


def _by(windows: list[VariantWindow], variant_name: str, metric: str) -> list[VariantWindow]:
    return [w for w in windows if w.variant == variant_name and w.metric == metric]


def test_windows_from_real_traffic(second_buckets: LocalSageMaker, artifacts: dict[str, Path]) -> None:
    host = second_buckets
    sm, rt = host.client("sagemaker"), host.client("sagemaker-runtime")
    for name in ("logistic", "prior"):
        create_model(sm, name, artifacts[name])
    sm.create_endpoint_config(
        EndpointConfigName="c", ProductionVariants=[variant("A", "logistic"), variant("B", "prior")]
    )
    sm.create_endpoint(EndpointName="ep", EndpointConfigName="c")
    wait_status(sm, "ep")
    started = datetime.now(UTC) - timedelta(seconds=2)
    for target, body, n in (("A", first_row(), 25), ("A", "not,numbers", 5), ("B", first_row(), 20)):
        for _ in range(n):
            with contextlib.suppress(ClientError):
                rt.invoke_endpoint(EndpointName="ep", ContentType="text/csv", Body=body, TargetVariant=target)
    source = CloudWatchSource(record_operations(host.client("cloudwatch")), lag=timedelta(0), period=1)

    def every_request_counted() -> list[Any] | None:
        """The windows once the newest 1-second bucket has closed and holds every request."""
        windows = source.windows("ep", ["A", "B"], started, datetime.now(UTC))
        counted = {v: sum(w.n for w in _by(windows, v, "invocations")) for v in ("A", "B")}
        return windows if counted == {"A": 30, "B": 20} else None

    windows = until(every_request_counted, "CloudWatch windows holding all 50 requests")

    assert sum(w.n for w in _by(windows, "A", "invocations")) == 30
    errors_4xx = _by(windows, "A", "errors_4xx")
    assert (sum(w.n for w in errors_4xx), sum(w.total for w in errors_4xx)) == (30, 5)
    assert sum(w.total for w in _by(windows, "A", "errors_5xx")) == 0
    assert sum(w.n for w in _by(windows, "B", "invocations")) == 20
    latency = _by(windows, "B", "model_latency_ms")
    assert latency and all(w.n == 1 for w in latency)
    for w in latency:  # microseconds became milliseconds: a predict takes 0.005-500 ms
        assert 0.005 < w.total < 500 and w.total_sq == pytest.approx(w.total**2)
        assert w.quantiles["p50"] <= w.quantiles["p99"]
    assert windows == sorted(windows, key=lambda w: (w.start, w.variant, w.metric))


def test_newest_buckets_wait_for_the_lag(second_buckets: LocalSageMaker, artifacts: dict[str, Path]) -> None:
    host = second_buckets
    sm, rt = host.client("sagemaker"), host.client("sagemaker-runtime")
    create_model(sm, "m", artifacts["logistic"])
    sm.create_endpoint_config(EndpointConfigName="c", ProductionVariants=[variant("A", "m")])
    sm.create_endpoint(EndpointName="ep", EndpointConfigName="c")
    wait_status(sm, "ep")
    since = datetime.now(UTC) - timedelta(seconds=1)
    rt.invoke_endpoint(EndpointName="ep", ContentType="text/csv", Body=first_row())
    source = CloudWatchSource(host.client("cloudwatch"), lag=timedelta(seconds=3), period=1)
    assert source.windows("ep", ["A"], since, datetime.now(UTC)) == []
    later = datetime.now(UTC) + timedelta(seconds=4)  # as the clock will read in 4 s
    assert sum(w.n for w in _by(source.windows("ep", ["A"], since, later), "A", "invocations")) == 1


def test_moto_published_metrics(monkeypatch: pytest.MonkeyPatch) -> None:
    """moto never publishes endpoint metrics itself; here they are put as SageMaker would put them.
    moto's GetMetricData crashes on percentile statistics, so this source asks for none."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    minute = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=10)
    with mock_aws():
        cw = boto3.client("cloudwatch", region_name="us-east-1")
        dims = [{"Name": "EndpointName", "Value": "ep"}, {"Name": "VariantName", "Value": "A"}]
        cw.put_metric_data(
            Namespace="AWS/SageMaker",
            MetricData=[
                {"MetricName": "Invocations", "Dimensions": dims, "Timestamp": minute, "Value": 120},
                {"MetricName": "Invocation5XXErrors", "Dimensions": dims, "Timestamp": minute, "Value": 3},
                {"MetricName": "Invocation4XXErrors", "Dimensions": dims, "Timestamp": minute, "Value": 0},
                {
                    "MetricName": "ModelLatency",
                    "Dimensions": dims,
                    "Timestamp": minute,
                    "Value": 2500,
                    "Unit": "Microseconds",
                },
            ],
        )
        source = CloudWatchSource(record_operations(cw), percentiles=())
        windows = source.windows("ep", ["A"], minute - timedelta(minutes=5), datetime.now(UTC))
    assert [(w.metric, w.n, w.total) for w in windows if w.start == minute] == [
        ("errors_4xx", 120, 0.0),
        ("errors_5xx", 120, 3.0),
        ("invocations", 120, 120.0),
        ("model_latency_ms", 1, 2.5),
    ]


def _stubbed() -> tuple[CloudWatchSource, Stubber]:
    client = boto3.client(
        "cloudwatch", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x"
    )
    return CloudWatchSource(client, lag=timedelta(0), percentiles=()), Stubber(client)


def _result(
    query_id: str, stamps: list[datetime], values: list[float], status: str = "Complete"
) -> dict[str, Any]:
    return {"Id": query_id, "Timestamps": stamps, "Values": values, "StatusCode": status}


def test_pages_are_followed_and_merged() -> None:
    source, stubber = _stubbed()
    t0 = datetime(2026, 11, 28, 10, 0, tzinfo=UTC)
    t1 = t0 + timedelta(minutes=1)
    stubber.add_response(
        "get_metric_data",
        {
            "MetricDataResults": [
                _result("v0_invocations", [t0], [10.0], "PartialData"),
                _result("v0_invocation5xxerrors", [t0], [1.0], "PartialData"),
            ],
            "NextToken": "page-2",
        },
    )
    stubber.add_response(
        "get_metric_data",
        {
            "MetricDataResults": [
                _result("v0_invocations", [t1], [20.0]),
                _result("v0_invocation5xxerrors", [t1], [0.0]),
            ]
        },
    )
    with stubber:
        windows = source.windows("ep", ["A"], t0, t0 + timedelta(minutes=5))
    errors = [(w.start, w.n, w.total) for w in windows if w.metric == "errors_5xx"]
    assert errors == [(t0, 10, 1.0), (t1, 20, 0.0)]


def test_an_error_status_is_metrics_unavailable() -> None:
    source, stubber = _stubbed()
    t0 = datetime(2026, 11, 28, 10, 0, tzinfo=UTC)
    stubber.add_response(
        "get_metric_data",
        {
            "MetricDataResults": [
                {
                    "Id": "v0_invocations",
                    "StatusCode": "Forbidden",
                    "Messages": [{"Code": "x", "Value": "denied"}],
                }
            ]
        },
    )
    with stubber, pytest.raises(MetricsUnavailable, match="Forbidden denied"):
        source.windows("ep", ["A"], t0, t0 + timedelta(minutes=5))
    stubber.add_client_error("get_metric_data", "InvalidParameterValue", "bad stat")
    with stubber, pytest.raises(MetricsUnavailable, match="bad stat"):
        source.windows("ep", ["A"], t0, t0 + timedelta(minutes=5))


def test_too_many_variants_for_one_call_is_refused() -> None:
    source, _ = _stubbed()
    source.percentiles = ("p50", "p90", "p99")
    with pytest.raises(ValueError, match="GetMetricData takes 500"):
        source.windows(
            "ep",
            [f"v{i}" for i in range(40)],
            datetime(2026, 1, 1, tzinfo=UTC),
            datetime(2026, 1, 2, tzinfo=UTC),
        )
