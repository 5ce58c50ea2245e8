"""SageMaker's XGBoost workflow in plain boto3, as code written against AWS runs it, against the local
SageMaker: upload with `upload_file` (multipart), a training job followed with boto3's own waiter and
its log stream read back, a tuning job, deploy the best model, predict several rows at once and parse
the answer as the real container's clients do (`np.fromstring(body, sep=",")`), batch-transform a
test set, A/B the first model against the best with `TargetVariant` and weights, switch to the
winner with `UpdateEndpoint`, count the requests in CloudWatch, delete.

Nothing is patched: boto3's waiters are only told to poll every 0.1 s instead of every 30-60 s. Every
prediction is compared with what the same artifact, downloaded with `download_file` and loaded
in-process with xgboost, predicts.
"""

from __future__ import annotations

import tarfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from boto3.s3.transfer import TransferConfig

from manager.local_sagemaker import LocalSageMaker

from .local_sagemaker_support import until

xgb = pytest.importorskip("xgboost", reason="xgboost is in the test extra")

pytestmark = pytest.mark.slow
IMAGE = "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-xgboost:1.7-1"
ROLE = "arn:aws:iam::123456789012:role/SageMakerRole"
BUCKET = "boto3-workflow"
INSTANCE = "ml.m5.large"
FAST = {"Delay": 0.1, "MaxAttempts": 600}


def _data(seed: int = 11) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(900, 4))
    y = ((x[:, 0] - 0.8 * x[:, 1] + rng.normal(scale=0.6, size=len(x))) > 0).astype(float)
    return x, y


def _write_csv(path: Path, x: np.ndarray, y: np.ndarray | None = None) -> None:
    rows = x if y is None else np.column_stack([y, x])
    path.write_text("".join(",".join(repr(float(v)) for v in row) + "\n" for row in rows))


def _channel(name: str) -> dict[str, Any]:
    return {
        "ChannelName": name,
        "ContentType": "text/csv",
        "DataSource": {
            "S3DataSource": {
                "S3DataType": "S3Prefix",
                "S3Uri": f"s3://{BUCKET}/data/{name}/",
                "S3DataDistributionType": "FullyReplicated",
            }
        },
    }


def _training(name: str, hyperparameters: dict[str, str]) -> dict[str, Any]:
    return {
        "TrainingJobName": name,
        "AlgorithmSpecification": {"TrainingImage": IMAGE, "TrainingInputMode": "File"},
        "RoleArn": ROLE,
        "HyperParameters": hyperparameters,
        "InputDataConfig": [_channel("train"), _channel("validation")],
        "OutputDataConfig": {"S3OutputPath": f"s3://{BUCKET}/output"},
        "ResourceConfig": {"InstanceType": INSTANCE, "InstanceCount": 1, "VolumeSizeInGB": 5},
        "StoppingCondition": {"MaxRuntimeInSeconds": 600},
    }


def _booster(s3: Any, uri: str, tmp_path: Path) -> Any:
    """The artifact a job wrote, downloaded and loaded in-process, as the container loads it."""
    bucket, key = uri.removeprefix("s3://").split("/", 1)
    local = tmp_path / f"{abs(hash(key))}.tar.gz"
    s3.download_file(bucket, key, str(local))
    with tarfile.open(local) as archive:
        raw = archive.extractfile("xgboost-model").read()  # type: ignore[union-attr]
    booster = xgb.Booster()
    booster.load_model(bytearray(raw))
    return booster


def _csv_body(rows: np.ndarray) -> str:
    return "\n".join(",".join(repr(float(v)) for v in row) for row in rows)


def test_the_xgboost_workflow_in_plain_boto3(tmp_path: Path) -> None:
    with LocalSageMaker(tmp_path / "state", provision_delay=0.2, metric_bucket_seconds=1, seed=11) as host:
        s3, sm = host.client("s3"), host.client("sagemaker")
        rt, logs, cloudwatch = (
            host.client("sagemaker-runtime"),
            host.client("logs"),
            host.client("cloudwatch"),
        )
        x, y = _data()
        train, valid, test = slice(0, 600), slice(600, 800), slice(800, 900)

        # ---- upload: the training set in 5 MiB parts, as upload_file splits a large file ------------
        s3.create_bucket(Bucket=BUCKET)
        files = tmp_path / "files"
        files.mkdir()
        big = np.repeat(x[train], 130, axis=0)  # ~6.4 MB: above the multipart threshold set below
        _write_csv(files / "train.csv", big, np.repeat(y[train], 130))
        _write_csv(files / "validation.csv", x[valid], y[valid])
        _write_csv(files / "test.csv", x[test])
        multipart = TransferConfig(multipart_threshold=5 * 2**20, multipart_chunksize=5 * 2**20)
        for name in ("train", "validation"):
            s3.upload_file(str(files / f"{name}.csv"), BUCKET, f"data/{name}/part.csv", Config=multipart)
        s3.upload_file(str(files / "test.csv"), BUCKET, "batch/test.csv")
        head = s3.head_object(Bucket=BUCKET, Key="data/train/part.csv")
        assert head["ContentLength"] == (files / "train.csv").stat().st_size
        assert head["ETag"].strip('"').endswith("-2")  # a multipart object's ETag counts its parts

        # ---- train, followed with boto3's waiter; the job's log read back from CloudWatch Logs ------
        sm.create_training_job(
            **_training("first", {"objective": "binary:logistic", "num_round": "20", "eval_metric": "auc"})
        )
        sm.get_waiter("training_job_completed_or_stopped").wait(TrainingJobName="first", WaiterConfig=FAST)
        first = sm.describe_training_job(TrainingJobName="first")
        assert first["TrainingJobStatus"] == "Completed", first.get("FailureReason")
        assert (
            first["ModelArtifacts"]["S3ModelArtifacts"] == f"s3://{BUCKET}/output/first/output/model.tar.gz"
        )
        streams = logs.describe_log_streams(
            logGroupName="/aws/sagemaker/TrainingJobs", logStreamNamePrefix="first/"
        )["logStreams"]
        events = logs.get_log_events(
            logGroupName="/aws/sagemaker/TrainingJobs", logStreamName=streams[0]["logStreamName"]
        )["events"]
        assert any("[19]#011train-auc:" in e["message"] for e in events)

        # ---- tune ---------------------------------------------------------------------------------------
        sm.create_hyper_parameter_tuning_job(
            HyperParameterTuningJobName="tune",
            HyperParameterTuningJobConfig={
                "Strategy": "Random",
                "HyperParameterTuningJobObjective": {"Type": "Maximize", "MetricName": "validation:auc"},
                "ResourceLimits": {"MaxNumberOfTrainingJobs": 4, "MaxParallelTrainingJobs": 2},
                "ParameterRanges": {
                    "IntegerParameterRanges": [{"Name": "max_depth", "MinValue": "2", "MaxValue": "5"}],
                    "ContinuousParameterRanges": [
                        {"Name": "eta", "MinValue": "0.05", "MaxValue": "0.5", "ScalingType": "Logarithmic"}
                    ],
                },
            },
            TrainingJobDefinition={
                key: value
                for key, value in _training("unused", {}).items()
                if key not in ("TrainingJobName", "HyperParameters")
            }
            | {
                "StaticHyperParameters": {
                    "objective": "binary:logistic",
                    "num_round": "20",
                    "eval_metric": "auc",
                }
            },
        )

        def tuned() -> dict[str, Any] | None:
            described: dict[str, Any] = sm.describe_hyper_parameter_tuning_job(
                HyperParameterTuningJobName="tune"
            )
            return (
                described if described["HyperParameterTuningJobStatus"] in ("Completed", "Failed") else None
            )

        tuning = until(tuned, "the tuning job to end", timeout=120)
        assert tuning["HyperParameterTuningJobStatus"] == "Completed"
        children = sm.list_training_jobs_for_hyper_parameter_tuning_job(HyperParameterTuningJobName="tune")[
            "TrainingJobSummaries"
        ]
        assert len(children) == 4
        scores = [c["FinalHyperParameterTuningJobObjectiveMetric"]["Value"] for c in children]
        best_name = tuning["BestTrainingJob"]["TrainingJobName"]
        assert tuning["BestTrainingJob"]["FinalHyperParameterTuningJobObjectiveMetric"]["Value"] == max(
            scores
        )
        best_uri = sm.describe_training_job(TrainingJobName=best_name)["ModelArtifacts"]["S3ModelArtifacts"]
        booster_first = _booster(s3, first["ModelArtifacts"]["S3ModelArtifacts"], tmp_path)
        booster_best = _booster(s3, best_uri, tmp_path)

        # ---- deploy the best model; several rows in one request, parsed as the container answers ----
        sm.create_model(
            ModelName="best",
            PrimaryContainer={"Image": IMAGE, "ModelDataUrl": best_uri},
            ExecutionRoleArn=ROLE,
        )
        sm.create_model(
            ModelName="first",
            PrimaryContainer={"Image": IMAGE, "ModelDataUrl": first["ModelArtifacts"]["S3ModelArtifacts"]},
            ExecutionRoleArn=ROLE,
        )
        one = {"InstanceType": INSTANCE, "InitialInstanceCount": 1}
        sm.create_endpoint_config(
            EndpointConfigName="best-only",
            ProductionVariants=[{"VariantName": "best", "ModelName": "best", **one}],
        )
        sm.create_endpoint(EndpointName="xgb", EndpointConfigName="best-only")
        sm.get_waiter("endpoint_in_service").wait(EndpointName="xgb", WaiterConfig=FAST)
        answer = rt.invoke_endpoint(EndpointName="xgb", ContentType="text/csv", Body=_csv_body(x[test][:10]))
        assert answer["ContentType"].split(";")[0] == "text/csv"  # Flask in the container adds a charset
        parsed = np.fromstring(answer["Body"].read().decode(), sep=",")
        assert parsed == pytest.approx(booster_best.predict(xgb.DMatrix(x[test][:10])), abs=1e-6)

        # ---- batch transform the test set ------------------------------------------------------------
        sm.create_transform_job(
            TransformJobName="score",
            ModelName="best",
            TransformInput={
                "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": f"s3://{BUCKET}/batch/"}},
                "ContentType": "text/csv",
                "SplitType": "Line",
            },
            TransformOutput={
                "S3OutputPath": f"s3://{BUCKET}/scored/",
                "AssembleWith": "Line",
                "Accept": "text/csv",
            },
            TransformResources={"InstanceType": INSTANCE, "InstanceCount": 1},
        )
        sm.get_waiter("transform_job_completed_or_stopped").wait(TransformJobName="score", WaiterConfig=FAST)
        assert sm.describe_transform_job(TransformJobName="score")["TransformJobStatus"] == "Completed"
        s3.download_file(BUCKET, "scored/test.csv.out", str(tmp_path / "scored.csv"))
        lines = (tmp_path / "scored.csv").read_text().splitlines()
        assert len(lines) == 100
        assert [float(v) for v in lines] == pytest.approx(
            booster_best.predict(xgb.DMatrix(x[test])), abs=1e-6
        )

        # ---- A/B: the first model beside the best, each asked by TargetVariant, then weights ---------
        started = datetime.now(UTC) - timedelta(minutes=1)
        sm.create_endpoint_config(
            EndpointConfigName="ab",
            ProductionVariants=[
                {"VariantName": "first", "ModelName": "first", "InitialVariantWeight": 1.0, **one},
                {"VariantName": "best", "ModelName": "best", "InitialVariantWeight": 1.0, **one},
            ],
        )
        sm.update_endpoint(EndpointName="xgb", EndpointConfigName="ab")
        sm.get_waiter("endpoint_in_service").wait(EndpointName="xgb", WaiterConfig=FAST)
        sent = {"first": 0, "best": 0}
        for target, booster in (("first", booster_first), ("best", booster_best)):
            answer = rt.invoke_endpoint(
                EndpointName="xgb", ContentType="text/csv", Body=_csv_body(x[test][:5]), TargetVariant=target
            )
            assert answer["InvokedProductionVariant"] == target
            parsed = np.fromstring(answer["Body"].read().decode(), sep=",")
            assert parsed == pytest.approx(booster.predict(xgb.DMatrix(x[test][:5])), abs=1e-6)
            sent[target] += 1
        for i in range(30):
            answer = rt.invoke_endpoint(
                EndpointName="xgb", ContentType="text/csv", Body=_csv_body(x[test][i : i + 1])
            )
            sent[answer["InvokedProductionVariant"]] += 1
        assert sent["first"] > 1 and sent["best"] > 1  # weights 1:1 sent requests to both
        sm.update_endpoint_weights_and_capacities(
            EndpointName="xgb",
            DesiredWeightsAndCapacities=[
                {"VariantName": "first", "DesiredWeight": 0.0},
                {"VariantName": "best", "DesiredWeight": 1.0},
            ],
        )
        sm.get_waiter("endpoint_in_service").wait(EndpointName="xgb", WaiterConfig=FAST)
        for i in range(10):
            answer = rt.invoke_endpoint(
                EndpointName="xgb", ContentType="text/csv", Body=_csv_body(x[test][i : i + 1])
            )
            assert answer["InvokedProductionVariant"] == "best"
            sent["best"] += 1

        # ---- the winner alone, through UpdateEndpoint ---------------------------------------------------
        sm.update_endpoint(EndpointName="xgb", EndpointConfigName="best-only")
        sm.get_waiter("endpoint_in_service").wait(EndpointName="xgb", WaiterConfig=FAST)
        described = sm.describe_endpoint(EndpointName="xgb")
        assert (
            described["EndpointConfigName"],
            [v["VariantName"] for v in described["ProductionVariants"]],
        ) == (
            "best-only",
            ["best"],
        )

        # ---- CloudWatch counts every request, per variant ----------------------------------------------
        def counted() -> dict[str, float] | None:
            sums = {}
            for name in sent:
                points = cloudwatch.get_metric_statistics(
                    Namespace="AWS/SageMaker",
                    MetricName="Invocations",
                    Dimensions=[
                        {"Name": "EndpointName", "Value": "xgb"},
                        {"Name": "VariantName", "Value": name},
                    ],
                    StartTime=started,
                    EndTime=datetime.now(UTC) + timedelta(minutes=1),
                    Period=60,
                    Statistics=["Sum"],
                )["Datapoints"]
                sums[name] = sum(p["Sum"] for p in points)
            # the one request (of 10 rows) sent to `best` before the A/B counts too
            return sums if sums["first"] + sums["best"] >= sum(sent.values()) + 1 else None

        sums = until(counted, "the invocations to be counted", timeout=30)
        assert sums == {"first": sent["first"], "best": sent["best"] + 1}

        # ---- delete -------------------------------------------------------------------------------------
        sm.delete_endpoint(EndpointName="xgb")
        sm.get_waiter("endpoint_deleted").wait(EndpointName="xgb", WaiterConfig=FAST)
        for config in ("best-only", "ab"):
            sm.delete_endpoint_config(EndpointConfigName=config)
        for model in ("best", "first"):
            sm.delete_model(ModelName=model)
        assert (sm.list_endpoints()["Endpoints"], sm.list_models()["Models"]) == ([], [])
