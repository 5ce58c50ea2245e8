"""Replay throughput against the local SageMaker: replayed requests per second end to end (read the
capture and the labels, plan, invoke the candidate with TargetVariant, store each pair and its sums),
against raw invocation throughput in the same run (the same request bodies, the same number of
threads, boto3's invoke_endpoint and nothing else). Medians of --repeat runs; the ratio is replay
over raw. Target (issue 15): at least 500 replayed requests/s.

The local SageMaker runs as its own process (`variantctl local serve`), as a daemon meets it; with
--in-process it shares this process (and its GIL) with the client, as the tests run it.

    python benchmarks/replay_throughput.py [--requests 5000] [--repeat 3] [--workers 8]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sqlalchemy import delete, update

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from manager import policy as policies
from manager.db import Database
from manager.demo.loadgen import LabelWriter, Traffic
from manager.local_sagemaker import LocalSageMaker
from manager.platforms.sagemaker import SageMakerPlatform
from manager.registry import migrate, models
from manager.registry.tables import PairedSum, ReplayRequest, Rollout
from manager.rollout import endpoints, launch
from manager.rollout.reconcile import Reconciler
from manager.rollout.replay import Replayer

POLICY = """
name: bench-replay
target:
  endpoint: bench
  candidateVariant: candidate
  candidate: {model: m, version: 2}
  captureDestination: CAPTURE
  groundTruth: LABELS
labelsIndependentOfServing: true
steps:
  - replay: {requests: REQUESTS, window: 1d, maxRequestsPerSecond: 10000}
  - analysis: {}
metrics:
  - {name: accuracy, source: quality, measure: accuracy, kind: proportion, higherIsBetter: true,
     role: primary, minSamples: 1000000000}
"""


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--in-process", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        run(Path(tmp), args.requests, args.repeat, args.workers, args.in_process)


class _Served:
    """The local SageMaker in a process of its own, with boto3 clients aimed at it."""

    def __init__(self, root: Path) -> None:
        import subprocess

        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "manager",
                "local-sagemaker",
                "serve",
                "--state-dir",
                str(root),
                "--provision-delay",
                "0.1",
                "--metric-bucket-seconds",
                "1",
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        first = self.process.stdout.readline()
        if " listening on " not in first:
            raise SystemExit(f"the local SageMaker did not start: {first!r} (exit {self.process.wait()})")
        self.url = first.split(" listening on ")[1].split(" ")[0]

    def client(self, service: str) -> Any:
        import boto3
        from botocore.config import Config

        return boto3.client(
            service,
            endpoint_url=self.url,
            region_name="us-east-1",
            aws_access_key_id="local",
            aws_secret_access_key="local",
            config=Config(max_pool_connections=32),
        )

    def __enter__(self) -> _Served:
        return self

    def __exit__(self, *_: object) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


def run(root: Path, requests: int, repeat: int, workers: int, in_process: bool) -> None:
    import joblib

    x, y = load_breast_cancer(return_X_y=True)
    for name, c in (("a", 1.0), ("b", 0.05)):
        joblib.dump(
            make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=1000)).fit(x, y),
            root / f"{name}.joblib",
        )
    database = Database(f"sqlite:///{root / 'registry.db'}")
    migrate.upgrade(database)
    with database.write() as session:
        models.register(session, models.NewVersion("m", str(root / "a.joblib"), "sklearn"), "bench")
        models.register(
            session, models.NewVersion("m", str(root / "b.joblib"), "sklearn", status="approved"), "bench"
        )
    capture, labels = root / "capture", root / "labels"
    served: Any = (
        LocalSageMaker(root / "sagemaker", provision_delay=0.1, metric_bucket_seconds=1)
        if in_process
        else _Served(root / "sagemaker")
    )
    with served as host:
        runtime = host.client("sagemaker-runtime")
        platform = SageMakerPlatform(host.client("sagemaker"), runtime)
        endpoints.create_and_wait(
            database, platform, "bench", "m:1", "bench", poll=0.05, capture=capture.as_uri()
        )
        traffic = Traffic(runtime, "bench", x, y, LabelWriter(str(labels)), threads=4, seed=1)
        workers_ = traffic.start()
        while traffic.sent < requests:
            time.sleep(0.05)
        traffic.stop.set()
        for w in workers_:
            w.join(timeout=10)
        traffic.flush_labels()
        text = POLICY.replace("CAPTURE", capture.as_uri()).replace("LABELS", labels.as_uri())
        text = text.replace("REQUESTS", str(requests))
        with database.write() as session:
            rollout_id = launch.start(session, policies.parse(text), text, "bench", datetime.now(UTC)).id
        reconciler = Reconciler(database, platform, None, owner="bench")
        while True:
            reconciler.tick()
            with database.read() as session:
                row = session.get(Rollout, rollout_id)
                assert row is not None
                if row.state == "running":
                    break
            time.sleep(0.05)
        replayer = Replayer(database, platform, owner="bench", workers=workers)
        bodies = [",".join(f"{v:.6g}" for v in x[i % len(x)]) for i in range(requests)]

        def raw() -> float:
            started = time.perf_counter()
            with ThreadPoolExecutor(workers) as pool:
                list(
                    pool.map(
                        lambda body: runtime.invoke_endpoint(
                            EndpointName="bench", TargetVariant="candidate", ContentType="text/csv", Body=body
                        )["Body"].read(),
                        bodies,
                    )
                )
            return requests / (time.perf_counter() - started)

        def replay() -> tuple[float, float, int]:
            with database.write() as session:
                session.execute(delete(ReplayRequest).where(ReplayRequest.rollout_id == rollout_id))
                session.execute(delete(PairedSum).where(PairedSum.rollout_id == rollout_id))
                session.execute(update(Rollout).where(Rollout.id == rollout_id).values(replay=None))
            started = time.perf_counter()
            planned = sum(r.planned for r in replayer.run())
            plan_s = time.perf_counter() - started
            sent = 0
            while sent < planned:
                sent += sum(r.paired for r in replayer.run())
            return planned / (time.perf_counter() - started), plan_s, planned

        raws, replays, plans = [], [], []
        for _ in range(repeat):
            raws.append(raw())
            rate, plan_s, planned = replay()
            replays.append(rate)
            plans.append(plan_s)
        raw_median, replay_median = statistics.median(raws), statistics.median(replays)
        print(
            json.dumps(
                {
                    "requests": planned,
                    "local_sagemaker": "in this process" if in_process else "its own process",
                    "workers": workers,
                    "raw_invocations_per_s": [round(v) for v in raws],
                    "replayed_per_s": [round(v) for v in replays],
                    "plan_seconds": [round(v, 2) for v in plans],
                },
            )
        )
        plan_median, ratio = statistics.median(plans), replay_median / raw_median
        print(
            f"replay end to end: median {replay_median:,.0f} requests/s (plan {plan_median:.2f} s of it)"
            f" against raw invoke_endpoint {raw_median:,.0f}/s, same run: ratio {ratio:.2f} (target >= 500/s)"
        )
    database.dispose()


if __name__ == "__main__":
    main()
