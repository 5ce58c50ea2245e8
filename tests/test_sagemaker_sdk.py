"""The SageMaker Python SDK (v2: Estimator, HyperparameterTuner, Predictor, Transformer), unmodified,
runs SageMaker's own XGBoost workflow end to end against the local SageMaker: upload, train with log
streaming, tune, deploy the best model, predict, batch-transform, A/B two models, shift weights,
update the endpoint to the winner, read CloudWatch statistics, delete.

One thing is changed, openly: the SDK sleeps 5-30 s between its polls and asks for a job's state only
every 30 s while it streams logs. Its `time` module is given a virtual clock (`sleep(s)` waits a few
ms and moves the clock on by `s`), so the same polls happen in a fraction of the time. Every call
still goes over HTTP to the host, and every number asserted is computed independently here.
"""

from __future__ import annotations

import io
import tarfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from manager.local_sagemaker import LocalSageMaker

from .local_sagemaker_support import raw_sagemaker, shape_problems, until

sagemaker = pytest.importorskip("sagemaker", reason="the SageMaker SDK is in the test extra")
xgb = pytest.importorskip("xgboost", reason="xgboost is in the test extra")

from sagemaker.inputs import TrainingInput  # noqa: E402
from sagemaker.s3 import S3Downloader, S3Uploader  # noqa: E402
from sagemaker.serializers import CSVSerializer  # noqa: E402
from sagemaker.tuner import ContinuousParameter, HyperparameterTuner, IntegerParameter  # noqa: E402

pytestmark = pytest.mark.slow
ROLE = "arn:aws:iam::123456789012:role/SageMakerRole"
BUCKET = "sdk-workflow"
INSTANCE = "ml.m5.large"


class VirtualClock:
    """Stands in for the `time` module inside `sagemaker.session` (see the module docstring)."""

    def __init__(self) -> None:
        self.offset = 0.0

    def sleep(self, seconds: float) -> None:
        time.sleep(min(seconds, 0.02))
        self.offset += seconds

    def time(self) -> float:
        return time.time() + self.offset

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)


def _data(seed: int = 7) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(900, 5))
    logit = 1.5 * x[:, 0] - x[:, 1] + 0.5 * x[:, 2] * x[:, 3]
    y = (logit + rng.normal(scale=0.7, size=len(x)) > 0).astype(float)
    return x, y


def _csv(x: np.ndarray, y: np.ndarray | None = None) -> str:
    rows = x if y is None else np.column_stack([y, x])
    return "".join(",".join(repr(float(v)) for v in row) + "\n" for row in rows)


@pytest.fixture
def sdk_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    with LocalSageMaker(tmp_path / "state", provision_delay=0.2, metric_bucket_seconds=1, seed=7) as host:
        monkeypatch.setenv("AWS_ENDPOINT_URL", host.url)
        monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "local")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "local")
        config = tmp_path / "sagemaker-config.yaml"  # no telemetry calls to the internet
        config.write_text(
            "SchemaVersion: '1.0'\nSageMaker:\n  PythonSDK:\n    Modules:\n      TelemetryOptOut: true\n"
        )
        monkeypatch.setenv("SAGEMAKER_USER_CONFIG_OVERRIDE", str(config))
        import sagemaker.session

        monkeypatch.setattr(sagemaker.session, "time", VirtualClock())
        yield host


def _local_model(session: Any, model_data: str, tmp_path: Path) -> Any:
    """The artifact the job wrote, read back and loaded in-process with xgboost itself."""
    blob = S3Downloader.read_bytes(model_data, sagemaker_session=session)
    with tarfile.open(fileobj=io.BytesIO(blob)) as archive:
        names = archive.getnames()
        assert names == ["xgboost-model"]
        raw = archive.extractfile("xgboost-model").read()  # type: ignore[union-attr]
    booster = xgb.Booster()
    booster.load_model(bytearray(raw))
    return booster


def test_sdk_xgboost_workflow(
    sdk_env: LocalSageMaker, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import boto3

    session = sagemaker.Session(boto_session=boto3.Session(region_name="us-east-1"), default_bucket=BUCKET)
    x, y = _data()
    train, valid, test = slice(0, 600), slice(600, 800), slice(800, 900)
    files = tmp_path / "data"
    files.mkdir()
    (files / "train.csv").write_text(_csv(x[train], y[train]))
    (files / "validation.csv").write_text(_csv(x[valid], y[valid]))
    (files / "test.csv").write_text(_csv(x[test]))
    s3_train = session.upload_data(str(files / "train.csv"), key_prefix="xgb/train")
    s3_valid = session.upload_data(str(files / "validation.csv"), key_prefix="xgb/validation")
    s3_test = S3Uploader.upload(str(files / "test.csv"), f"s3://{BUCKET}/xgb/test", sagemaker_session=session)
    assert s3_train == f"s3://{BUCKET}/xgb/train/train.csv"
    inputs = {
        "train": TrainingInput(s3_train.rsplit("/", 1)[0], content_type="text/csv"),
        "validation": TrainingInput(s3_valid.rsplit("/", 1)[0], content_type="text/csv"),
    }

    # ---- train, with the SDK's default log streaming -------------------------------------------------
    image = sagemaker.image_uris.retrieve("xgboost", "us-east-1", "1.7-1")
    estimator = sagemaker.estimator.Estimator(
        image,
        ROLE,
        instance_count=1,
        instance_type=INSTANCE,
        output_path=f"s3://{BUCKET}/xgb/output",
        sagemaker_session=session,
    )
    estimator.set_hyperparameters(objective="binary:logistic", num_round=25, max_depth=3, eval_metric="auc")
    estimator.fit(inputs)
    streamed = capsys.readouterr().out
    assert "[24]#011train-auc:" in streamed and "validation-auc:" in streamed  # the job's own log lines
    described = session.describe_training_job(estimator.latest_training_job.name)
    assert described["TrainingJobStatus"] == "Completed"
    assert [t["Status"] for t in described["SecondaryStatusTransitions"]] == [
        "Starting", "Downloading", "Training", "Uploading", "Completed"
    ]  # fmt: skip
    final = {m["MetricName"]: m["Value"] for m in described["FinalMetricDataList"]}
    first_model = estimator.model_data
    assert first_model == f"s3://{BUCKET}/xgb/output/{estimator.latest_training_job.name}/output/model.tar.gz"
    booster_a = _local_model(session, first_model, tmp_path)
    # The reported validation AUC is the AUC of the saved model on the validation rows.
    from sklearn.metrics import roc_auc_score

    valid_scores = booster_a.predict(xgb.DMatrix(x[valid]))
    assert final["validation:auc"] == pytest.approx(roc_auc_score(y[valid], valid_scores), abs=1e-6)

    # ---- tune ----------------------------------------------------------------------------------------
    tuner = HyperparameterTuner(
        estimator,
        "validation:auc",
        {"eta": ContinuousParameter(0.05, 0.5, "Logarithmic"), "max_depth": IntegerParameter(2, 6)},
        max_jobs=4,
        max_parallel_jobs=2,
        strategy="Bayesian",
    )
    tuner.fit(inputs)
    tuner.wait()
    tuning = session.sagemaker_client.describe_hyper_parameter_tuning_job(
        HyperParameterTuningJobName=tuner.latest_tuning_job.name
    )
    assert tuning["HyperParameterTuningJobStatus"] == "Completed"
    assert tuning["TrainingJobStatusCounters"]["Completed"] == 4
    children = tuner.analytics().dataframe()
    assert len(children) == 4
    best_value = tuning["BestTrainingJob"]["FinalHyperParameterTuningJobObjectiveMetric"]["Value"]
    assert best_value == pytest.approx(children["FinalObjectiveValue"].max())
    assert tuning["BestTrainingJob"]["TrainingJobName"] == tuner.best_training_job()

    # ---- deploy the best model, predict as the real container answers --------------------------------
    best = tuner.best_estimator()
    predictor = best.deploy(1, INSTANCE, serializer=CSVSerializer(), endpoint_name="sdk-best")
    body = predictor.predict(x[test][:10])
    answered = np.fromstring(body.decode(), sep=",")  # as code written against the container parses it
    booster_best = _local_model(session, best.model_data, tmp_path)
    assert answered == pytest.approx(booster_best.predict(xgb.DMatrix(x[test][:10])), abs=1e-6)

    # ---- batch transform the test set ------------------------------------------------------------------
    transformer = best.transformer(
        1, INSTANCE, output_path=f"s3://{BUCKET}/xgb/scored", accept="text/csv", assemble_with="Line"
    )
    transformer.transform(s3_test, content_type="text/csv", split_type="Line")
    transformer.wait()
    scored = S3Downloader.read_file(f"s3://{BUCKET}/xgb/scored/test.csv.out", sagemaker_session=session)
    lines = scored.splitlines()
    assert len(lines) == 100
    assert [float(v) for v in lines] == pytest.approx(booster_best.predict(xgb.DMatrix(x[test])), abs=1e-6)
    # Each job's response as sent on the wire (boto3 drops what its model does not know, so the SDK
    # would never see a stray member): every required member there, and none the shape lacks.
    for operation, request in (
        ("DescribeTrainingJob", {"TrainingJobName": estimator.latest_training_job.name}),
        ("DescribeHyperParameterTuningJob", {"HyperParameterTuningJobName": tuner.latest_tuning_job.name}),
        ("DescribeTransformJob", {"TransformJobName": transformer.latest_transform_job.name}),
        ("DescribeEndpoint", {"EndpointName": predictor.endpoint_name}),
    ):
        assert shape_problems(operation, raw_sagemaker(sdk_env.url, operation, request)) == [], operation
    predictor.delete_endpoint()

    # ---- A/B: the first model against the best, then the winner alone --------------------------------
    from sagemaker.session import production_variant

    session.create_model("sdk-first", ROLE, {"Image": image, "ModelDataUrl": first_model})
    session.create_model("sdk-best-model", ROLE, {"Image": image, "ModelDataUrl": best.model_data})
    session.endpoint_from_production_variants(
        "sdk-ab",
        [
            production_variant("sdk-first", INSTANCE, 1, variant_name="first", initial_weight=1),
            production_variant("sdk-best-model", INSTANCE, 1, variant_name="best", initial_weight=1),
        ],
    )
    ab = sagemaker.predictor.Predictor("sdk-ab", sagemaker_session=session, serializer=CSVSerializer())
    started = datetime.now(UTC) - timedelta(minutes=1)
    sent = 40
    for i in range(sent):
        ab.predict(x[test][i : i + 1])
    session.sagemaker_client.update_endpoint_weights_and_capacities(
        EndpointName="sdk-ab",
        DesiredWeightsAndCapacities=[
            {"VariantName": "first", "DesiredWeight": 0.0},
            {"VariantName": "best", "DesiredWeight": 1.0},
        ],
    )
    session.wait_for_endpoint("sdk-ab")
    weights = {
        v["VariantName"]: v["CurrentWeight"]
        for v in session.sagemaker_client.describe_endpoint(EndpointName="sdk-ab")["ProductionVariants"]
    }
    assert weights == {"first": 0.0, "best": 1.0}
    ab.update_endpoint(model_name="sdk-best-model", initial_instance_count=1, instance_type=INSTANCE)
    variants = session.sagemaker_client.describe_endpoint(EndpointName="sdk-ab")["ProductionVariants"]
    assert len(variants) == 1
    config = session.sagemaker_client.describe_endpoint_config(
        EndpointConfigName=session.sagemaker_client.describe_endpoint(EndpointName="sdk-ab")[
            "EndpointConfigName"
        ]
    )
    assert [v["ModelName"] for v in config["ProductionVariants"]] == ["sdk-best-model"]
    only = np.fromstring(ab.predict(x[test][:3]).decode(), sep=",")
    assert only == pytest.approx(booster_best.predict(xgb.DMatrix(x[test][:3])), abs=1e-6)

    # ---- CloudWatch, as the A/B testing notebook reads it ---------------------------------------------
    cloudwatch = session.boto_session.client("cloudwatch")

    def invocations() -> dict[str, float] | None:
        counted = {}
        for variant in ("first", "best", "AllTraffic"):
            points = cloudwatch.get_metric_statistics(
                Namespace="AWS/SageMaker",
                MetricName="Invocations",
                Dimensions=[
                    {"Name": "EndpointName", "Value": "sdk-ab"},
                    {"Name": "VariantName", "Value": variant},
                ],
                StartTime=started,
                EndTime=datetime.now(UTC) + timedelta(minutes=1),
                Period=60,
                Statistics=["Sum"],
            )["Datapoints"]
            counted[variant] = sum(p["Sum"] for p in points)
        return counted if sum(counted.values()) >= sent + 1 else None

    counted = until(invocations, "the invocations to be counted", timeout=30)
    # The 40 A/B requests split between the two variants, then one (of 3 rows) to the winner alone,
    # in the variant `update_endpoint` made ("AllTraffic", the SDK's default name).
    assert counted["first"] > 0 and counted["best"] > 0 and counted["first"] + counted["best"] == sent
    assert counted["AllTraffic"] == 1

    ab.delete_endpoint()
    for name in ("sdk-first", "sdk-best-model"):
        session.delete_model(name)
    # A deleted endpoint shows Deleting for a moment, then is gone.
    until(lambda: session.sagemaker_client.list_endpoints()["Endpoints"] == [], "the endpoints to go")
