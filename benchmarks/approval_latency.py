"""From a model package's approval to its rollout's start, under a real daemon on the local SageMaker:
--approvals times, approve a version with UpdateModelPackage (as a person would), then time until the
registry holds the rollout it started (its `package.rollout` claim, read every 50 ms); abort that
rollout and wait for the endpoint to be free before the next. Each approval comes after a seeded random
pause (up to the poll interval, or the package job's tick with the queue), so approvals fall at any
point of the daemon's cycle, as people's do, rather than locked to it. Two modes in the same run: polling
ListModelPackages only (the baseline, every --poll-seconds) and the event queue (SQS, polling an hour
apart). Median, p95 and max of each, and the ratio of the medians.

    python benchmarks/approval_latency.py [--approvals 50] [--poll-seconds 30] [--tick 2]

The daemon's model package job runs every min(max(tick, 0.5), 2) seconds: at --tick 2 (or the default
15) that is every 2 s, which bounds the queue mode from above; the poll bounds the polling mode.
"""

from __future__ import annotations

import argparse
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from click.testing import CliRunner

from manager.cli.main import cli
from manager.db import Database
from manager.local_sagemaker import LocalSageMaker
from manager.platforms.sagemaker import SageMakerPlatform
from manager.registry import migrate, models, rollouts
from manager.registry import packages as claims
from manager.rollout import endpoints

POLICY = """
name: approvals
target: {endpoint: bench-prod, candidate: {model: churn, newestApproved: true}}
steps: [{setWeight: {percent: 50}}, {analysis: {}}]
metrics:
  - {name: 5xx, source: cloudwatch, measure: errors_5xx, kind: errors, higherIsBetter: false,
     role: primary, minSamples: 1000000}
trigger:
  type: modelPackageApproved
  modelPackageApproved: {group: bench-models, pollSeconds: POLL QUEUE}
"""


def _artifact(folder: Path) -> Path:
    import joblib
    from sklearn.datasets import load_breast_cancer
    from sklearn.linear_model import LogisticRegression

    x, y = load_breast_cancer(return_X_y=True)
    path = folder / "model.joblib"
    joblib.dump(LogisticRegression(max_iter=5000).fit(x, y), path)
    return path


def _wait(check: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise SystemExit(f"benchmark stuck: {what} not within {timeout:g}s")
        time.sleep(0.05)


def run_mode(
    folder: Path, artifact: Path, approvals: int, poll: float, tick: float, queue: bool, seed: int
) -> list[float]:
    db = folder / "registry.db"
    database = Database(f"sqlite:///{db}")
    migrate.upgrade(database)
    with database.write() as session:
        models.register(session, models.NewVersion("churn", str(artifact), "sklearn"), "bench")
    with LocalSageMaker(folder / "sagemaker", provision_delay=0.1, metric_bucket_seconds=1) as host:
        endpoints.create_and_wait(
            database, SageMakerPlatform(host.client("sagemaker")), "bench-prod", "churn:1", "bench", poll=0.05
        )
        sm, sqs = host.client("sagemaker"), host.client("sqs")
        sm.create_model_package_group(ModelPackageGroupName="bench-models")
        spec = {"Containers": [{"Image": "local/sklearn:1.9", "ModelDataUrl": artifact.as_uri()}]}
        url = sqs.create_queue(QueueName="approvals")["QueueUrl"] if queue else ""
        text = POLICY.replace("POLL", str(3600 if queue else poll)).replace(
            " QUEUE", f", queueUrl: '{url}'" if queue else ""
        )
        (folder / "policies").mkdir()
        (folder / "policies" / "approvals.yaml").write_text(text)
        env = {
            "AWS_ENDPOINT_URL": host.url,
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ACCESS_KEY_ID": "local",
            "AWS_SECRET_ACCESS_KEY": "local",
            "VARIANTCTL_DB": str(db),
            "PATH": "/usr/bin:/bin",
        }
        daemon = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "manager",
                "daemon",
                "--tick",
                str(tick),
                "--policies",
                str(folder / "policies"),
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=open(folder / "daemon.log", "wb"),  # noqa: SIM115
        )
        try:
            pause = min(max(tick, 0.5), 2.0) if queue else poll
            return _approve_each(database, sm, spec, approvals, db, random.Random(seed), pause)
        finally:
            daemon.terminate()
            daemon.wait(timeout=60)
            database.dispose()


def _approve_each(
    database: Database,
    sm: Any,
    spec: dict[str, Any],
    approvals: int,
    db: Path,
    rng: random.Random,
    pause: float,
) -> list[float]:
    seconds = []
    for i in range(approvals):
        arn = sm.create_model_package(ModelPackageGroupName="bench-models", InferenceSpecification=spec)[
            "ModelPackageArn"
        ]

        def started(arn: str = arn) -> int | None:
            with database.read() as session:
                claim = claims.claims(session, "approvals").get(arn)
                return claim.rollout_id if claim is not None else None

        time.sleep(rng.uniform(0, pause))
        approved_at = time.monotonic()
        sm.update_model_package(ModelPackageArn=arn, ModelApprovalStatus="Approved")
        _wait(lambda: started() is not None, 600, f"approval {i + 1}'s rollout")
        seconds.append(time.monotonic() - approved_at)
        rollout = started()
        result = CliRunner().invoke(
            cli, ["--db", str(db), "rollout", "abort", str(rollout), "--reason", "bench"]
        )
        assert result.exit_code == 0, result.output

        def free() -> bool:
            with database.read() as session:
                return rollouts.active_on(session, "bench-prod") is None

        _wait(free, 600, f"rollout {rollout} to end")
    return seconds


def _summary(name: str, values: list[float]) -> str:
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return (
        f"{name:<22} median {statistics.median(values):6.2f} s   p95 {p95:6.2f} s   max {max(values):6.2f} s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--approvals", type=int, default=50)
    parser.add_argument("--poll-seconds", type=float, default=30.0)
    parser.add_argument("--tick", type=float, default=2.0)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        artifact = _artifact(Path(tmp))
        (Path(tmp) / "poll").mkdir()
        (Path(tmp) / "queue").mkdir()
        common = (artifact, args.approvals, args.poll_seconds, args.tick)
        polled = run_mode(Path(tmp) / "poll", *common, False, args.seed)
        queued = run_mode(Path(tmp) / "queue", *common, True, args.seed)
    print(f"approval -> rollout start, {args.approvals} approvals each, daemon --tick {args.tick:g}")
    print(_summary(f"polling every {args.poll_seconds:g} s", polled) + "   (baseline)")
    print(_summary("event queue (SQS)", queued))
    print(f"median ratio queue/polling: {statistics.median(queued) / statistics.median(polled):.3f}")


if __name__ == "__main__":
    main()
