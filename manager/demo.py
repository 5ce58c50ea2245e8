"""`variantctl demo`: the whole product in one process, with no AWS.

The local SageMaker serves the endpoint; two scikit-learn models are trained and registered; the
baseline serves with data capture on; a rollout of the candidate runs under `demo_policy.yaml`
(package data, so the demo runs from a wheel too) while synthetic traffic flows through boto3's
sagemaker-runtime client and ground truth arrives a little later; the same reconciler and
ingestion the daemon runs decide.
Scenarios: `promote` (a candidate as good), `regression` (a worse candidate), `error-spike`
(a candidate that fails some requests with a 5xx).
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from manager.traffic import LabelWriter, Traffic

if TYPE_CHECKING:
    from manager.registry.rollouts import RolloutView
    from manager.rollout.reconcile import TickResult

SCENARIOS = ("promote", "regression", "error-spike")
APPROVED = "the demo rolls both versions out without an offline gate"
POLICY = Path(__file__).resolve().parent / "demo_policy.yaml"  # package data: works from a wheel
ENDPOINT = "churn-demo"


class FlakyModel:
    """A model that fails a share of its calls: the error-spike scenario's candidate."""

    def __init__(self, inner: Any, failure_rate: float, seed: int = 0) -> None:
        self.inner = inner
        self.failure_rate = failure_rate
        self.rng = random.Random(seed)
        self.classes_ = inner.classes_
        self.n_features_in_ = inner.n_features_in_

    def predict(self, x: Any) -> Any:
        return self.inner.predict(x)

    def predict_proba(self, x: Any) -> Any:
        if self.rng.random() < self.failure_rate:
            raise RuntimeError("injected failure: out of memory")
        return self.inner.predict_proba(x)


@dataclass(frozen=True)
class DemoTick:
    """What the demo shows after each tick: the rollout, the traffic so far, and what the tick did."""

    rollout: RolloutView
    sent: int
    failed: int
    last: TickResult | None


def _train(workdir: Path, scenario: str) -> tuple[Any, Any, Any]:
    """(baseline result, candidate result, held-out split) for the scenario."""
    from manager import yamlconfig
    from trainers.config import TrainConfig
    from trainers.datasets import load, split
    from trainers.sklearn_local import SklearnTrainer

    text = f"""
model: churn
estimator: logistic_regression
objective: {{metric: roc_auc}}
output: {workdir / "artifacts"}
"""
    config = yamlconfig.parse(text, TrainConfig, "demo training")
    trainer = SklearnTrainer()
    data = load("sklearn:breast_cancer")
    baseline = trainer.train(config, data)
    shift = {"promote": "noise:0.05", "regression": "noise:4", "error-spike": None}[scenario]
    candidate = trainer.train(config, load("sklearn:breast_cancer", shift, seed=1))
    if scenario == "error-spike":
        import joblib

        path = Path(candidate.artifact_uri[len("file://") :])
        joblib.dump(FlakyModel(joblib.load(path), failure_rate=0.05), path)
    return baseline, candidate, split(data)


def run(
    workdir: Path,
    scenario: str,
    on_tick: Callable[[DemoTick], None] | None = None,
    timeout: float = 150.0,
    say: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run one scenario in `workdir`; returns the rollout's outcome, reason and evidence."""
    from manager.db import Database
    from manager.local_sagemaker import LocalSageMaker
    from manager.registry import migrate

    if scenario not in SCENARIOS:
        from manager.errors import UserError

        raise UserError(f"unknown scenario {scenario!r}; choose one of {', '.join(SCENARIOS)}")
    workdir.mkdir(parents=True, exist_ok=True)
    database = Database(f"sqlite:///{workdir / 'registry.db'}")
    try:
        migrate.upgrade(database)
        say(f"[1/6] training a baseline and a {scenario} candidate on breast_cancer")
        refs, held_out = _register(database, workdir, scenario)
        with LocalSageMaker(workdir / "sagemaker", provision_delay=0.5, metric_bucket_seconds=1) as host:
            say(f"[2/6] local SageMaker on {host.url}; deploying {refs[0]} with data capture on")
            rollout_id = _deploy_and_start(host, database, workdir, refs)
            say(f"[3/6] rollout {rollout_id}: {refs[1]} beside {refs[0]} under {POLICY.name}")
            traffic = Traffic(
                host.client("sagemaker-runtime"),
                ENDPOINT,
                held_out.x_test,
                held_out.y_test,
                LabelWriter(str(workdir / "ground-truth")),
            )
            say("[4/6] traffic through boto3, labels a second later, a reconcile tick every second")
            _drive(host, database, workdir, rollout_id, traffic, on_tick, timeout)
        return {
            **_result(database, rollout_id, refs),
            "requests": traffic.sent,
            "failed_requests": traffic.failed,
        }
    finally:
        database.dispose()


def _register(database: Any, workdir: Path, scenario: str) -> tuple[tuple[str, str], Any]:
    """Both versions trained, registered and approved; (their refs, the held-out split)."""
    from manager.registry import models
    from trainers.base import register

    baseline, candidate, held_out = _train(workdir, scenario)
    with database.write() as session:
        first = register(session, baseline, "demo")
        second = register(session, candidate, "demo", replaces=first)
        for version in (first, second):
            models.transition(session, version, "approved", "demo", reason=APPROVED)
        return (first.ref, second.ref), held_out


def _deploy_and_start(host: Any, database: Any, workdir: Path, refs: tuple[str, str]) -> int:
    """The endpoint serving the baseline with data capture on, then the rollout of the candidate."""
    from manager import policy as policies
    from manager.platforms.sagemaker import SageMakerPlatform
    from manager.rollout import endpoints, launch

    capture, ground_truth = workdir / "capture", workdir / "ground-truth"
    platform = SageMakerPlatform(host.client("sagemaker"))
    endpoints.create_and_wait(
        database, platform, ENDPOINT, refs[0], "demo", timeout=60, poll=0.1, capture=capture.as_uri()
    )
    text = (
        POLICY.read_text()
        .replace("CAPTURE_URI", capture.as_uri())
        .replace("GROUND_TRUTH_URI", ground_truth.as_uri())
    )
    policy = policies.parse(text, str(POLICY))
    with database.write() as session:
        return launch.start(session, policy, text, "demo", datetime.now(UTC)).id


def _drive(
    host: Any,
    database: Any,
    workdir: Path,
    rollout_id: int,
    traffic: Traffic,
    on_tick: Callable[[DemoTick], None] | None,
    timeout: float,
) -> None:
    """Traffic flows while ingestion and the reconciler run, once a second, until a final state."""
    from manager.metrics.cloudwatch import CloudWatchSource
    from manager.metrics.groundtruth import GroundTruthIngestor, QualitySpec
    from manager.platforms.sagemaker import SageMakerPlatform
    from manager.registry import rollouts
    from manager.registry.vocabulary import is_final
    from manager.rollout.reconcile import Reconciler

    reconciler = Reconciler(
        database,
        SageMakerPlatform(host.client("sagemaker")),
        CloudWatchSource(host.client("cloudwatch"), lag=timedelta(seconds=2), period=1),
        owner="demo",
        actor="daemon",
    )
    # Capture files grow while the host writes them: close one only after 5 s without a write.
    ingestor = GroundTruthIngestor(database, settle=timedelta(seconds=5))
    quality = QualitySpec(
        ENDPOINT,
        (workdir / "capture").as_uri(),
        (workdir / "ground-truth").as_uri(),
        label_ttl=timedelta(hours=1),
    )
    workers = traffic.start()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ingestor.run(quality)
            results = reconciler.tick()
            with database.read() as session:
                view = rollouts.view(session, rollout_id)
            if on_tick:
                on_tick(DemoTick(view, traffic.sent, traffic.failed, results[0] if results else None))
            if is_final(view.state):
                return
            time.sleep(1.0)
    finally:
        traffic.stop.set()
        for w in workers:
            w.join(timeout=5)


def _result(database: Any, rollout_id: int, refs: tuple[str, str]) -> dict[str, Any]:
    """The outcome, and the evidence of the decision that led to it (from the history)."""
    from manager import audit
    from manager.registry import rollouts

    with database.read() as session:
        view = rollouts.view(session, rollout_id)
    decision = next(
        (
            e
            for e in audit.history(database, audit.HistoryFilter(endpoint=ENDPOINT, limit=200))
            if e.action in ("rollout.promote", "rollout.rollback")
        ),
        None,
    )
    return {
        "rollout": rollout_id,
        "outcome": view.state,
        "reason": view.reason,
        "baseline": refs[0],
        "candidate": refs[1],
        "evidence": json.loads(decision.payload) if decision else {},
    }
