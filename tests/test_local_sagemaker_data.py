"""What the local SageMaker records: Model Monitor capture files and CloudWatch metrics,
read back through unmodified boto3 clients in both of CloudWatch's wire protocols."""

from __future__ import annotations

import copy
import gzip
import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import botocore.session
import joblib
import pytest
from sklearn.datasets import load_diabetes

from manager.local_sagemaker import LocalSageMaker

from .local_sagemaker_support import (
    binomial_bounds,
    create_model,
    first_row,
    until,
    variant,
    wait_status,
)

CAPTURE_PATH = re.compile(r"capture/ep/A/\d{4}/\d{2}/\d{2}/\d{2}/\d{2}-\d{2}-\d{3}-[0-9a-f-]{36}\.jsonl$")


@pytest.fixture
def host(tmp_path: Path) -> Iterator[LocalSageMaker]:
    """Overrides the shared host: 1-second metric buckets, which the tests below read."""
    with LocalSageMaker(tmp_path / "state", provision_delay=0.05, metric_bucket_seconds=1) as running:
        yield running


def _endpoint(host: LocalSageMaker, artifact: Path, **config: Any) -> tuple[Any, Any]:
    sm, rt = host.client("sagemaker"), host.client("sagemaker-runtime")
    create_model(sm, "m", artifact)
    sm.create_endpoint_config(EndpointConfigName="c", ProductionVariants=[variant("A", "m")], **config)
    sm.create_endpoint(EndpointName="ep", EndpointConfigName="c")
    wait_status(sm, "ep")
    return sm, rt


def _capture_records(
    root: Path, expected: int, timeout: float = 10
) -> tuple[list[Path], list[dict[str, Any]]]:
    deadline = time.monotonic() + timeout
    while True:
        files = sorted(root.rglob("*.jsonl"))
        records = [json.loads(line) for f in files for line in f.read_text().splitlines()]
        if len(records) >= expected or time.monotonic() > deadline:
            return files, records
        time.sleep(0.05)


def test_capture_files_are_model_monitor_records_sampled_as_configured(
    host: LocalSageMaker, artifacts: dict[str, Path]
) -> None:
    capture = {
        "EnableCapture": True,
        "InitialSamplingPercentage": 30,
        "DestinationS3Uri": "s3://monitoring/capture",
        "CaptureOptions": [{"CaptureMode": "Input"}, {"CaptureMode": "Output"}],
    }
    sm, rt = _endpoint(host, artifacts["logistic"], DataCaptureConfig=capture)
    assert sm.describe_endpoint(EndpointName="ep")["DataCaptureConfig"]["CurrentSamplingPercentage"] == 30
    row, n = first_row(), 2000
    for i in range(n):
        rt.invoke_endpoint(EndpointName="ep", ContentType="text/csv", Body=row, InferenceId=f"req-{i}")
    until(lambda: host.host.in_flight == 0, "the captures, written after each answer is sent")
    files, records = _capture_records(host.s3_root / "monitoring", 0)

    low, high = binomial_bounds(n, 0.30)
    assert low <= len(records) / n <= high
    assert all(CAPTURE_PATH.search(f.as_posix()) for f in files)
    ids = [r["eventMetadata"]["inferenceId"] for r in records]
    assert len(set(ids)) == len(ids) and all(i.startswith("req-") for i in ids)
    record = records[0]
    assert set(record) == {"captureData", "eventMetadata", "eventVersion"}
    assert record["captureData"]["endpointInput"] == {
        "observedContentType": "text/csv",
        "mode": "INPUT",
        "data": row,
        "encoding": "CSV",
    }
    output = record["captureData"]["endpointOutput"]
    assert (output["mode"], output["encoding"]) == ("OUTPUT", "CSV")
    assert 0 <= float(output["data"]) <= 1
    assert set(record["eventMetadata"]) == {"eventId", "inferenceId", "inferenceTime"}
    datetime.strptime(record["eventMetadata"]["inferenceTime"], "%Y-%m-%dT%H:%M:%S.%fZ")


def test_json_payloads_are_captured_as_json(host: LocalSageMaker, artifacts: dict[str, Path]) -> None:
    capture = {
        "InitialSamplingPercentage": 100,
        "DestinationS3Uri": "s3://monitoring/capture",
        "CaptureOptions": [{"CaptureMode": "InputAndOutput"}],
    }
    _, rt = _endpoint(host, artifacts["logistic"], DataCaptureConfig=capture)
    body = json.dumps({"instances": [[float(v) for v in first_row().split(",")]]})
    rt.invoke_endpoint(EndpointName="ep", ContentType="application/json", Body=body)
    _, records = _capture_records(host.s3_root / "monitoring", 1)
    data = records[0]["captureData"]
    assert data["endpointInput"]["encoding"] == "JSON" and json.loads(data["endpointInput"]["data"])
    assert data["endpointOutput"]["encoding"] == "JSON"
    assert "inferenceId" not in records[0]["eventMetadata"]


def test_regression_returns_the_value(host: LocalSageMaker, artifacts: dict[str, Path]) -> None:
    _, rt = _endpoint(host, artifacts["ridge"])
    x, _ = load_diabetes(return_X_y=True)
    body = "\n".join(",".join(repr(float(v)) for v in row) for row in x[:3])
    answer = rt.invoke_endpoint(EndpointName="ep", ContentType="text/csv", Body=body)["Body"].read().decode()
    expected = joblib.load(artifacts["ridge"]).predict(x[:3])
    assert [float(v) for v in answer.split()] == pytest.approx(list(expected))


def _query(metric: str, stat: str, period: int = 60, query_id: str = "q") -> dict[str, Any]:
    return {
        "Id": query_id,
        "MetricStat": {
            "Metric": {
                "Namespace": "AWS/SageMaker",
                "MetricName": metric,
                "Dimensions": [
                    {"Name": "EndpointName", "Value": "ep"},
                    {"Name": "VariantName", "Value": "A"},
                ],
            },
            "Period": period,
            "Stat": stat,
        },
    }


def _window() -> dict[str, datetime]:
    now = datetime.now(UTC)
    return {"StartTime": now - timedelta(minutes=10), "EndTime": now + timedelta(minutes=1)}


def test_latency_statistics_in_microseconds(host: LocalSageMaker, artifacts: dict[str, Path]) -> None:
    _, rt = _endpoint(host, artifacts["logistic"])
    for _ in range(50):
        rt.invoke_endpoint(EndpointName="ep", ContentType="text/csv", Body=first_row())
    cw = host.client("cloudwatch")
    queries = [
        _query("ModelLatency", stat, query_id=stat.lower().replace(".", "_"))
        for stat in ("SampleCount", "Average", "Minimum", "Maximum", "p50", "p99", "p99.9")
    ]
    results = {
        r["Id"]: sum(r["Values"])
        for r in cw.get_metric_data(MetricDataQueries=queries, **_window())["MetricDataResults"]
    }
    assert results["samplecount"] == 50
    # a scikit-learn predict takes tens of microseconds to milliseconds: the unit is µs, not ms or s
    assert (
        10 < results["minimum"] <= results["p50"] <= results["p99"] <= results["p99_9"] <= results["maximum"]
    )
    assert results["maximum"] < 1_000_000
    assert results["minimum"] <= results["average"] <= results["maximum"]


def test_one_second_buckets_and_pagination(host: LocalSageMaker, artifacts: dict[str, Path]) -> None:
    _, rt = _endpoint(host, artifacts["logistic"])
    host.clock.hold()
    rt.invoke_endpoint(EndpointName="ep", ContentType="text/csv", Body=first_row())
    host.clock.advance(1)  # the next 1-second bucket
    rt.invoke_endpoint(EndpointName="ep", ContentType="text/csv", Body=first_row())
    cw = host.client("cloudwatch")
    queries = [_query("Invocations", "Sum", period=1, query_id="a"), _query("Invocations", "Sum", 1, "b")]
    first = cw.get_metric_data(MetricDataQueries=queries, MaxDatapoints=3, **_window())
    a, b = first["MetricDataResults"]
    assert (a["Values"], a["StatusCode"]) == ([1.0, 1.0], "Complete")
    assert a["Timestamps"][0] > a["Timestamps"][1]  # newest first by default
    assert (len(b["Values"]), b["StatusCode"]) == (1, "PartialData")
    second = cw.get_metric_data(
        MetricDataQueries=queries, MaxDatapoints=3, NextToken=first["NextToken"], **_window()
    )
    assert [r["Values"] for r in second["MetricDataResults"]] == [[], [1.0]]
    assert "NextToken" not in second
    ascending = cw.get_metric_data(MetricDataQueries=queries[:1], ScanBy="TimestampAscending", **_window())
    stamps = ascending["MetricDataResults"][0]["Timestamps"]
    assert stamps == sorted(stamps)


def test_metric_query_errors(host: LocalSageMaker, artifacts: dict[str, Path]) -> None:
    _endpoint(host, artifacts["logistic"])
    cw = host.client("cloudwatch")
    from botocore.exceptions import ClientError

    for queries, fragment in (
        ([_query("Invocations", "tm99")], "not supported"),
        ([{"Id": "e", "Expression": "SUM(METRICS())"}], "expressions are not supported"),
        ([_query("Invocations", "Sum", period=7)], "Period"),
    ):
        with pytest.raises(ClientError) as info:
            cw.get_metric_data(MetricDataQueries=queries, **_window())
        assert fragment in str(info.value)


def test_botocore_sends_cloudwatch_in_a_protocol_the_host_speaks(host: LocalSageMaker) -> None:
    protocol = host.client("cloudwatch").meta.service_model.protocol
    assert protocol in ("smithy-rpc-v2-cbor", "json"), (
        f"botocore now sends CloudWatch as {protocol!r}; the local SageMaker speaks only Smithy RPC v2 "
        "CBOR and AWS JSON 1.0 (manager/local_sagemaker/app.py): teach it the new protocol"
    )


@pytest.fixture
def json10_cloudwatch(tmp_path: Path) -> Iterator[botocore.session.Session]:
    """A botocore session whose CloudWatch model says AWS JSON 1.0, as botocore before 1.42 sent it."""
    session = botocore.session.get_session()
    loader = session.get_component("data_loader")
    model = copy.deepcopy(loader.load_service_model("cloudwatch", "service-2"))
    model["metadata"]["protocol"] = "json"
    model["metadata"]["protocols"] = ["json"]
    folder = tmp_path / "models" / "cloudwatch" / model["metadata"]["apiVersion"]
    folder.mkdir(parents=True)
    with gzip.open(folder / "service-2.json.gz", "wt") as handle:
        json.dump(model, handle)
    fresh = botocore.session.Session()
    fresh.get_component("data_loader").search_paths.insert(0, str(tmp_path / "models"))
    yield fresh


def test_cloudwatch_over_aws_json_10(
    host: LocalSageMaker, artifacts: dict[str, Path], json10_cloudwatch: botocore.session.Session
) -> None:
    _, rt = _endpoint(host, artifacts["logistic"])
    for _ in range(3):
        rt.invoke_endpoint(EndpointName="ep", ContentType="text/csv", Body=first_row())
    cw = boto3.Session(botocore_session=json10_cloudwatch).client(
        "cloudwatch",
        endpoint_url=host.url,
        region_name="us-east-1",
        aws_access_key_id="x",
        aws_secret_access_key="x",
    )
    assert cw.meta.service_model.protocol == "json"
    result = cw.get_metric_data(MetricDataQueries=[_query("Invocations", "Sum")], **_window())
    assert sum(result["MetricDataResults"][0]["Values"]) == 3
    from botocore.exceptions import ClientError

    with pytest.raises(ClientError) as info:
        cw.get_metric_data(MetricDataQueries=[_query("Invocations", "bogus")], **_window())
    assert info.value.response["Error"]["Code"] == "ValidationError"


def test_serve_command_prints_a_url_boto3_can_use(tmp_path: Path) -> None:
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "manager",
            "local-sagemaker",
            "serve",
            "--state-dir",
            str(tmp_path),
            "--port",
            "0",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert process.stdout is not None
        first = process.stdout.readline()
        url = re.search(r"listening on (http://\S+)", first)
        assert url, first
        sm = boto3.client(
            "sagemaker",
            endpoint_url=url.group(1),
            region_name="us-east-1",
            aws_access_key_id="x",
            aws_secret_access_key="x",
        )
        assert sm.list_endpoints()["Endpoints"] == []
    finally:
        process.terminate()
        assert process.wait(timeout=10) == 0
