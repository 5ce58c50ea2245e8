"""Hyperparameter tuning jobs: training jobs launched `MaxParallelTrainingJobs` at a time, their
hyperparameters chosen by the job's strategy (`tuning.py`)."""

from __future__ import annotations

import os
import time
from typing import Any

from manager.local_sagemaker import tuning
from manager.local_sagemaker.book import find
from manager.local_sagemaker.job_runner import (
    FINAL,
    TRAINING_COUNTERS,
    TUNING_NAME_LIMIT,
)
from manager.local_sagemaker.listing import page, sorted_by
from manager.local_sagemaker.protocol import (
    AwsError,
    check_name,
    validation,
    wire_times,
)
from manager.local_sagemaker.training_jobs import TrainingJobs
from manager.local_sagemaker.xgboost_algorithm import is_xgboost_image


class TuningJobs(TrainingJobs):
    """Tuning jobs: training jobs launched by a strategy, the best one named."""

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
        result: dict[str, Any] = wire_times(self._described(job))
        return result

    def op_StopHyperParameterTuningJob(self, req: dict[str, Any]) -> dict[str, Any]:
        job = self._tuning_job(req.get("HyperParameterTuningJobName"))
        if job["HyperParameterTuningJobStatus"] != "InProgress":
            raise validation(
                "The request was rejected because the tuning job is in status "
                f"{job['HyperParameterTuningJobStatus']}."
            )
        self._ask_to_stop(job, "tuning")
        return {}

    def op_ListHyperParameterTuningJobs(self, req: dict[str, Any]) -> dict[str, Any]:
        def summary(j: dict[str, Any]) -> dict[str, Any]:
            config = j["HyperParameterTuningJobConfig"]
            return {
                "HyperParameterTuningJobName": j["HyperParameterTuningJobName"],
                "HyperParameterTuningJobArn": j["HyperParameterTuningJobArn"],
                "HyperParameterTuningJobStatus": j["HyperParameterTuningJobStatus"],
                "Strategy": config.get("Strategy"),
                "CreationTime": j["CreationTime"],
                "HyperParameterTuningEndTime": j.get("HyperParameterTuningEndTime"),
                "LastModifiedTime": j["LastModifiedTime"],
                "TrainingJobStatusCounters": j["TrainingJobStatusCounters"],
                "ObjectiveStatusCounters": j["ObjectiveStatusCounters"],
                "ResourceLimits": config.get("ResourceLimits"),
            }

        return self._listing(req, "tuning", summary)

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
