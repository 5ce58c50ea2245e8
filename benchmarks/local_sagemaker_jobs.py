"""The local SageMaker's jobs against the same work done in-process, in the same run.

* Training-job overhead: a training job (CreateTrainingJob, then DescribeTrainingJob polled every
  10 ms until Completed) against `xgboost.train` in this process on the same CSV files with the
  same hyperparameters. The job reads its channels from the local S3, trains in a forked worker,
  packs model.tar.gz and reports metrics; the overhead is the difference of the medians. Target:
  under 1 s per job. The first job, which also starts the worker process (one xgboost import), is
  reported apart.
* Tuning: a Random tuning job of 20 training jobs at MaxParallelTrainingJobs 2 against the same
  20 hyperparameter sets trained one after another in-process: the wall-clock ratio.
* Batch transform: rows/s of a transform job (SplitType Line, text/csv) against reading the same
  CSV, predicting with the same booster and writing the answers in-process.

  python benchmarks/local_sagemaker_jobs.py [--rows 5000] [--rounds 50] [--repeat 7]
                                            [--tuning-jobs 20] [--transform-rows 100000]
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import xgboost as xgb

from manager.local_sagemaker import LocalSageMaker

IMAGE = "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-xgboost:1.7-1"
ROLE = "arn:aws:iam::123456789012:role/Bench"
BUCKET = "bench"


def _csv(x: np.ndarray, y: np.ndarray | None = None) -> bytes:
    rows = x if y is None else np.column_stack([y, x])
    return "".join(",".join(f"{v:.6g}" for v in row) + "\n" for row in rows).encode()


def _params(depth: int, eta: float) -> dict[str, str]:
    return {
        "objective": "binary:logistic",
        "eval_metric": "auc",
        "max_depth": str(depth),
        "eta": f"{eta:.4f}",
    }


def _in_process(train_csv: Path, valid_csv: Path, params: dict[str, str], rounds: int) -> float:
    """What the job does, minus the job: read both CSVs, train with the validation set watched."""
    started = time.perf_counter()
    train = np.loadtxt(train_csv, delimiter=",")
    valid = np.loadtxt(valid_csv, delimiter=",")
    dtrain = xgb.DMatrix(train[:, 1:], label=train[:, 0])
    dvalid = xgb.DMatrix(valid[:, 1:], label=valid[:, 0])
    xgb.train(
        {k: v for k, v in params.items()},
        dtrain,
        rounds,
        evals=[(dtrain, "train"), (dvalid, "validation")],
        verbose_eval=False,
    )
    return time.perf_counter() - started


def _job_request(name: str, params: dict[str, str], rounds: int) -> dict[str, Any]:
    return {
        "TrainingJobName": name,
        "AlgorithmSpecification": {"TrainingImage": IMAGE, "TrainingInputMode": "File"},
        "RoleArn": ROLE,
        "HyperParameters": {**params, "num_round": str(rounds)},
        "InputDataConfig": [
            {
                "ChannelName": c,
                "ContentType": "text/csv",
                "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": f"s3://{BUCKET}/{c}/"}},
            }
            for c in ("train", "validation")
        ],
        "OutputDataConfig": {"S3OutputPath": f"s3://{BUCKET}/out"},
        "ResourceConfig": {"InstanceType": "ml.m5.large", "InstanceCount": 1, "VolumeSizeInGB": 5},
        "StoppingCondition": {"MaxRuntimeInSeconds": 3600},
    }


def _wait(describe: Any, status_key: str, poll: float = 0.01) -> dict[str, Any]:
    while True:
        described: dict[str, Any] = describe()
        if described[status_key] in ("Completed", "Failed", "Stopped"):
            if described[status_key] != "Completed":
                raise RuntimeError(f"job ended {described[status_key]}: {described.get('FailureReason')}")
            return described
        time.sleep(poll)


def _median(values: list[float]) -> float:
    return statistics.median(values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--tuning-jobs", type=int, default=20)
    parser.add_argument("--transform-rows", type=int, default=100_000)
    args = parser.parse_args()
    rng = np.random.default_rng(5)
    x = rng.normal(size=(args.rows, 10))
    y = ((x[:, 0] - x[:, 1] + 0.5 * x[:, 2] * x[:, 3] + rng.normal(scale=0.7, size=args.rows)) > 0).astype(
        float
    )
    cut = int(args.rows * 0.8)
    print(f"machine: {os.cpu_count()} cores; {args.rows} rows x 10 features, {args.rounds} rounds")

    with tempfile.TemporaryDirectory(prefix="variantctl-bench-jobs-") as tmp:
        root = Path(tmp)
        train_csv, valid_csv = root / "train.csv", root / "valid.csv"
        train_csv.write_bytes(_csv(x[:cut], y[:cut]))
        valid_csv.write_bytes(_csv(x[cut:], y[cut:]))
        with LocalSageMaker(root / "state", provision_delay=0.0, seed=5) as host:
            s3, sm = host.client("s3"), host.client("sagemaker")
            s3.create_bucket(Bucket=BUCKET)
            s3.upload_file(str(train_csv), BUCKET, "train/part.csv")
            s3.upload_file(str(valid_csv), BUCKET, "validation/part.csv")

            # ---- training-job overhead ---------------------------------------------------------------
            params = _params(4, 0.2)
            in_process = [_in_process(train_csv, valid_csv, params, args.rounds) for _ in range(args.repeat)]
            jobs = []
            for i in range(args.repeat + 1):
                started = time.perf_counter()
                sm.create_training_job(**_job_request(f"overhead-{i}", params, args.rounds))
                _wait(
                    lambda i=i: sm.describe_training_job(TrainingJobName=f"overhead-{i}"), "TrainingJobStatus"
                )
                jobs.append(time.perf_counter() - started)
            first, rest = jobs[0], jobs[1:]
            overhead = _median(rest) - _median(in_process)
            print("\ntraining job vs in-process xgboost.train (same CSVs, same hyperparameters)")
            print(
                f"  in-process (baseline)  median {_median(in_process) * 1000:7.1f} ms  (n={len(in_process)})"
            )
            print(f"  training job           median {_median(rest) * 1000:7.1f} ms  (n={len(rest)})")
            print(f"  first job (starts the worker)  {first * 1000:7.1f} ms")
            print(
                f"  overhead per job       {overhead * 1000:7.1f} ms (target < 1000)   "
                f"ratio x{_median(rest) / _median(in_process):.2f}"
            )

            # ---- tuning: N jobs at parallelism 2 against N sequential in-process trainings -------------
            sets = [
                _params(int(rng.integers(2, 7)), float(np.exp(rng.uniform(np.log(0.05), np.log(0.5)))))
                for _ in range(args.tuning_jobs)
            ]
            started = time.perf_counter()
            for p in sets:
                _in_process(train_csv, valid_csv, p, args.rounds)
            sequential = time.perf_counter() - started
            started = time.perf_counter()
            sm.create_hyper_parameter_tuning_job(
                HyperParameterTuningJobName="bench-tune",
                HyperParameterTuningJobConfig={
                    "Strategy": "Random",
                    "HyperParameterTuningJobObjective": {"Type": "Maximize", "MetricName": "validation:auc"},
                    "ResourceLimits": {
                        "MaxNumberOfTrainingJobs": args.tuning_jobs,
                        "MaxParallelTrainingJobs": 2,
                    },
                    "ParameterRanges": {
                        "IntegerParameterRanges": [{"Name": "max_depth", "MinValue": "2", "MaxValue": "6"}],
                        "ContinuousParameterRanges": [
                            {
                                "Name": "eta",
                                "MinValue": "0.05",
                                "MaxValue": "0.5",
                                "ScalingType": "Logarithmic",
                            }
                        ],
                    },
                },
                TrainingJobDefinition={
                    k: v
                    for k, v in _job_request("unused", {}, args.rounds).items()
                    if k not in ("TrainingJobName", "HyperParameters")
                }
                | {
                    "StaticHyperParameters": {
                        "objective": "binary:logistic",
                        "eval_metric": "auc",
                        "num_round": str(args.rounds),
                    }
                },
            )
            _wait(
                lambda: sm.describe_hyper_parameter_tuning_job(HyperParameterTuningJobName="bench-tune"),
                "HyperParameterTuningJobStatus",
            )
            tuned = time.perf_counter() - started
            print(
                f"\ntuning: {args.tuning_jobs} training jobs, 2 at a time, "
                "vs the same number in-process one by one"
            )
            print(f"  in-process sequential (baseline) {sequential:6.2f} s")
            print(
                f"  tuning job, parallelism 2        {tuned:6.2f} s   "
                f"ratio x{tuned / sequential:.2f} of the baseline"
            )

            # ---- batch transform rows/s ----------------------------------------------------------------
            xt = rng.normal(size=(args.transform_rows, 10))
            test_csv = root / "test.csv"
            test_csv.write_bytes(_csv(xt))
            s3.upload_file(str(test_csv), BUCKET, "batch/test.csv")
            artifact = sm.describe_training_job(TrainingJobName="overhead-1")["ModelArtifacts"][
                "S3ModelArtifacts"
            ]
            blob = s3.get_object(Bucket=BUCKET, Key=artifact.split(f"s3://{BUCKET}/", 1)[1])["Body"].read()
            with tarfile.open(fileobj=io.BytesIO(blob)) as archive:
                raw = archive.extractfile("xgboost-model").read()  # type: ignore[union-attr]
            booster = xgb.Booster()
            booster.load_model(bytearray(raw))
            local_times = []
            for _ in range(3):
                started = time.perf_counter()
                rows = np.loadtxt(test_csv, delimiter=",")
                scores = booster.predict(xgb.DMatrix(rows))
                (root / "scores.out").write_text("".join(f"{v}\n" for v in scores))
                local_times.append(time.perf_counter() - started)
            sm.create_model(
                ModelName="bench",
                PrimaryContainer={"Image": IMAGE, "ModelDataUrl": artifact},
                ExecutionRoleArn=ROLE,
            )
            transform_times = []
            for i in range(3):
                started = time.perf_counter()
                sm.create_transform_job(
                    TransformJobName=f"bench-{i}",
                    ModelName="bench",
                    TransformInput={
                        "DataSource": {
                            "S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": f"s3://{BUCKET}/batch/"}
                        },
                        "ContentType": "text/csv",
                        "SplitType": "Line",
                    },
                    TransformOutput={"S3OutputPath": f"s3://{BUCKET}/scored-{i}/", "AssembleWith": "Line"},
                    TransformResources={"InstanceType": "ml.m5.large", "InstanceCount": 1},
                    BatchStrategy="MultiRecord",
                    MaxPayloadInMB=6,
                )
                _wait(
                    lambda i=i: sm.describe_transform_job(TransformJobName=f"bench-{i}"), "TransformJobStatus"
                )
                transform_times.append(time.perf_counter() - started)
            n = args.transform_rows
            print(f"\nbatch transform of {n} CSV rows vs in-process read + predict + write (medians of 3)")
            print(f"  in-process (baseline)  {n / _median(local_times):10,.0f} rows/s")
            print(
                f"  transform job          {n / _median(transform_times):10,.0f} rows/s   "
                f"ratio x{_median(local_times) / _median(transform_times):.2f} of the baseline's speed"
            )


if __name__ == "__main__":
    main()
