"""Candidates trained on SageMaker with the built-in XGBoost algorithm, through boto3.

The train and validation splits go to S3 as CSV (target first, no header); a training job, or a
Bayesian hyperparameter tuning job whose best training job wins, produces `model.tar.gz`; a batch
transform job scores held-out rows for the offline gate. The XGBoost image URI comes from the
SageMaker SDK's `image_uris` (the `sagemaker` extra). Every call starts work or looks at it once;
`wait` loops over those looks for the CLI, with a timeout.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

import numpy as np

from manager.clock import utcnow
from manager.errors import UserError
from manager.names import readable_name
from manager.platforms.base import ModelSpec
from manager.platforms.sagemaker import SageMakerPlatform
from trainers.base import Progress, TrainingResult
from trainers.config import Range, SageMakerJob, TrainConfig
from trainers.datasets import Dataset, Task, split, to_csv_bytes
from trainers.evaluation import all_metrics, check_metric

DONE = ("Completed",)
FAILED = ("Failed", "Stopped")
OBJECTIVE_DIRECTION = {
    "validation:auc": "Maximize",
    "validation:rmse": "Minimize",
    "validation:logloss": "Minimize",
    "validation:error": "Minimize",
}


# kind: (its Describe* operation, the name field, the status field)
JOBS = {
    "training": ("describe_training_job", "TrainingJobName", "TrainingJobStatus"),
    "tuning": (
        "describe_hyper_parameter_tuning_job",
        "HyperParameterTuningJobName",
        "HyperParameterTuningJobStatus",
    ),
    "transform": ("describe_transform_job", "TransformJobName", "TransformJobStatus"),
}


class JobFailed(UserError):
    """A SageMaker job ended Failed or Stopped; the message carries its FailureReason."""


def xgboost_image(region: str, version: str) -> str:
    # The SDK announces its config files and v2's deprecation on import: not our users' concern.
    os.environ.setdefault("SAGEMAKER_SUPPRESS_V2_WARNING", "1")
    logging.getLogger("sagemaker.config").setLevel(logging.WARNING)
    try:
        from sagemaker import image_uris
    except ImportError:
        raise UserError(
            "the SageMaker trainer needs the SageMaker SDK: pip install 'variantctl[sagemaker]'"
        ) from None
    try:
        return str(image_uris.retrieve("xgboost", region=region, version=version))
    except ValueError as exc:
        raise UserError(f"no XGBoost {version} image in {region}: {exc}") from None


def default_hyperparameters(task: Task, classes: int) -> dict[str, str]:
    """As SageMaker's XGBoost tutorials give them."""
    common = {
        "max_depth": "5",
        "eta": "0.2",
        "gamma": "4",
        "min_child_weight": "6",
        "subsample": "0.8",
        "num_round": "100",
    }
    if task == "binary":
        return {**common, "objective": "binary:logistic", "eval_metric": "auc"}
    if task == "multiclass":
        return {**common, "objective": "multi:softprob", "num_class": str(classes), "eval_metric": "mlogloss"}
    return {**common, "objective": "reg:squarederror", "eval_metric": "rmse"}


def parameter_ranges(ranges: dict[str, Range]) -> dict[str, list[dict[str, Any]]]:
    scaling = {"linear": "Linear", "log": "Logarithmic"}
    out: dict[str, list[dict[str, Any]]] = {
        "IntegerParameterRanges": [],
        "ContinuousParameterRanges": [],
        "CategoricalParameterRanges": [],
    }
    for name, r in ranges.items():
        if r.type == "categorical":
            out["CategoricalParameterRanges"].append(
                {"Name": name, "Values": [str(v) for v in r.values or []]}
            )
        else:
            key = "IntegerParameterRanges" if r.type == "integer" else "ContinuousParameterRanges"
            low, high = (int(r.min or 0), int(r.max or 0)) if r.type == "integer" else (r.min, r.max)
            out[key].append(
                {"Name": name, "MinValue": str(low), "MaxValue": str(high), "ScalingType": scaling[r.scale]}
            )
    return out


def _s3(uri: str) -> tuple[str, str]:
    parsed = urlparse(uri)
    return parsed.netloc, parsed.path.lstrip("/")


@dataclass
class SageMakerTrainer:
    sagemaker: Any
    s3: Any
    region: str
    poll_seconds: float = 30.0
    timeout_seconds: float = 6 * 3600
    name = "sagemaker"

    @classmethod
    def connect(cls, config: TrainConfig) -> SageMakerTrainer:
        from manager.platforms import aws

        region = (config.sagemaker.region if config.sagemaker else None) or aws.session().region_name
        if not region:
            raise UserError("set the region: sagemaker.region in train.yaml, or AWS_REGION")
        session = aws.session(region)
        return cls(aws.client("sagemaker", on=session), aws.client("s3", on=session), region)

    # ---- looking once, and waiting (for the CLI) ---------------------------------------------------

    def status(self, kind: str, name: str) -> dict[str, Any]:
        """One Describe* of a training, tuning or transform job."""
        operation, name_field, _ = JOBS[kind]
        result: dict[str, Any] = getattr(self.sagemaker, operation)(**{name_field: name})
        return result

    def wait(
        self, kind: str, name: str, on_poll: Callable[[dict[str, Any]], None] | None = None
    ) -> dict[str, Any]:
        key = JOBS[kind][2]
        deadline = time.monotonic() + self.timeout_seconds
        delay = min(1.0, self.poll_seconds)  # a short job is seen done quickly; a long one polled gently
        while True:
            described = self.status(kind, name)
            if on_poll:
                on_poll(described)
            state = described[key]
            if state in DONE:
                return described
            if state in FAILED:
                raise JobFailed(
                    f"{kind} job {name} {state}: {described.get('FailureReason', 'no reason given')}"
                )
            if time.monotonic() > deadline:
                raise JobFailed(f"{kind} job {name} still {state} after {self.timeout_seconds:g} s")
            time.sleep(delay)
            delay = min(self.poll_seconds, delay * 1.5)

    # ---- training ------------------------------------------------------------------------------

    def _upload(self, prefix: str, name: str, body: bytes) -> str:
        bucket, key = _s3(f"{prefix}/{name}")
        self.s3.put_object(Bucket=bucket, Key=key, Body=body)
        return f"s3://{bucket}/{key}"

    def _job_definition(
        self, job: SageMakerJob, image: str, channels: dict[str, str], output: str, static: dict[str, str]
    ) -> dict[str, Any]:
        return {
            "AlgorithmSpecification": {"TrainingImage": image, "TrainingInputMode": "File"},
            "RoleArn": job.role_arn,
            "InputDataConfig": [
                {
                    "ChannelName": channel,
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
                for channel, uri in channels.items()
            ],
            "OutputDataConfig": {"S3OutputPath": output},
            "ResourceConfig": {"InstanceType": job.instance_type, "InstanceCount": 1, "VolumeSizeInGB": 10},
            "StoppingCondition": {"MaxRuntimeInSeconds": job.max_runtime_seconds},
            "StaticHyperParameters": static,
        }

    def start_training(
        self,
        name: str,
        job: SageMakerJob,
        image: str,
        channels: dict[str, str],
        output: str,
        hyperparameters: dict[str, str],
    ) -> None:
        definition = self._job_definition(job, image, channels, output, hyperparameters)
        definition["HyperParameters"] = definition.pop("StaticHyperParameters")
        self.sagemaker.create_training_job(TrainingJobName=name, **definition)

    def start_tuning(
        self,
        name: str,
        job: SageMakerJob,
        image: str,
        channels: dict[str, str],
        output: str,
        static: dict[str, str],
    ) -> None:
        assert job.tuning is not None
        tuning = job.tuning
        # A hyperparameter is static or tuned, never both: SageMaker refuses the overlap.
        static = {k: v for k, v in static.items() if k not in tuning.ranges}
        self.sagemaker.create_hyper_parameter_tuning_job(
            HyperParameterTuningJobName=name,
            HyperParameterTuningJobConfig={
                "Strategy": "Bayesian",
                "HyperParameterTuningJobObjective": {
                    "Type": OBJECTIVE_DIRECTION[tuning.objective],
                    "MetricName": tuning.objective,
                },
                "ResourceLimits": {
                    "MaxNumberOfTrainingJobs": tuning.max_jobs,
                    "MaxParallelTrainingJobs": tuning.max_parallel_jobs,
                },
                "ParameterRanges": parameter_ranges(tuning.ranges),
            },
            TrainingJobDefinition=self._job_definition(job, image, channels, output, static),
        )

    def train(self, config: TrainConfig, data: Dataset, progress: Progress | None = None) -> TrainingResult:
        job = config.sagemaker
        if job is None:
            raise UserError("the SageMaker trainer needs a `sagemaker:` section in train.yaml")
        check_metric(data.task, config.objective.metric, data.x)
        started = utcnow()
        splits = split(data, config.split.validation, config.split.test, config.split.seed)
        run = readable_name(config.model, data, started)[:32].rstrip("-")
        prefix = f"{job.bucket.rstrip('/')}/{config.model}/{run}"
        channels = {
            "train": self._upload(
                f"{prefix}/train", "train.csv", to_csv_bytes(splits.x_train, splits.y_train)
            ),
            "validation": self._upload(
                f"{prefix}/validation", "validation.csv", to_csv_bytes(splits.x_val, splits.y_val)
            ),
        }
        channels = {k: v.rsplit("/", 1)[0] + "/" for k, v in channels.items()}
        image = xgboost_image(self.region, job.xgboost_version)
        classes = int(np.unique(data.y).size)
        hyperparameters = {
            **default_hyperparameters(data.task, classes),
            **{k: str(v) for k, v in job.hyperparameters.items()},
        }
        output = f"{prefix}/output"
        if job.tuning is None:
            self.start_training(run, job, image, channels, output, hyperparameters)
            described = self.wait(
                "training", run, lambda d: progress and progress(0, 1, float("nan"), float("nan"))
            )
            searched: dict[str, Any] = {"strategy": "none", "jobs": 1, "training_job": run}
        else:
            self.start_tuning(run, job, image, channels, output, hyperparameters)

            def tuning_progress(d: dict[str, Any]) -> None:
                counters = d.get("TrainingJobStatusCounters", {})
                done = int(counters.get("Completed", 0)) + int(counters.get("Stopped", 0))
                best = d.get("BestTrainingJob", {}).get("FinalHyperParameterTuningJobObjectiveMetric", {})
                if progress:
                    progress(
                        done,
                        job.tuning.max_jobs if job.tuning else 1,
                        float("nan"),
                        float(best.get("Value", "nan")),
                    )

            tuned = self.wait("tuning", run, tuning_progress)
            best_name = tuned["BestTrainingJob"]["TrainingJobName"]
            described = self.status("training", best_name)
            hyperparameters = {**hyperparameters, **tuned["BestTrainingJob"].get("TunedHyperParameters", {})}
            searched = {
                "strategy": "bayesian",
                "jobs": tuning_jobs(tuned),
                "tuning_job": run,
                "training_job": best_name,
                "objective": job.tuning.objective,
            }
        final = {m["MetricName"]: float(m["Value"]) for m in described.get("FinalMetricDataList", [])}
        searched["best_score"] = final.get(job.tuning.objective if job.tuning else "", float("nan"))
        artifact = described["ModelArtifacts"]["S3ModelArtifacts"]
        finished = utcnow()
        return TrainingResult.of(
            self.name,
            config,
            data,
            artifact_uri=artifact,
            framework=("xgboost", job.xgboost_version),
            hyperparameters=dict(hyperparameters),
            metrics={"validation": final, "test": {}},
            started_at=started,
            finished_at=finished,
            search=searched,
            image_uri=image,
        )

    # ---- batch transform: scores for held-out rows ------------------------------------------------

    def batch_scores(self, model: ModelSpec, x: np.ndarray, bucket: str, instance_type: str) -> np.ndarray:
        """Score rows with a batch transform job (CSV, split by line): one score per row."""
        SageMakerPlatform(self.sagemaker).ensure_model(model)
        name = readable_name(f"{model.name}-gate", model, utcnow())
        prefix = f"{bucket.rstrip('/')}/transform/{name}"
        features = "\n".join(",".join(f"{v:.10g}" for v in row) for row in x).encode() + b"\n"
        source = self._upload(f"{prefix}/input", "test.csv", features)
        self.sagemaker.create_transform_job(
            TransformJobName=name,
            ModelName=model.name,
            TransformInput={
                "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": source}},
                "ContentType": "text/csv",
                "SplitType": "Line",
            },
            TransformOutput={
                "S3OutputPath": f"{prefix}/output",
                "Accept": "text/csv",
                "AssembleWith": "Line",
            },
            TransformResources={"InstanceType": instance_type, "InstanceCount": 1},
        )
        self.wait("transform", name)
        bucket_name, key = _s3(f"{prefix}/output/test.csv.out")
        body = self.s3.get_object(Bucket=bucket_name, Key=key)["Body"].read().decode()
        rows = [[float(v) for v in line.split(",")] for line in body.splitlines() if line.strip()]
        if len(rows) != len(x):
            raise UserError(f"batch transform {name} returned {len(rows)} scores for {len(x)} rows")
        scores = np.asarray(rows, dtype=np.float64)
        return scores[:, 0] if scores.shape[1] == 1 else scores

    def test_metrics(self, task: Task, y: np.ndarray, scores: np.ndarray) -> dict[str, float]:
        return all_metrics(task, y, scores)


def tuning_jobs(described: dict[str, Any]) -> int:
    counters = described.get("TrainingJobStatusCounters", {})
    return int(sum(int(v) for v in counters.values())) or 1
