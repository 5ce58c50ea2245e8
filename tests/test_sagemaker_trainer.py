"""The SageMaker trainer's flow under moto: upload, training job, tuning job, best job, batch
transform for the gate, and registration with the S3 artifact; plus the exact CreateTrainingJob shape."""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import numpy as np
import pytest
from botocore.stub import ANY, Stubber
from moto import mock_aws
from sklearn.dummy import DummyClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from manager.config.yamlfile import parse
from manager.db import Database
from manager.registry import models
from manager.rollout.configs import Images
from trainers.base import register
from trainers.config import TrainConfig
from trainers.datasets import load
from trainers.gate import offline_gate, sagemaker_scorer
from trainers.sagemaker_job import SageMakerTrainer, xgboost_image

from .aws_support import record_operations
from .local_sagemaker_support import wait_status

ROLE = "arn:aws:iam::123456789012:role/SageMakerExecutionRole"
CONFIG = f"""
model: churn
objective: {{metric: roc_auc}}
sagemaker:
  role_arn: {ROLE}
  bucket: s3://ml-bucket/training
  xgboost_version: "1.7-1"
  region: us-east-1
  hyperparameters: {{num_round: 50}}
  tuning:
    max_jobs: 4
    max_parallel_jobs: 2
    objective: validation:auc
    ranges:
      eta: {{type: continuous, min: 0.05, max: 0.5, scale: log}}
      max_depth: {{type: integer, min: 3, max: 8}}
gate: {{metric: roc_auc, margin: 0.01}}
"""


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Any, Any]]:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with mock_aws():
        sm = boto3.client("sagemaker", region_name="us-east-1")
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket="ml-bucket")
        yield sm, s3


def _moto_gaps(product_sm: Any, s3: Any, good: Any, bad: Any) -> None:
    """moto runs no containers. Two gaps are filled here, openly:
    - its tuning jobs launch no training jobs and always name `FakeTrainingJobName` as the best one,
      so that training job is created here for the trainer to describe;
    - its transform jobs write no output, so this hook writes what the XGBoost container would have
      written for the job's input: one probability per line, from a real scikit-learn model (the
      baseline, `churn-v1`, answers like a constant model; any other model answers well)."""
    boto3.client("sagemaker", region_name="us-east-1").create_training_job(
        TrainingJobName="FakeTrainingJobName",
        AlgorithmSpecification={"TrainingImage": "img", "TrainingInputMode": "File"},
        RoleArn=ROLE,
        OutputDataConfig={"S3OutputPath": "s3://ml-bucket/training/tuned"},
        ResourceConfig={"InstanceType": "ml.m5.large", "InstanceCount": 1, "VolumeSizeInGB": 10},
        StoppingCondition={"MaxRuntimeInSeconds": 3600},
    )

    def write_output(params: dict[str, Any], **_: Any) -> None:
        source = params["TransformInput"]["DataSource"]["S3DataSource"]["S3Uri"]
        bucket, key = source[5:].split("/", 1)
        x = np.loadtxt(io.BytesIO(s3.get_object(Bucket=bucket, Key=key)["Body"].read()), delimiter=",")
        model = bad if params["ModelName"] == "churn-v1" else good
        scores = model.predict_proba(x)[:, 1]
        out_bucket, out_key = params["TransformOutput"]["S3OutputPath"][5:].split("/", 1)
        s3.put_object(
            Bucket=out_bucket, Key=f"{out_key}/test.csv.out", Body="".join(f"{p:.8f}\n" for p in scores)
        )

    product_sm.meta.events.register("provide-client-params.sagemaker.CreateTransformJob", write_output)


def test_tuning_flow_registers_the_best_job_and_gates_it(aws: tuple[Any, Any], database: Database) -> None:
    sm, s3 = aws
    data = load("sklearn:breast_cancer")
    good = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(data.x, data.y)
    bad = DummyClassifier(strategy="prior").fit(data.x, data.y)
    # The product's own clients: every call they make is recorded for the IAM policy test. The
    # test's checks below use the fixture's clients, on the same moto backend.
    product_sm = record_operations(boto3.client("sagemaker", region_name="us-east-1"))
    product_s3 = record_operations(boto3.client("s3", region_name="us-east-1"))
    _moto_gaps(product_sm, s3, good, bad)
    config = parse(CONFIG, TrainConfig)
    trainer = SageMakerTrainer(product_sm, product_s3, "us-east-1", poll_seconds=0)

    result = trainer.train(config, data)

    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="ml-bucket", Prefix="training/churn/")["Contents"]]
    assert any(k.endswith("/train/train.csv") for k in keys) and any(
        k.endswith("/validation/validation.csv") for k in keys
    )
    train_key = next(k for k in keys if k.endswith("train.csv"))
    first = (
        s3.get_object(Bucket="ml-bucket", Key=train_key)["Body"].read().decode().splitlines()[0].split(",")
    )
    assert first[0] in ("0", "1") and len(first) == 31  # target first, then the 30 features, no header
    tuning = sm.describe_hyper_parameter_tuning_job(HyperParameterTuningJobName=result.search["tuning_job"])
    assert tuning["HyperParameterTuningJobConfig"]["Strategy"] == "Bayesian"
    assert tuning["HyperParameterTuningJobConfig"]["HyperParameterTuningJobObjective"] == {
        "Type": "Maximize",
        "MetricName": "validation:auc",
    }
    assert result.search["training_job"] == "FakeTrainingJobName"
    assert result.artifact_uri == "s3://ml-bucket/training/tuned/FakeTrainingJobName/output/model.tar.gz"
    assert result.image_uri == xgboost_image("us-east-1", "1.7-1")
    assert (
        result.hyperparameters["objective"] == "binary:logistic"
        and result.hyperparameters["num_round"] == "50"
    )

    with database.write() as session:
        baseline = models.register(
            session,
            models.NewVersion(
                "churn",
                "s3://ml-bucket/old/model.tar.gz",
                "xgboost",
                image_uri=result.image_uri,
                status="serving",
            ),
            "t",
        )
        candidate = register(session, result, "scheduler:retrain-churn", baseline)
        verdict = offline_gate(
            session,
            config,
            data,
            candidate,
            baseline,
            sagemaker_scorer(trainer, config),
            "scheduler:retrain-churn",
        )
        assert verdict is not None and verdict.passed and candidate.status == "approved"
        assert verdict.baseline == pytest.approx(0.5) and verdict.candidate > 0.95
        assert candidate.artifact_uri == result.artifact_uri and candidate.replaces_id == baseline.id
        assert candidate.metrics["test"]["roc_auc"] == pytest.approx(verdict.candidate)
    jobs = sm.list_transform_jobs()["TransformJobSummaries"]
    assert len(jobs) == 2
    described = sm.describe_transform_job(TransformJobName=jobs[0]["TransformJobName"])
    assert described["TransformInput"]["SplitType"] == "Line"
    assert described["TransformInput"]["ContentType"] == "text/csv"
    assert {m["ModelName"] for m in sm.list_models()["Models"]} == {"churn-v1", "churn-v2"}


def test_create_training_job_request_shape() -> None:
    client = boto3.client(
        "sagemaker", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x"
    )
    config = parse(CONFIG, TrainConfig)
    assert config.sagemaker is not None
    trainer = SageMakerTrainer(client, None, "us-east-1")
    image = xgboost_image("us-east-1", "1.7-1")
    channels = {"train": "s3://ml-bucket/t/train/", "validation": "s3://ml-bucket/t/validation/"}
    with Stubber(client) as stubber:
        stubber.add_response(
            "create_training_job",
            {"TrainingJobArn": "arn:x"},
            {
                "TrainingJobName": "churn-job",
                "AlgorithmSpecification": {"TrainingImage": image, "TrainingInputMode": "File"},
                "RoleArn": ROLE,
                "InputDataConfig": [
                    {
                        "ChannelName": name,
                        "ContentType": "text/csv",
                        "CompressionType": "None",
                        "DataSource": {
                            "S3DataSource": {
                                "S3DataType": "S3Prefix",
                                "S3Uri": uri,
                                "S3DataDistributionType": "FullyReplicated",
                            }
                        },
                    }
                    for name, uri in channels.items()
                ],
                "OutputDataConfig": {"S3OutputPath": "s3://ml-bucket/t/output"},
                "ResourceConfig": {"InstanceType": "ml.m5.large", "InstanceCount": 1, "VolumeSizeInGB": 10},
                "StoppingCondition": {"MaxRuntimeInSeconds": 3600},
                "HyperParameters": {
                    "objective": "binary:logistic",
                    "num_round": "100",
                    "max_depth": "5",
                    "eta": ANY,
                    "gamma": "4",
                    "min_child_weight": "6",
                    "subsample": "0.8",
                    "eval_metric": "auc",
                },
            },
        )
        from trainers.sagemaker_job import default_hyperparameters

        trainer.start_training(
            "churn-job",
            config.sagemaker,
            image,
            channels,
            "s3://ml-bucket/t/output",
            default_hyperparameters("binary", 2),
        )
        stubber.assert_no_pending_responses()


def test_a_single_training_job_without_tuning(aws: tuple[Any, Any]) -> None:
    sm, _ = aws
    config = parse(CONFIG.split("  tuning:")[0] + "gate: {metric: roc_auc}\n", TrainConfig)
    trainer = SageMakerTrainer(
        record_operations(boto3.client("sagemaker", region_name="us-east-1")),
        record_operations(boto3.client("s3", region_name="us-east-1")),
        "us-east-1",
        poll_seconds=0,
    )
    result = trainer.train(config, load("sklearn:breast_cancer"))
    job = sm.describe_training_job(TrainingJobName=result.search["training_job"])
    assert job["TrainingJobStatus"] == "Completed" and result.search["strategy"] == "none"
    assert job["HyperParameters"]["num_round"] == "50"
    assert result.artifact_uri == job["ModelArtifacts"]["S3ModelArtifacts"]
    assert (
        result.artifact_uri.startswith("s3://ml-bucket/training/churn/") and len(job["TrainingJobName"]) <= 63
    )


def test_the_gate_scores_the_model_the_reconciler_deploys_even_with_a_long_name(
    aws: tuple[Any, Any], database: Database
) -> None:
    """A 60-character model name at version 10: `<name>-v10` is 64 characters, which SageMaker refuses.
    The gate and the reconciler both name the SageMaker model through `names.model_name`, so the gate
    scores (and creates) exactly the model a rollout will deploy."""
    sm, s3 = aws
    data = load("sklearn:breast_cancer")
    good = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(data.x, data.y)
    bad = DummyClassifier(strategy="prior").fit(data.x, data.y)
    product_sm = boto3.client("sagemaker", region_name="us-east-1")
    _moto_gaps(product_sm, s3, good, bad)
    long_name = "churn-" + "x" * 54
    assert len(long_name) == 60
    config = parse(CONFIG.replace("model: churn", f"model: {long_name}"), TrainConfig)
    trainer = SageMakerTrainer(product_sm, boto3.client("s3", region_name="us-east-1"), "us-east-1", 0)
    image = xgboost_image("us-east-1", "1.7-1")
    with database.write() as session:
        versions = [
            models.register(
                session,
                models.NewVersion(
                    long_name, f"s3://ml-bucket/m{v}.tar.gz", "xgboost", image_uri=image, version=v
                ),
                "t",
            )
            for v in (9, 10)
        ]
        verdict = offline_gate(
            session, config, data, versions[1], versions[0], sagemaker_scorer(trainer, config), "t"
        )
        assert verdict is not None
        deployed = {Images().model(v).name for v in versions}
    assert all(len(name) <= 63 for name in deployed)
    assert {m["ModelName"] for m in sm.list_models()["Models"]} == deployed


# ---- for real, on the local SageMaker ---------------------------------------------------------------------

# The moto tests' config, with a gate margin for a 114-row test split.
LOCAL_CONFIG = CONFIG.replace("margin: 0.01", "margin: 0.05")


@pytest.mark.slow
def test_train_with_sagemaker_jobs_for_real_then_serve(
    aws_env: Any, database: Database, run: Any, tmp_path: Path
) -> None:
    """`variantctl train --trainer sagemaker` against the local SageMaker, where the jobs really run:
    a tuning job (4 XGBoost training jobs, 2 at a time) picks the best, a batch transform scores the
    held-out rows for the gate, and the registered artifact is deployed by the reconciler and served."""
    pytest.importorskip("xgboost")
    aws_env.client("s3").create_bucket(Bucket="ml-bucket")
    config = tmp_path / "train.yaml"
    config.write_text(LOCAL_CONFIG)
    train = ("train", "--trainer", "sagemaker", "--data", "sklearn:breast_cancer", "--config", str(config))
    first = run(*train, "--no-gate", "--output", "json")
    assert first.exit_code == 0, first.output
    second = run(*train, "--output", "json")
    assert second.exit_code == 0, second.output
    record = json.loads(second.output)
    assert record["model"] == "churn:2" and record["status"] == "approved"
    assert record["artifact_uri"].startswith("s3://ml-bucket/training/churn/") and record[
        "artifact_uri"
    ].endswith("/output/model.tar.gz")
    # The gate scored both versions with batch transform jobs on the held-out rows.
    assert record["gate"].startswith("offline gate passed: roc_auc candidate 0.9")
    assert "held-out rows" in record["gate"]
    sm = aws_env.client("sagemaker")
    tuning = sm.list_hyper_parameter_tuning_jobs()["HyperParameterTuningJobSummaries"]
    assert len(tuning) == 2 and all(t["TrainingJobStatusCounters"]["Completed"] == 4 for t in tuning)
    assert sm.list_transform_jobs()["TransformJobSummaries"][0]["TransformJobStatus"] == "Completed"

    created = run("endpoints", "create", "churn-prod", "--model", "churn:2")
    assert created.exit_code == 0, created.output
    wait_status(sm, "churn-prod", timeout=60)
    data = load("sklearn:breast_cancer")
    body = ",".join(repr(float(v)) for v in data.x[0]) + "\n" + ",".join(repr(float(v)) for v in data.x[1])
    answer = (
        aws_env.client("sagemaker-runtime")
        .invoke_endpoint(EndpointName="churn-prod", Body=body, ContentType="text/csv")["Body"]
        .read()
    )
    served = np.fromstring(answer.decode(), sep=",")
    import xgboost as xgb

    archive = (
        aws_env.client("s3")
        .get_object(Bucket="ml-bucket", Key=record["artifact_uri"].removeprefix("s3://ml-bucket/"))["Body"]
        .read()
    )
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        booster = xgb.Booster()
        booster.load_model(bytearray(tar.extractfile("xgboost-model").read()))  # type: ignore[union-attr]
    assert served == pytest.approx(booster.predict(xgb.DMatrix(data.x[:2])), abs=1e-6)
