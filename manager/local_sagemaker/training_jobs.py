"""Training jobs: `CreateTrainingJob` and the rest, for the built-in XGBoost algorithm, run by
`xgboost.train` in a worker process."""

from __future__ import annotations

from typing import Any

from manager.local_sagemaker.book import find
from manager.local_sagemaker.job_runner import (
    TRAINING_LOGS,
    JobInputError,
    JobRunner,
    checked_s3_uri,
)
from manager.local_sagemaker.protocol import (
    AwsError,
    check_instance_type,
    check_name,
    validation,
    wire_times,
)
from manager.local_sagemaker.runtime import ArtifactError, resolve_uri
from manager.local_sagemaker.xgboost_algorithm import is_xgboost_image


class TrainingJobs(JobRunner):
    """Training jobs: created, run by `_train` in a worker, described, listed and stopped."""

    def op_CreateTrainingJob(self, req: dict[str, Any]) -> dict[str, Any]:
        name = check_name("trainingJobName", req.get("TrainingJobName"))
        return {"TrainingJobArn": self.create_training(name, req)}

    def create_training(
        self,
        name: str,
        req: dict[str, Any],
        tuning_job: str | None = None,
        tuned: dict[str, str] | None = None,
        nthread: int | None = None,
    ) -> str:
        with self.lock:
            if find(self.training, name):
                raise AwsError(
                    "ResourceInUse",
                    f"Training job names must be unique within an AWS account and region, "
                    f"and a training job with this name already exists ({self.arn('training-job', name)})",
                )
        spec = _checked_training(req)
        arn = self.arn("training-job", name)
        now = self.clock()
        artifact = f"{spec['OutputDataConfig']['S3OutputPath'].rstrip('/')}/{name}/output/model.tar.gz"
        job: dict[str, Any] = {
            "TrainingJobName": name,
            "TrainingJobArn": arn,
            "TrainingJobStatus": "InProgress",
            "SecondaryStatus": "Starting",
            **spec,
            "CreationTime": now,
            "LastModifiedTime": now,
            "SecondaryStatusTransitions": [],
        }
        if tuning_job:  # set before the job's thread starts, which reads them
            job["TuningJobArn"] = self.arn("hyper-parameter-tuning-job", tuning_job)
            job["_tuned"] = tuned or {}
            job["_nthread"] = nthread
        self._secondary(job, "Starting", "Preparing the instances for training", now)
        if req.get("Tags"):  # refused before the job exists, or kept with it
            self.tag(arn, req["Tags"])
        with self.lock:
            self.training[name] = job
        self.save()
        self._thread(lambda: self._train(name, artifact), "training", job)
        return arn

    def _train(self, name: str, artifact: str) -> None:
        job = self.training[name]
        stream = (TRAINING_LOGS, f"{name}/algo-1-{int(job['CreationTime'])}")
        self.logs.write(*stream, [f"Training job {name}: preparing the instance"])
        try:
            channels = {
                c["ChannelName"]: (
                    [str(p) for p in self._s3_files(c["DataSource"]["S3DataSource"]["S3Uri"])],
                    c.get("ContentType") or "libsvm",
                )
                for c in job["InputDataConfig"]
            }
            spec = {
                "hyperparameters": job["HyperParameters"],
                "channels": channels,
                "artifact_path": str(resolve_uri(artifact, self.s3_root)),
                "nthread": job.get("_nthread"),
            }
            outcome = self._run(
                "training",
                name,
                spec,
                stream,
                lambda status, message: self._secondary(job, status, message, self.clock()),
                job["StoppingCondition"]["MaxRuntimeInSeconds"],
            )
        except (JobInputError, ArtifactError, AwsError) as exc:
            outcome = ("failed", str(exc) if isinstance(exc, JobInputError) else f"ClientError: {exc}")
            self.logs.write(*stream, [outcome[1]])
        now = self.clock()
        with self.lock:
            job.setdefault(
                "TrainingStartTime",
                job["SecondaryStatusTransitions"][0]["EndTime"]
                if len(job["SecondaryStatusTransitions"]) > 1
                else now,
            )
            job["TrainingEndTime"] = now
            elapsed = max(1, int(now - job["TrainingStartTime"]))
            job["TrainingTimeInSeconds"] = elapsed
            job["BillableTimeInSeconds"] = elapsed
            if outcome[0] == "done":
                job["TrainingJobStatus"] = "Completed"
                job["ModelArtifacts"] = {"S3ModelArtifacts": artifact}
                job["FinalMetricDataList"] = [
                    {"MetricName": k, "Value": v, "Timestamp": now}
                    for k, v in sorted(outcome[1]["metrics"].items())
                ]
                self._secondary(job, "Completed", "Training job completed", now)
            elif outcome[0] == "stopped":
                job["TrainingJobStatus"] = "Stopped"
                reason = outcome[1]
                self._secondary(
                    job,
                    reason,
                    "Training job stopped"
                    if reason == "Stopped"
                    else "Training job exceeded MaxRuntimeInSeconds",
                    now,
                )
                self.stopping.discard(name)
            else:
                job["TrainingJobStatus"] = "Failed"
                job["FailureReason"] = outcome[1]
                self._secondary(job, "Failed", outcome[1], now)
        self.save()

    def _training_job(self, name: Any) -> dict[str, Any]:
        job = find(self.training, name)
        if job is None:
            raise AwsError(
                "ValidationException",
                f"Requested resource not found: {self.arn('training-job', str(name))}",
                status=400,
            )
        return job

    def op_DescribeTrainingJob(self, req: dict[str, Any]) -> dict[str, Any]:
        job = self._training_job(req.get("TrainingJobName"))
        out = self._described(job)
        if "ModelArtifacts" not in out:
            # Required in DescribeTrainingJob's output shape: where the model will be, before it is.
            root = str((out.get("OutputDataConfig") or {}).get("S3OutputPath", "")).rstrip("/")
            out["ModelArtifacts"] = {
                "S3ModelArtifacts": f"{root}/{out['TrainingJobName']}/output/model.tar.gz"
            }
        result: dict[str, Any] = wire_times(out)
        return result

    def op_StopTrainingJob(self, req: dict[str, Any]) -> dict[str, Any]:
        job = self._training_job(req.get("TrainingJobName"))
        if job["TrainingJobStatus"] != "InProgress":
            raise validation(
                f"The request was rejected because the training job is in status {job['TrainingJobStatus']}."
            )
        self._stop_training(job)
        return {}

    def _stop_training(self, job: dict[str, Any]) -> None:
        """Ask a running training job to stop (its thread ends it); nothing if it is not running."""
        self._ask_to_stop(job, "training")

    def op_ListTrainingJobs(self, req: dict[str, Any]) -> dict[str, Any]:
        keys = ("TrainingJobName", "TrainingJobArn", "CreationTime", "TrainingEndTime", "LastModifiedTime",
                "TrainingJobStatus", "SecondaryStatus")  # fmt: skip
        return self._listing(req, "training", lambda j: {k: j.get(k) for k in keys})


def _checked_training(req: dict[str, Any]) -> dict[str, Any]:
    """A CreateTrainingJob request checked as AWS (and what this host can run) checks it: the job's
    fields as DescribeTrainingJob gives them back, defaults filled in."""
    algorithm = req.get("AlgorithmSpecification") or {}
    image = algorithm.get("TrainingImage")
    if algorithm.get("AlgorithmName"):
        raise validation("the local SageMaker runs the built-in XGBoost image only, not AlgorithmName")
    if not is_xgboost_image(image):
        raise validation(
            f"TrainingImage {image!r}: the local SageMaker runs the built-in XGBoost algorithm only "
            "(the image the SageMaker SDK returns for 'xgboost')"
        )
    mode = algorithm.get("TrainingInputMode", "File")
    if mode not in ("File", "FastFile", "Pipe"):
        raise validation(f"TrainingInputMode {mode!r} must be one of [Pipe, File, FastFile]")
    if not req.get("RoleArn"):
        raise validation(
            "1 validation error detected: Value null at 'roleArn' failed to satisfy constraint: "
            "Member must not be null"
        )
    output = checked_s3_uri(
        "OutputDataConfig.S3OutputPath", (req.get("OutputDataConfig") or {}).get("S3OutputPath")
    )
    resources = req.get("ResourceConfig") or {}
    check_instance_type("TrainingInstanceType", "resourceConfig.instanceType", resources.get("InstanceType"))
    if not isinstance(resources.get("VolumeSizeInGB"), int) or resources["VolumeSizeInGB"] < 1:
        raise validation("ResourceConfig.VolumeSizeInGB must be an integer >= 1")
    if int(resources.get("InstanceCount", 1)) != 1:
        raise validation("the local SageMaker runs training on one instance: InstanceCount must be 1")
    stopping = req.get("StoppingCondition") or {}
    max_runtime = stopping.get("MaxRuntimeInSeconds", 86400)
    if not isinstance(max_runtime, int) or not 1 <= max_runtime <= 2419200:
        raise validation("StoppingCondition.MaxRuntimeInSeconds must be between 1 and 2419200")
    hyperparameters = req.get("HyperParameters") or {}
    if not all(isinstance(v, str) for v in hyperparameters.values()):
        raise validation("HyperParameters values must be strings")
    channels = req.get("InputDataConfig") or []
    names = [c.get("ChannelName") for c in channels]
    if len(set(names)) != len(names):
        raise validation(f"Channel names must be unique: {names}")
    _check_channels(channels)
    job: dict[str, Any] = {
        "AlgorithmSpecification": {**algorithm, "TrainingInputMode": mode},
        "RoleArn": req["RoleArn"],
        "InputDataConfig": channels,
        "OutputDataConfig": {"KmsKeyId": "", **req["OutputDataConfig"], "S3OutputPath": output},
        "ResourceConfig": {"InstanceCount": 1, **resources},
        "StoppingCondition": {**stopping, "MaxRuntimeInSeconds": max_runtime},
        "HyperParameters": hyperparameters,
        "EnableNetworkIsolation": bool(req.get("EnableNetworkIsolation", False)),
        "EnableInterContainerTrafficEncryption": bool(
            req.get("EnableInterContainerTrafficEncryption", False)
        ),
        "EnableManagedSpotTraining": bool(req.get("EnableManagedSpotTraining", False)),
    }
    for kept in ("VpcConfig", "Environment", "CheckpointConfig", "DebugHookConfig", "ExperimentConfig",
                 "RetryStrategy", "ProfilerConfig", "TensorBoardOutputConfig"):  # fmt: skip
        if req.get(kept) is not None:
            job[kept] = req[kept]
    return job


def _check_channels(channels: list[dict[str, Any]]) -> None:
    """Each input channel: an uncompressed S3 prefix this host can read."""
    for channel in channels:
        source = (channel.get("DataSource") or {}).get("S3DataSource")
        if source is None:
            raise validation(
                f"channel {channel.get('ChannelName')}: the local SageMaker reads S3DataSource only"
            )
        if source.get("S3DataType", "S3Prefix") != "S3Prefix":
            raise validation(
                f"channel {channel.get('ChannelName')}: S3DataType {source.get('S3DataType')} is "
                "not supported here; use S3Prefix"
            )
        if channel.get("CompressionType", "None") != "None":
            raise validation(
                f"channel {channel.get('ChannelName')}: the local SageMaker reads uncompressed channels only"
            )
        checked_s3_uri(f"channel {channel.get('ChannelName')}: S3Uri", source.get("S3Uri"))
