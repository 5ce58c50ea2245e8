"""The local SageMaker's S3, jobs, tags and metric calls through plain boto3: what succeeds, and each
failure in AWS's shape (error code, message, or the job's FailureReason)."""

from __future__ import annotations

import json
import os
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from botocore.exceptions import ClientError

from manager.local_sagemaker import LocalSageMaker

from .local_sagemaker_support import raw_sagemaker, shape_problems, until

xgb = pytest.importorskip("xgboost", reason="xgboost is in the test extra")

IMAGE = "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-xgboost:1.7-1"
ROLE = "arn:aws:iam::123456789012:role/SageMakerRole"
BUCKET = "jobs-bucket"
FINAL = ("Completed", "Failed", "Stopped")


def _csv(x: np.ndarray, y: np.ndarray | None = None) -> bytes:
    rows = x if y is None else np.column_stack([y, x])
    return "".join(",".join(f"{v:.6g}" for v in row) + "\n" for row in rows).encode()


@pytest.fixture
def local(tmp_path: Path) -> Any:
    with LocalSageMaker(tmp_path / "state", provision_delay=0.1, metric_bucket_seconds=1, seed=3) as host:
        s3 = host.client("s3")
        s3.create_bucket(Bucket=BUCKET)
        rng = np.random.default_rng(3)
        x = rng.normal(size=(300, 3))
        y = (x[:, 0] > 0).astype(float)
        s3.put_object(Bucket=BUCKET, Key="data/train/part.csv", Body=_csv(x[:200], y[:200]))
        s3.put_object(Bucket=BUCKET, Key="data/validation/part.csv", Body=_csv(x[200:], y[200:]))
        yield host


def _job(
    name: str, hyperparameters: dict[str, str], channels: tuple[str, ...] = ("train", "validation")
) -> dict[str, Any]:
    return {
        "TrainingJobName": name,
        "AlgorithmSpecification": {"TrainingImage": IMAGE, "TrainingInputMode": "File"},
        "RoleArn": ROLE,
        "HyperParameters": hyperparameters,
        "InputDataConfig": [
            {
                "ChannelName": c,
                "ContentType": "text/csv",
                "DataSource": {
                    "S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": f"s3://{BUCKET}/data/{c}/"}
                },
            }
            for c in channels
        ],
        "OutputDataConfig": {"S3OutputPath": f"s3://{BUCKET}/out"},
        "ResourceConfig": {"InstanceType": "ml.m5.large", "InstanceCount": 1, "VolumeSizeInGB": 5},
        "StoppingCondition": {"MaxRuntimeInSeconds": 600},
    }


def _finished(sm: Any, name: str) -> dict[str, Any]:
    def ended() -> dict[str, Any] | None:
        described: dict[str, Any] = sm.describe_training_job(TrainingJobName=name)
        return described if described["TrainingJobStatus"] in FINAL else None

    return until(ended, f"training job {name} to end", timeout=60)


def _error(call: Any) -> dict[str, Any]:
    with pytest.raises(ClientError) as caught:
        call()
    error: dict[str, Any] = caught.value.response["Error"]
    return error


def test_s3_objects_round_trip_through_boto3_transfers(local: LocalSageMaker, tmp_path: Path) -> None:
    s3 = local.client("s3")
    big = os.urandom(11 * 1024 * 1024)  # above boto3's 8 MB threshold: a multipart upload, ranged gets
    (tmp_path / "big.bin").write_bytes(big)
    s3.upload_file(str(tmp_path / "big.bin"), BUCKET, "blobs/big.bin")
    s3.download_file(BUCKET, "blobs/big.bin", str(tmp_path / "back.bin"))
    assert (tmp_path / "back.bin").read_bytes() == big
    assert (local.s3_root / BUCKET / "blobs" / "big.bin").read_bytes() == big  # s3://b/k is <s3_root>/b/k
    assert s3.head_object(Bucket=BUCKET, Key="blobs/big.bin")["ETag"].endswith('-2"')
    for i in range(5):
        s3.put_object(Bucket=BUCKET, Key=f"many/{i}/x y+z.csv", Body=b"1\n")
    listed = s3.list_objects_v2(Bucket=BUCKET, Prefix="many/", Delimiter="/", MaxKeys=2)
    assert [p["Prefix"] for p in listed["CommonPrefixes"]] == ["many/0/", "many/1/"] and listed["IsTruncated"]
    pages = s3.get_paginator("list_objects_v2").paginate(
        Bucket=BUCKET, Prefix="many/", PaginationConfig={"PageSize": 2}
    )
    assert [o["Key"] for page in pages for o in page["Contents"]] == [f"many/{i}/x y+z.csv" for i in range(5)]
    assert _error(lambda: s3.get_object(Bucket=BUCKET, Key="nope"))["Code"] == "NoSuchKey"
    assert _error(lambda: s3.get_object(Bucket="no-such-bucket", Key="x"))["Code"] == "NoSuchBucket"
    assert (
        _error(lambda: s3.put_object(Bucket=BUCKET, Key="../escape", Body=b"x"))["Code"] == "InvalidArgument"
    )
    assert not (local.s3_root / "escape").exists()
    assert _error(lambda: s3.delete_bucket(Bucket=BUCKET))["Code"] == "BucketNotEmpty"


def test_a_training_job_runs_and_its_model_is_what_xgboost_trains(local: LocalSageMaker) -> None:
    sm, logs = local.client("sagemaker"), local.client("logs")
    hyper = {"objective": "binary:logistic", "num_round": "15", "max_depth": "2", "eval_metric": "logloss"}
    sm.create_training_job(**_job("ok", hyper))
    described = _finished(sm, "ok")
    assert described["TrainingJobStatus"] == "Completed", described.get("FailureReason")
    assert described["ModelArtifacts"]["S3ModelArtifacts"] == f"s3://{BUCKET}/out/ok/output/model.tar.gz"
    metrics = {m["MetricName"] for m in described["FinalMetricDataList"]}
    assert metrics == {"train:logloss", "validation:logloss"}
    stream = logs.describe_log_streams(logGroupName="/aws/sagemaker/TrainingJobs", logStreamNamePrefix="ok/")
    events = logs.get_log_events(
        logGroupName="/aws/sagemaker/TrainingJobs",
        logStreamName=stream["logStreams"][0]["logStreamName"],
        startFromHead=True,
    )["events"]
    assert sum(e["message"].startswith("[") for e in events) == 15  # one line per boosting round
    assert [
        j["TrainingJobName"] for j in sm.list_training_jobs(StatusEquals="Completed")["TrainingJobSummaries"]
    ] == ["ok"]
    assert (
        _error(lambda: sm.create_training_job(**_job("OK", hyper)))["Code"] == "ResourceInUse"
    )  # case-blind


@pytest.mark.parametrize(
    ("hyperparameters", "channels", "reason"),
    [
        (
            {"num_round": "5", "etaa": "0.1"},
            ("train",),
            "ClientError: Additional hyperparameters are not allowed ('etaa' was unexpected)",
        ),
        (
            {"num_round": "5", "eta": "2"},
            ("train",),
            "ClientError: Hyperparameter eta: value 2 not in range [0, 1]",
        ),
        (
            {"num_round": "five"},
            ("train",),
            "ClientError: Hyperparameter num_round: 'five' is not an integer",
        ),
        ({"eta": "0.1"}, ("train",), "ClientError: Missing required hyperparameter: num_round"),
        ({"num_round": "5"}, ("validation",), "ClientError: Channel 'train' is required"),
        (
            {"num_round": "5"},
            ("train", "missing"),
            'ClientError: No S3 objects found under S3 URL "s3://jobs-bucket/data/missing/"',
        ),
    ],
)
def test_a_job_that_cannot_train_fails_with_the_containers_reason(
    local: LocalSageMaker, hyperparameters: dict[str, str], channels: tuple[str, ...], reason: str
) -> None:
    sm = local.client("sagemaker")
    sm.create_training_job(**_job("bad", hyperparameters, channels))
    described = _finished(sm, "bad")
    assert described["TrainingJobStatus"] == "Failed"
    assert described["FailureReason"].startswith(reason)
    assert described["SecondaryStatus"] == "Failed"
    # ModelArtifacts is required in DescribeTrainingJob's output shape: it names where the model would
    # be, and nothing is there
    where = described["ModelArtifacts"]["S3ModelArtifacts"]
    assert where == "s3://jobs-bucket/out/bad/output/model.tar.gz", where
    assert not (local.s3_root / where.removeprefix("s3://")).exists()
    assert (
        shape_problems(
            "DescribeTrainingJob", raw_sagemaker(local.url, "DescribeTrainingJob", {"TrainingJobName": "bad"})
        )
        == []
    )


def test_stopping_a_running_job(local: LocalSageMaker) -> None:
    sm = local.client("sagemaker")
    sm.create_training_job(**_job("long", {"num_round": "1000000", "max_depth": "8"}))
    until(
        lambda: sm.describe_training_job(TrainingJobName="long")["SecondaryStatus"] == "Training",
        "the job to be training",
    )
    sm.stop_training_job(TrainingJobName="long")
    described = _finished(sm, "long")
    assert (described["TrainingJobStatus"], described["SecondaryStatus"]) == ("Stopped", "Stopped")
    error = _error(lambda: sm.stop_training_job(TrainingJobName="long"))
    assert error["Code"] == "ValidationException" and "Stopped" in error["Message"]


def test_requests_aws_refuses_are_refused(local: LocalSageMaker) -> None:
    sm = local.client("sagemaker")
    job = _job("typo", {"num_round": "5"})
    job["ResourceConfig"]["InstanceType"] = "ml.m5.largee"
    error = _error(lambda: sm.create_training_job(**job))
    assert error["Code"] == "ValidationException" and "Member must satisfy enum value set" in error["Message"]
    assert _error(lambda: sm.describe_training_job(TrainingJobName="never"))["Code"] == "ValidationException"
    other = _job("other", {"num_round": "5"})
    other["AlgorithmSpecification"]["TrainingImage"] = "123.dkr.ecr.us-east-1.amazonaws.com/my-own:1"
    assert "XGBoost" in _error(lambda: sm.create_training_job(**other))["Message"]
    bad_tag = _job("badtag", {"num_round": "5"})
    error = _error(lambda: sm.create_training_job(**bad_tag, Tags=[{"Key": "aws:reserved", "Value": "x"}]))
    assert error["Code"] == "ValidationException" and "reserved" in error["Message"]
    assert sm.list_training_jobs()["TrainingJobSummaries"] == []  # nothing was created


def test_batch_transform_writes_one_line_per_row_and_fails_as_aws(local: LocalSageMaker) -> None:
    sm, s3 = local.client("sagemaker"), local.client("s3")
    sm.create_training_job(**_job("t", {"objective": "binary:logistic", "num_round": "10"}))
    artifact = _finished(sm, "t")["ModelArtifacts"]["S3ModelArtifacts"]
    sm.create_model(
        ModelName="m", PrimaryContainer={"Image": IMAGE, "ModelDataUrl": artifact}, ExecutionRoleArn=ROLE
    )
    rows = np.random.default_rng(1).normal(size=(37, 3))
    s3.put_object(Bucket=BUCKET, Key="score/in/rows.csv", Body=_csv(rows))
    s3.put_object(Bucket=BUCKET, Key="score/bad/rows.csv", Body=b"1,2,3\nnot,a,row\n")

    def transform(name: str, source: str) -> dict[str, Any]:
        sm.create_transform_job(
            TransformJobName=name,
            ModelName="m",
            TransformInput={
                "DataSource": {
                    "S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": f"s3://{BUCKET}/score/{source}"}
                },
                "ContentType": "text/csv",
                "SplitType": "Line",
            },
            TransformOutput={"S3OutputPath": f"s3://{BUCKET}/scored/{name}", "AssembleWith": "Line"},
            TransformResources={"InstanceType": "ml.m5.large", "InstanceCount": 1},
        )

        def ended() -> dict[str, Any] | None:
            described: dict[str, Any] = sm.describe_transform_job(TransformJobName=name)
            return described if described["TransformJobStatus"] in FINAL else None

        return until(ended, f"transform job {name} to end", timeout=60)

    assert transform("good", "in")["TransformJobStatus"] == "Completed"
    lines = s3.get_object(Bucket=BUCKET, Key="scored/good/rows.csv.out")["Body"].read().decode().splitlines()
    booster = xgb.Booster()
    booster.load_model(
        bytearray(
            __import__("tarfile")
            .open(local.s3_root / BUCKET / "out/t/output/model.tar.gz")
            .extractfile("xgboost-model")
            .read()
        )
    )
    assert [float(v) for v in lines] == pytest.approx(booster.predict(xgb.DMatrix(rows)), abs=1e-6)
    bad = transform("bad", "bad")
    assert bad["TransformJobStatus"] == "Failed" and bad["FailureReason"].startswith(
        "ClientError: See job logs"
    )
    missing = transform("missing", "nothing-here")
    assert missing["FailureReason"].startswith("ClientError: No S3 objects found")
    # the raw answers, before boto3 drops what it does not know, have botocore's output shapes
    for name in ("good", "bad", "missing"):
        raw = raw_sagemaker(local.url, "DescribeTransformJob", {"TransformJobName": name})
        assert shape_problems("DescribeTransformJob", raw) == []
    raw = raw_sagemaker(local.url, "DescribeTrainingJob", {"TrainingJobName": "t"})
    assert shape_problems("DescribeTrainingJob", raw) == []


def test_tags_on_models_and_jobs(local: LocalSageMaker, tmp_path: Path) -> None:
    sm = local.client("sagemaker")
    sm.create_training_job(**_job("tagged", {"num_round": "3"}), Tags=[{"Key": "team", "Value": "ml"}])
    arn = sm.describe_training_job(TrainingJobName="tagged")["TrainingJobArn"]
    sm.add_tags(ResourceArn=arn, Tags=[{"Key": "stage", "Value": "dev"}])
    assert {t["Key"]: t["Value"] for t in sm.list_tags(ResourceArn=arn)["Tags"]} == {
        "team": "ml",
        "stage": "dev",
    }
    sm.delete_tags(ResourceArn=arn, TagKeys=["team"])
    assert sm.list_tags(ResourceArn=arn)["Tags"] == [{"Key": "stage", "Value": "dev"}]
    missing = arn.replace("tagged", "absent")
    assert _error(lambda: sm.list_tags(ResourceArn=missing))["Code"] == "ValidationException"
    assert (
        "reserved"
        in _error(lambda: sm.add_tags(ResourceArn=arn, Tags=[{"Key": "aws:x", "Value": "1"}]))["Message"]
    )


def test_put_and_get_metric_statistics(local: LocalSageMaker) -> None:
    cloudwatch = local.client("cloudwatch")
    cloudwatch.put_metric_data(
        Namespace="Team/Models",
        MetricData=[
            {
                "MetricName": "auc",
                "Dimensions": [{"Name": "model", "Value": "churn"}],
                "Values": [0.8, 0.9],
                "Counts": [1, 3],
            }
        ],
    )
    now = datetime.now(UTC)
    points = cloudwatch.get_metric_statistics(
        Namespace="Team/Models",
        MetricName="auc",
        Dimensions=[{"Name": "model", "Value": "churn"}],
        StartTime=now - timedelta(minutes=5),
        EndTime=now + timedelta(minutes=1),
        Period=60,
        Statistics=["SampleCount", "Average"],
    )["Datapoints"]
    assert sum(p["SampleCount"] for p in points) == 4
    assert sum(p["Average"] * p["SampleCount"] for p in points) == pytest.approx(0.8 + 3 * 0.9)
    error = _error(
        lambda: cloudwatch.put_metric_data(
            Namespace="AWS/SageMaker", MetricData=[{"MetricName": "x", "Value": 1}]
        )
    )
    assert error["Code"] == "InvalidParameterValue"


def test_a_huge_count_is_counted_without_being_stored_one_by_one(local: LocalSageMaker) -> None:
    cloudwatch = local.client("cloudwatch")
    datum = {"MetricName": "requests", "Values": [1.0, 5.0], "Counts": [1e9, 3]}
    cloudwatch.put_metric_data(Namespace="Team/Load", MetricData=[datum])
    now = datetime.now(UTC)
    points = cloudwatch.get_metric_statistics(
        Namespace="Team/Load",
        MetricName="requests",
        StartTime=now - timedelta(minutes=5),
        EndTime=now + timedelta(minutes=1),
        Period=60,
        Statistics=["SampleCount", "Sum", "Maximum"],
    )["Datapoints"]
    assert sum(p["SampleCount"] for p in points) == 1e9 + 3
    assert sum(p["Sum"] for p in points) == 1e9 + 15
    assert max(p["Maximum"] for p in points) == 5.0


def test_lists_filter_sort_and_page_alike(local: LocalSageMaker) -> None:
    """One pager serves every List*: the control plane's lists honour the time bounds and refuse an
    unknown SortBy as the jobs' lists do."""
    sm = local.client("sagemaker")
    for name in ("alpha", "beta", "gamma"):
        sm.create_model(ModelName=name, PrimaryContainer={"Image": IMAGE}, ExecutionRoleArn=ROLE)
    created = {m["ModelName"]: m["CreationTime"] for m in sm.list_models()["Models"]}
    after = created["alpha"]
    newer = sm.list_models(CreationTimeAfter=after, SortBy="Name", SortOrder="Ascending")["Models"]
    assert [m["ModelName"] for m in newer] == sorted(n for n, t in created.items() if t > after)
    first = sm.list_models(SortBy="Name", SortOrder="Ascending", MaxResults=2)
    rest = sm.list_models(SortBy="Name", SortOrder="Ascending", MaxResults=2, NextToken=first["NextToken"])
    assert [m["ModelName"] for m in first["Models"] + rest["Models"]] == ["alpha", "beta", "gamma"]
    assert "NextToken" not in rest
    assert _error(lambda: sm.list_models(SortBy="Status"))["Code"] == "ValidationException"
    assert _error(lambda: sm.list_endpoints(MaxResults=101))["Code"] == "ValidationException"


def test_state_is_saved_from_many_threads_at_once(local: LocalSageMaker) -> None:
    """Job threads and request handlers save at the same moments; each save used to go through one
    shared temporary file, so one thread's rename could find it gone and kill that job's thread."""
    jobs, control = local.control.jobs, local.control
    errors: list[BaseException] = []

    def hammer() -> None:
        try:
            for _ in range(100):
                jobs.save()
                control._save()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=hammer) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert json.loads((local.state_dir / "jobs.json").read_text()).keys() == {
        "training",
        "transform",
        "tuning",
    }
    assert not list(local.state_dir.glob(".*.partial"))


def test_a_bug_inside_a_job_fails_the_job_instead_of_hanging_it(
    local: LocalSageMaker, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(uri: str) -> list[Path]:
        raise RuntimeError("a bug in the host")

    monkeypatch.setattr(local.control.jobs, "_s3_files", broken)  # stands in for any bug in a job thread
    sm = local.client("sagemaker")
    sm.create_training_job(**_job("victim", {"num_round": "3"}))
    described = _finished(sm, "victim")
    assert described["TrainingJobStatus"] == "Failed"
    assert described["FailureReason"] == "InternalServerError: RuntimeError: a bug in the host"
