"""Training, hyperparameter tuning and batch transform jobs that really run.

A training job for the built-in XGBoost algorithm runs `xgboost.train` in a worker process
(`worker.py`); a batch transform job scores its input objects with the model's container
emulation; a tuning job launches training jobs, `MaxParallelTrainingJobs` at a time, choosing
hyperparameters with its strategy (`tuning.py`). Jobs wait for a free core as AWS jobs wait for
capacity (`SecondaryStatus: Starting`). Describe* answers as AWS does while the job moves:
`InProgress` (with `SecondaryStatus` and its transitions) to `Completed`, `Failed` or `Stopped`.
Log lines go to CloudWatch Logs (`/aws/sagemaker/TrainingJobs`, `/aws/sagemaker/TransformJobs`).

Jobs are kept in `<state_dir>/jobs.json`; a job that was running when the host stopped is
`Failed` on restart, with that reason.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from manager.local_sagemaker import tuning
from manager.local_sagemaker.book import find
from manager.local_sagemaker.files import atomic_write
from manager.local_sagemaker.listing import page, sorted_by
from manager.local_sagemaker.logs import LogStore
from manager.local_sagemaker.models import container
from manager.local_sagemaker.protocol import (
    AwsError,
    check_instance_type,
    check_name,
    sagemaker_arn,
    validation,
    wire_times,
)
from manager.local_sagemaker.runtime import ArtifactError, resolve_uri, s3_problem
from manager.local_sagemaker.xgboost_algorithm import channel_files, is_xgboost_image

TRAINING_LOGS = "/aws/sagemaker/TrainingJobs"
TRANSFORM_LOGS = "/aws/sagemaker/TransformJobs"
FINAL = ("Completed", "Failed", "Stopped")
STATUS_KEY = {
    "training": "TrainingJobStatus",
    "transform": "TransformJobStatus",
    "tuning": "HyperParameterTuningJobStatus",
}
log = logging.getLogger("local_sagemaker")
TRAINING_COUNTERS = ("Completed", "InProgress", "RetryableError", "NonRetryableError", "Stopped")
TUNING_NAME_LIMIT = 32


class Launcher:
    """The job launcher process (`worker.py`): started on the first job, restarted if it dies.
    Forking the threaded server itself would be unsafe, and a fresh interpreter per job would
    spend 1.5 s importing xgboost."""

    def __init__(self) -> None:
        self.process: subprocess.Popen[str] | None = None
        self.lock = threading.Lock()

    def warm(self) -> None:
        with self.lock:
            if self.process is None or self.process.poll() is not None:
                self.process = subprocess.Popen(
                    [sys.executable, "-m", "manager.local_sagemaker.worker"],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    text=True,
                    start_new_session=True,
                )

    def spawn(self, kind: str, spec: dict[str, Any], events: Path) -> int:
        self.warm()
        with self.lock:
            assert self.process is not None and self.process.stdin and self.process.stdout
            self.process.stdin.write(json.dumps({"kind": kind, "spec": spec, "events": str(events)}) + "\n")
            self.process.stdin.flush()
            answer = self.process.stdout.readline()
        if not answer:
            raise RuntimeError("the job launcher exited")
        return int(json.loads(answer)["pid"])

    def close(self) -> None:
        with self.lock:
            if self.process is not None:
                if self.process.stdin:
                    self.process.stdin.close()
                try:
                    self.process.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                self.process = None


def _terminate(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _s3_uri(field: str, value: Any) -> str:
    uri = str(value or "")
    problem = s3_problem(uri) if uri.startswith("s3://") else "must be an s3:// URI"
    if problem is not None:
        raise validation(f"{field} {value!r}: {problem}")
    return uri


class Jobs:
    def __init__(
        self,
        region: str,
        state_dir: Path,
        s3_root: Path,
        logs: LogStore,
        model_lookup: Callable[[str], dict[str, Any]],
        tag: Callable[[str, list[dict[str, str]]], None],
        seed: int | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.clock = clock  # the host's: timestamps and MaxRuntimeInSeconds follow it
        self.region = region
        self.state_dir = state_dir
        self.s3_root = s3_root
        self.logs = logs
        self.model_lookup = model_lookup
        self.tag = tag
        self.rng = random.Random(seed)
        self.training: dict[str, dict[str, Any]] = {}
        self.transform: dict[str, dict[str, Any]] = {}
        self.tuning: dict[str, dict[str, Any]] = {}
        self.lock = threading.RLock()
        self.slots = threading.BoundedSemaphore(max(1, os.cpu_count() or 1))
        self.stopping: set[str] = set()
        self.closed = threading.Event()
        self.threads: list[threading.Thread] = []
        self.launcher = Launcher()
        self._restore()

    def arn(self, kind: str, name: str) -> str:
        return sagemaker_arn(self.region, kind, name)

    # ---- persistence ------------------------------------------------------------------------------

    def _file(self) -> Path:
        return self.state_dir / "jobs.json"

    def save(self) -> None:
        """From every job's thread: the snapshot and its write under one lock, so an older snapshot
        never lands after a newer one."""
        with self.lock:
            text = json.dumps(
                {"training": self.training, "transform": self.transform, "tuning": self.tuning}, default=str
            )
            atomic_write(self._file(), text)

    def _restore(self) -> None:
        try:
            data = json.loads(self._file().read_text())
        except (OSError, ValueError):
            return
        now = self.clock()
        for kind, status_key in STATUS_KEY.items():
            table = getattr(self, kind)
            for name, job in data.get(kind, {}).items():
                if job[status_key] not in FINAL:
                    job[status_key] = "Failed"
                    job["FailureReason"] = "The local SageMaker stopped while this job ran"
                    job["LastModifiedTime"] = now
                    if kind == "training":
                        self._secondary(job, "Failed", job["FailureReason"], now)
                table[name] = job

    # ---- shared --------------------------------------------------------------------------------------

    def _s3_files(self, uri: str) -> list[Path]:
        """The objects under an S3 prefix that Create* already checked."""
        path = resolve_uri(uri, self.s3_root)
        files = channel_files(path)
        bucket = uri[5:].split("/", 1)[0]
        if not files:
            raise JobInputError(
                f'ClientError: No S3 objects found under S3 URL "{uri}" given in input data source. Please '
                f"ensure that the bucket exists in the selected region ({self.region}), that objects exist "
                'under that S3 prefix, and that the role has "s3:ListBucket" permissions on bucket '
                f'"{bucket}".'
            )
        return files

    @staticmethod
    def _secondary(job: dict[str, Any], status: str, message: str, now: float) -> None:
        transitions = job.setdefault("SecondaryStatusTransitions", [])
        if transitions and "EndTime" not in transitions[-1]:
            transitions[-1]["EndTime"] = now
        transitions.append({"Status": status, "StartTime": now, "StatusMessage": message})
        if status in ("Completed", "Failed", "Stopped", "MaxRuntimeExceeded"):
            transitions[-1]["EndTime"] = now
        job["SecondaryStatus"] = status
        job["LastModifiedTime"] = now

    def _run(
        self,
        kind: str,
        name: str,
        spec: dict[str, Any],
        stream: tuple[str, str],
        on_status: Callable[[str, str], None],
        deadline_seconds: float | None,
    ) -> tuple[str, Any]:
        """Run one worker to its end: ("done", result), ("failed", reason) or ("stopped", why)."""
        while not self.slots.acquire(timeout=0.1):
            if name in self.stopping or self.closed.is_set():
                return "stopped", "Stopped"
        try:
            if name in self.stopping or self.closed.is_set():
                return "stopped", "Stopped"
            events = self.state_dir / "job-events" / f"{kind}-{name}-{time.time_ns()}.jsonl"
            events.parent.mkdir(parents=True, exist_ok=True)
            events.touch()
            try:
                pid = self.launcher.spawn(kind, spec, events)
            except (OSError, RuntimeError, ValueError) as exc:
                return "failed", f"InternalServerError: cannot start the job's worker: {exc}"
            started = self.clock()
            group, stream_name = stream
            outcome: tuple[str, Any] | None = None
            with events.open() as feed:
                buffer = ""
                while True:
                    alive = _alive(pid)
                    chunk = feed.read()
                    buffer += chunk
                    *lines, buffer = buffer.split("\n")
                    for line in lines:
                        message = json.loads(line)
                        if message[0] == "log":
                            self.logs.write(group, stream_name, [message[1]])
                        elif message[0] == "status":
                            with self.lock:
                                on_status(message[1], message[2])
                            self.save()
                        else:
                            outcome = (message[0], message[1])
                            if message[0] == "failed":
                                self.logs.write(group, stream_name, [message[1]])
                    if outcome is not None or (not alive and not chunk):
                        break
                    if not alive:
                        continue  # read what it wrote before it ended
                    if name in self.stopping or self.closed.is_set():
                        _terminate(pid)
                        outcome = ("stopped", "Stopped")
                        break
                    if deadline_seconds is not None and self.clock() - started > deadline_seconds:
                        _terminate(pid)
                        outcome = ("stopped", "MaxRuntimeExceeded")
                        break
                    if not chunk:
                        time.sleep(0.01)
            events.unlink(missing_ok=True)
            return outcome or ("failed", "AlgorithmError: the worker ended without a result")
        finally:
            self.slots.release()

    def _thread(self, work: Callable[[], None], kind: str, job: dict[str, Any]) -> None:
        """Run a job's life in its own thread. A bug there fails the job, with the reason, rather
        than leaving it InProgress for ever."""
        status_key = STATUS_KEY[kind]

        def guarded() -> None:
            try:
                work()
            except Exception as exc:  # any bug: the job must still end, and say why
                log.exception("%s job failed inside the host", kind)
                reason = f"InternalServerError: {type(exc).__name__}: {exc}"
                with self.lock:
                    if job[status_key] not in FINAL:
                        job[status_key] = "Failed"
                        job["FailureReason"] = reason
                        if kind == "training":
                            self._secondary(job, "Failed", reason, self.clock())
                with contextlib.suppress(Exception):
                    self.save()

        name = job.get("TrainingJobName") or job.get("TransformJobName") or job["HyperParameterTuningJobName"]
        thread = threading.Thread(target=guarded, name=f"{kind}-{name}", daemon=True)
        self.threads.append(thread)
        thread.start()

    def close(self) -> None:
        self.closed.set()
        for thread in self.threads:
            thread.join(timeout=10)
        self.launcher.close()

    # ---- training jobs -------------------------------------------------------------------------------

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
        output = _s3_uri(
            "OutputDataConfig.S3OutputPath", (req.get("OutputDataConfig") or {}).get("S3OutputPath")
        )
        resources = req.get("ResourceConfig") or {}
        check_instance_type(
            "TrainingInstanceType", "resourceConfig.instanceType", resources.get("InstanceType")
        )
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
                    f"channel {channel.get('ChannelName')}: the local SageMaker reads uncompressed "
                    "channels only"
                )
            _s3_uri(f"channel {channel.get('ChannelName')}: S3Uri", source.get("S3Uri"))
        arn = self.arn("training-job", name)
        now = self.clock()
        artifact = f"{output.rstrip('/')}/{name}/output/model.tar.gz"
        job: dict[str, Any] = {
            "TrainingJobName": name,
            "TrainingJobArn": arn,
            "TrainingJobStatus": "InProgress",
            "SecondaryStatus": "Starting",
            "AlgorithmSpecification": {**algorithm, "TrainingInputMode": mode},
            "RoleArn": req["RoleArn"],
            "InputDataConfig": channels,
            "OutputDataConfig": {"KmsKeyId": "", **req["OutputDataConfig"]},
            "ResourceConfig": {"InstanceCount": 1, **resources},
            "StoppingCondition": {**stopping, "MaxRuntimeInSeconds": max_runtime},
            "HyperParameters": hyperparameters,
            "CreationTime": now,
            "LastModifiedTime": now,
            "SecondaryStatusTransitions": [],
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
        with self.lock:
            out = json.loads(json.dumps(job))
        out.pop("_nthread", None)
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
        with self.lock:
            if job["TrainingJobStatus"] != "InProgress":
                return
            self.stopping.add(job["TrainingJobName"])
            job["TrainingJobStatus"] = "Stopping"
            self._secondary(job, "Stopping", "Stopping the training job", self.clock())
        self.save()

    def op_ListTrainingJobs(self, req: dict[str, Any]) -> dict[str, Any]:
        rows = [
            {
                "TrainingJobName": j["TrainingJobName"],
                "TrainingJobArn": j["TrainingJobArn"],
                "CreationTime": j["CreationTime"],
                "TrainingEndTime": j.get("TrainingEndTime"),
                "LastModifiedTime": j["LastModifiedTime"],
                "TrainingJobStatus": j["TrainingJobStatus"],
                "SecondaryStatus": j["SecondaryStatus"],
            }
            for j in list(self.training.values())
        ]
        return page(
            req,
            rows,
            "TrainingJobSummaries",
            sorted_by("TrainingJobName", "TrainingJobStatus"),
            status_key="TrainingJobStatus",
        )

    # ---- tuning jobs ------------------------------------------------------------------------------------

    def op_CreateHyperParameterTuningJob(self, req: dict[str, Any]) -> dict[str, Any]:
        name = check_name(
            "hyperParameterTuningJobName", req.get("HyperParameterTuningJobName"), TUNING_NAME_LIMIT
        )
        if find(self.tuning, name):
            raise AwsError(
                "ResourceInUse",
                f"Hyperparameter tuning job {self.arn('hyper-parameter-tuning-job', name)} already exists",
            )
        config = req.get("HyperParameterTuningJobConfig") or {}
        definition = req.get("TrainingJobDefinition")
        if not definition:
            raise validation(
                "TrainingJobDefinition is required (TrainingJobDefinitions is not supported here)"
            )
        plan = tuning.Plan.from_config(config, name)
        static = definition.get("StaticHyperParameters") or {}
        overlap = sorted(set(static) & set(plan.names))
        if overlap:
            raise validation(f"Hyperparameters {overlap} are both static and tuned")
        algorithm = definition.get("AlgorithmSpecification") or {}
        if not is_xgboost_image(algorithm.get("TrainingImage")):
            raise validation(
                f"TrainingImage {algorithm.get('TrainingImage')!r}: the local SageMaker runs the "
                "built-in XGBoost algorithm only"
            )
        now = self.clock()
        arn = self.arn("hyper-parameter-tuning-job", name)
        job = {
            "HyperParameterTuningJobName": name,
            "HyperParameterTuningJobArn": arn,
            "HyperParameterTuningJobConfig": config,
            "TrainingJobDefinition": definition,
            "HyperParameterTuningJobStatus": "InProgress",
            "CreationTime": now,
            "LastModifiedTime": now,
            "TrainingJobStatusCounters": dict.fromkeys(TRAINING_COUNTERS, 0),
            "ObjectiveStatusCounters": {"Succeeded": 0, "Pending": 0, "Failed": 0},
            "_jobs": [],
        }
        if req.get("WarmStartConfig"):
            raise validation("WarmStartConfig is not supported by the local SageMaker")
        if req.get("Tags"):  # refused before the job exists, or kept with it
            self.tag(arn, req["Tags"])
        with self.lock:
            self.tuning[name] = job
        self.save()
        self._thread(lambda: self._tune(name, plan), "tuning", job)
        return {"HyperParameterTuningJobArn": arn}

    def _tune(self, name: str, plan: tuning.Plan) -> None:
        job = self.tuning[name]
        definition = job["TrainingJobDefinition"]
        limits = job["HyperParameterTuningJobConfig"].get("ResourceLimits") or {}
        total = plan.size() if plan.strategy == "Grid" else int(limits.get("MaxNumberOfTrainingJobs", 1))
        parallel = max(1, int(limits.get("MaxParallelTrainingJobs", 1)))
        nthread = max(1, (os.cpu_count() or 1) // min(parallel, os.cpu_count() or 1))
        # Newer SDKs send HyperParameterTuningResourceConfig (one instance type here) for ResourceConfig.
        tuning_resources = definition.get("HyperParameterTuningResourceConfig") or {}
        resources = definition.get("ResourceConfig") or {
            k: v
            for k, v in tuning_resources.items()
            if k in ("InstanceType", "InstanceCount", "VolumeSizeInGB")
        }
        launched: list[str] = []
        observed: list[tuple[list[float], float | None]] = []
        pending: dict[str, list[float]] = {}
        while True:
            with self.lock:
                states = {n: self.training[n]["TrainingJobStatus"] for n in launched}
            running = [n for n, s in states.items() if s not in FINAL]
            for n in list(pending):
                if states.get(n) in FINAL:
                    value = self._objective(n, plan.metric)
                    observed.append((pending.pop(n), value))
            stopping = name in self.stopping or self.closed.is_set()
            if stopping:
                for n in running:
                    self._stop_training(self.training[n])
            elif len(running) < parallel and len(launched) < total:
                point = plan.next(observed, list(pending.values()), len(launched))
                tuned = plan.decode(point)
                child = f"{name}-{len(launched) + 1:03d}-{self.rng.getrandbits(32):08x}"
                request = {
                    "AlgorithmSpecification": {
                        k: v
                        for k, v in definition["AlgorithmSpecification"].items()
                        if k != "MetricDefinitions"
                    },
                    "RoleArn": definition.get("RoleArn"),
                    "InputDataConfig": definition.get("InputDataConfig", []),
                    "OutputDataConfig": definition.get("OutputDataConfig"),
                    "ResourceConfig": resources,
                    "StoppingCondition": definition.get("StoppingCondition", {}),
                    "HyperParameters": {**(definition.get("StaticHyperParameters") or {}), **tuned},
                }
                try:
                    self.create_training(child, request, tuning_job=name, tuned=tuned, nthread=nthread)
                    launched.append(child)
                    pending[child] = point
                    job["_jobs"] = launched
                except AwsError as error:
                    self._finish_tuning(job, "Failed", f"cannot launch a training job: {error.message}")
                    return
                continue
            if not running and (len(launched) >= total or stopping):
                break
            self._count(job, launched, plan.metric)
            time.sleep(0.05)
        self._count(job, launched, plan.metric)
        if name in self.stopping or self.closed.is_set():
            self.stopping.discard(name)
            self._finish_tuning(job, "Stopped", None)
        elif job["ObjectiveStatusCounters"]["Succeeded"] == 0:
            self._finish_tuning(
                job, "Failed", "All training jobs failed. Please check the training job logs for details"
            )
        else:
            self._finish_tuning(job, "Completed", None)

    def _objective(self, name: str, metric: str) -> float | None:
        job = self.training[name]
        if job["TrainingJobStatus"] != "Completed":
            return None
        values = {m["MetricName"]: m["Value"] for m in job.get("FinalMetricDataList", [])}
        return values.get(metric)

    def _count(self, job: dict[str, Any], launched: list[str], metric: str) -> None:
        counters = dict.fromkeys(TRAINING_COUNTERS, 0)
        objective = {"Succeeded": 0, "Pending": 0, "Failed": 0}
        best: tuple[float, str] | None = None
        sign = (
            1.0
            if job["HyperParameterTuningJobConfig"]["HyperParameterTuningJobObjective"]["Type"] == "Maximize"
            else -1.0
        )
        with self.lock:
            for n in launched:
                status = self.training[n]["TrainingJobStatus"]
                key = {"Failed": "NonRetryableError", "Stopping": "InProgress"}.get(status, status)
                counters[key] += 1
                value = self._objective(n, metric)
                if status not in FINAL:
                    objective["Pending"] += 1
                elif value is None:
                    objective["Failed"] += 1
                else:
                    objective["Succeeded"] += 1
                    if best is None or sign * value > best[0]:
                        best = (sign * value, n)
            job["TrainingJobStatusCounters"] = counters
            job["ObjectiveStatusCounters"] = objective
            if best is not None:
                job["BestTrainingJob"] = self._summary(best[1], metric)
            job["LastModifiedTime"] = self.clock()

    def _summary(self, name: str, metric: str) -> dict[str, Any]:
        t = self.training[name]
        value = self._objective(name, metric)
        out = {
            "TrainingJobName": name,
            "TrainingJobArn": t["TrainingJobArn"],
            "TuningJobName": t["TuningJobArn"].rsplit("/", 1)[-1] if "TuningJobArn" in t else None,
            "CreationTime": t["CreationTime"],
            "TrainingStartTime": t.get("TrainingStartTime"),
            "TrainingEndTime": t.get("TrainingEndTime"),
            "TrainingJobStatus": t["TrainingJobStatus"],
            "TunedHyperParameters": t.get("_tuned", {}),
            "ObjectiveStatus": "Pending"
            if t["TrainingJobStatus"] not in FINAL
            else ("Failed" if value is None else "Succeeded"),
        }
        if value is not None:
            out["FinalHyperParameterTuningJobObjectiveMetric"] = {"MetricName": metric, "Value": value}
        if t.get("FailureReason"):
            out["FailureReason"] = t["FailureReason"]
        return {k: v for k, v in out.items() if v is not None}

    def _finish_tuning(self, job: dict[str, Any], status: str, reason: str | None) -> None:
        now = self.clock()
        with self.lock:
            job["HyperParameterTuningJobStatus"] = status
            job["HyperParameterTuningEndTime"] = now
            job["LastModifiedTime"] = now
            if reason:
                job["FailureReason"] = reason
        self.save()

    def _tuning_job(self, name: Any) -> dict[str, Any]:
        job = find(self.tuning, name)
        if job is None:
            raise AwsError("ResourceNotFound", f"Amazon SageMaker can't find a tuning job with name {name}")
        return job

    def op_DescribeHyperParameterTuningJob(self, req: dict[str, Any]) -> dict[str, Any]:
        job = self._tuning_job(req.get("HyperParameterTuningJobName"))
        with self.lock:
            out = json.loads(json.dumps({k: v for k, v in job.items() if not k.startswith("_")}))
        result: dict[str, Any] = wire_times(out)
        return result

    def op_StopHyperParameterTuningJob(self, req: dict[str, Any]) -> dict[str, Any]:
        job = self._tuning_job(req.get("HyperParameterTuningJobName"))
        if job["HyperParameterTuningJobStatus"] != "InProgress":
            raise validation(
                "The request was rejected because the tuning job is in status "
                f"{job['HyperParameterTuningJobStatus']}."
            )
        with self.lock:
            self.stopping.add(job["HyperParameterTuningJobName"])
            job["HyperParameterTuningJobStatus"] = "Stopping"
        self.save()
        return {}

    def op_ListHyperParameterTuningJobs(self, req: dict[str, Any]) -> dict[str, Any]:
        rows = [
            {
                "HyperParameterTuningJobName": j["HyperParameterTuningJobName"],
                "HyperParameterTuningJobArn": j["HyperParameterTuningJobArn"],
                "HyperParameterTuningJobStatus": j["HyperParameterTuningJobStatus"],
                "Strategy": j["HyperParameterTuningJobConfig"].get("Strategy"),
                "CreationTime": j["CreationTime"],
                "HyperParameterTuningEndTime": j.get("HyperParameterTuningEndTime"),
                "LastModifiedTime": j["LastModifiedTime"],
                "TrainingJobStatusCounters": j["TrainingJobStatusCounters"],
                "ObjectiveStatusCounters": j["ObjectiveStatusCounters"],
                "ResourceLimits": j["HyperParameterTuningJobConfig"].get("ResourceLimits"),
            }
            for j in list(self.tuning.values())
        ]
        return page(
            req,
            rows,
            "HyperParameterTuningJobSummaries",
            sorted_by("HyperParameterTuningJobName", "HyperParameterTuningJobStatus"),
            status_key="HyperParameterTuningJobStatus",
        )

    def op_ListTrainingJobsForHyperParameterTuningJob(self, req: dict[str, Any]) -> dict[str, Any]:
        job = self._tuning_job(req.get("HyperParameterTuningJobName"))
        metric = job["HyperParameterTuningJobConfig"]["HyperParameterTuningJobObjective"]["MetricName"]
        with self.lock:
            rows = [self._summary(n, metric) for n in job.get("_jobs", [])]
        sorts = {
            **sorted_by("TrainingJobName", "TrainingJobStatus"),
            "FinalObjectiveMetricValue": lambda r: r.get(
                "FinalHyperParameterTuningJobObjectiveMetric", {}
            ).get("Value", float("-inf")),
        }
        return page(
            req,
            rows,
            "TrainingJobSummaries",
            sorts,
            status_key="TrainingJobStatus",
            default_sort="Name",
        )

    # ---- batch transform --------------------------------------------------------------------------------

    def op_CreateTransformJob(self, req: dict[str, Any]) -> dict[str, Any]:
        name = check_name("transformJobName", req.get("TransformJobName"))
        if find(self.transform, name):
            raise AwsError(
                "ResourceInUse",
                "Job name must be unique within an AWS account and region, and a job with this name "
                f"already exists ({self.arn('transform-job', name)})",
            )
        model_name = str(req.get("ModelName", ""))
        model = self.model_lookup(model_name)
        source = ((req.get("TransformInput") or {}).get("DataSource") or {}).get("S3DataSource") or {}
        _s3_uri("TransformInput.DataSource.S3DataSource.S3Uri", source.get("S3Uri"))
        if source.get("S3DataType", "S3Prefix") != "S3Prefix":
            raise validation("the local SageMaker reads S3DataType S3Prefix only")
        transform_input = req["TransformInput"]
        split = transform_input.get("SplitType", "None")
        if split not in ("None", "Line"):
            raise validation(
                f"SplitType {split!r}: the local SageMaker splits by Line or not at all (RecordIO and "
                "TFRecord are not supported)"
            )
        if transform_input.get("CompressionType", "None") != "None":
            raise validation("the local SageMaker reads uncompressed transform input only")
        output = req.get("TransformOutput") or {}
        _s3_uri("TransformOutput.S3OutputPath", output.get("S3OutputPath"))
        assemble = output.get("AssembleWith", "None")
        if assemble not in ("None", "Line"):
            raise validation(f"AssembleWith {assemble!r} must be one of [None, Line]")
        strategy = req.get("BatchStrategy", "MultiRecord" if split == "Line" else "SingleRecord")
        if strategy not in ("MultiRecord", "SingleRecord"):
            raise validation(f"BatchStrategy {strategy!r} must be one of [MultiRecord, SingleRecord]")
        max_payload = int(req.get("MaxPayloadInMB", 6))
        if not 0 <= max_payload <= 100:
            raise validation("MaxPayloadInMB must be between 0 and 100")
        processing = req.get("DataProcessing") or {}
        if (
            processing.get("InputFilter", "$") != "$"
            or processing.get("OutputFilter", "$") != "$"
            or processing.get("JoinSource", "None") != "None"
        ):
            raise validation(
                "DataProcessing (input/output filters, JoinSource) is not supported by the local SageMaker"
            )
        resources = req.get("TransformResources") or {}
        check_instance_type(
            "TransformInstanceType", "transformResources.instanceType", resources.get("InstanceType")
        )
        now = self.clock()
        arn = self.arn("transform-job", name)
        job = {
            "TransformJobName": name,
            "TransformJobArn": arn,
            "TransformJobStatus": "InProgress",
            "ModelName": model_name,
            "MaxConcurrentTransforms": int(req.get("MaxConcurrentTransforms", 1)),
            "MaxPayloadInMB": max_payload,
            "BatchStrategy": strategy,
            "Environment": req.get("Environment") or {},
            "TransformInput": {"SplitType": split, "CompressionType": "None", **transform_input},
            "TransformOutput": {"AssembleWith": assemble, **output},
            "TransformResources": resources,
            "CreationTime": now,
            "LastModifiedTime": now,
        }
        if processing:
            job["DataProcessing"] = processing
        if req.get("Tags"):  # refused before the job exists, or kept with it
            self.tag(arn, req["Tags"])
        with self.lock:
            self.transform[name] = job
        self.save()
        self._thread(lambda: self._transform(name, model), "transform", job)
        return {"TransformJobArn": arn}

    def _transform(self, name: str, model: dict[str, Any]) -> None:
        job = self.transform[name]
        stream = (TRANSFORM_LOGS, f"{name}/i-{abs(hash(name)) % 16**8:08x}-{int(job['CreationTime'])}")
        served = container(model)
        try:
            uri = job["TransformInput"]["DataSource"]["S3DataSource"]["S3Uri"]
            files = self._s3_files(uri)
            base = resolve_uri(uri, self.s3_root)
            root = base if base.is_dir() else base.parent
            out_root = resolve_uri(job["TransformOutput"]["S3OutputPath"].rstrip("/") + "/", self.s3_root)
            pairs = [(str(f), str(out_root / f"{f.relative_to(root)}.out")) for f in files]
            with self.lock:
                job["TransformStartTime"] = self.clock()
            spec = {
                "model_name": model["ModelName"],
                "model_data_url": served.get("ModelDataUrl"),
                "image": served.get("Image"),
                "environment": {**(served.get("Environment") or {}), **job["Environment"]},
                "s3_root": str(self.s3_root),
                "cache": str(self.state_dir / "artifacts"),
                "content_type": job["TransformInput"].get("ContentType", "text/csv"),
                "accept": job["TransformOutput"].get("Accept"),
                "split_type": job["TransformInput"]["SplitType"],
                "assemble_with": job["TransformOutput"]["AssembleWith"],
                "batch_strategy": job["BatchStrategy"],
                "max_payload_mb": job["MaxPayloadInMB"] or 100,
                "files": pairs,
            }
            if not spec["model_data_url"]:
                raise JobInputError(f"ClientError: model {model['ModelName']} has no ModelDataUrl")
            outcome = self._run("transform", name, spec, stream, lambda *_: None, None)
        except (JobInputError, ArtifactError, AwsError) as exc:
            outcome = ("failed", str(exc) if isinstance(exc, JobInputError) else f"ClientError: {exc}")
            self.logs.write(*stream, [outcome[1]])
        now = self.clock()
        with self.lock:
            job.setdefault("TransformStartTime", now)
            job["TransformEndTime"] = now
            job["LastModifiedTime"] = now
            if outcome[0] == "done":
                job["TransformJobStatus"] = "Completed"
            elif outcome[0] == "stopped":
                job["TransformJobStatus"] = "Stopped"
                self.stopping.discard(name)
            else:
                job["TransformJobStatus"] = "Failed"
                job["FailureReason"] = outcome[1]
        self.save()

    def _transform_job(self, name: Any) -> dict[str, Any]:
        job = find(self.transform, name)
        if job is None:
            raise validation(f"Could not find requested job with name {name}")
        return job

    def op_DescribeTransformJob(self, req: dict[str, Any]) -> dict[str, Any]:
        job = self._transform_job(req.get("TransformJobName"))
        with self.lock:
            out = json.loads(json.dumps(job))
        out.pop("LastModifiedTime", None)  # kept for ListTransformJobs; not in DescribeTransformJob's shape
        result: dict[str, Any] = wire_times(out)
        return result

    def op_StopTransformJob(self, req: dict[str, Any]) -> dict[str, Any]:
        job = self._transform_job(req.get("TransformJobName"))
        if job["TransformJobStatus"] == "InProgress":
            with self.lock:
                self.stopping.add(job["TransformJobName"])
                job["TransformJobStatus"] = "Stopping"
            self.save()
        return {}

    def op_ListTransformJobs(self, req: dict[str, Any]) -> dict[str, Any]:
        rows = [
            {
                "TransformJobName": j["TransformJobName"],
                "TransformJobArn": j["TransformJobArn"],
                "CreationTime": j["CreationTime"],
                "TransformEndTime": j.get("TransformEndTime"),
                "LastModifiedTime": j["LastModifiedTime"],
                "TransformJobStatus": j["TransformJobStatus"],
                "FailureReason": j.get("FailureReason"),
            }
            for j in list(self.transform.values())
        ]
        return page(
            req,
            rows,
            "TransformJobSummaries",
            sorted_by("TransformJobName", "TransformJobStatus"),
            status_key="TransformJobStatus",
        )


class JobInputError(Exception):
    """A job cannot read its input: the message is the whole FailureReason."""
