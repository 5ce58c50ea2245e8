"""`variantctl demo`: the whole product in one process, with no AWS.

The local SageMaker serves the endpoint; two scikit-learn models are trained and registered; the
baseline serves with data capture on; a rollout of the candidate runs under `demo_policy.yaml`
(package data, so the demo runs from a wheel too) while synthetic traffic flows through boto3's
sagemaker-runtime client and ground truth arrives a little later; the same reconciler and
ingestion the daemon runs decide.
Scenarios: `promote` (a candidate as good), `regression` (a worse candidate), `error-spike`
(a candidate that fails some requests with a 5xx), `replay`: the promote scenario's candidate
judged at weight 0 on the last 1,500 labelled requests the baseline served, replayed to it
(`demo_replay_policy.yaml`); the candidate serves nobody until it is promoted; and `slow-candidate`:
a candidate as good but 15% slower (the local SageMaker's latency knob: the baseline's container
takes 20 ms a request, the candidate's 23 ms), rolled back by the p90 guardrail of
`demo_slow_policy.yaml`, whose threshold is the baseline's p90 over the traffic before the start.

With `trainer="sagemaker"` both versions are XGBoost models trained by local SageMaker jobs: the
baseline by a training job, the candidate by a tuning job (4 training jobs, 2 at a time) and gated
offline by batch transform jobs on held-out rows, exactly as `variantctl train --trainer sagemaker`
does on AWS. The regression candidate skips that gate (it would stop it, which is the gate's job) so
that the online analysis has a worse candidate to catch; the error-spike candidate's container is
told to fail 5% of its requests, with the local SageMaker's fault knob.
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

from manager.demo.loadgen import LabelWriter, Traffic

if TYPE_CHECKING:
    from manager.registry.rollouts import RolloutView
    from manager.rollout.look import TickResult

SCENARIOS = ("promote", "regression", "error-spike", "replay", "slow-candidate")
TRAINERS = ("sklearn", "sagemaker")
FAULT = {"LOCAL_SAGEMAKER_FAULT_5XX_RATE": "0.05"}  # the error-spike candidate's, with XGBoost
SLOW = ("20", "23")  # ms the slow-candidate scenario's baseline and candidate take per request
XGBOOST_CONFIG = """
model: churn
objective: {metric: roc_auc}
sagemaker:
  role_arn: arn:aws:iam::123456789012:role/VariantctlDemo
  bucket: s3://variantctl-demo/training
  xgboost_version: "1.7-1"
  region: us-east-1
  hyperparameters: {num_round: 40}
  tuning:
    max_jobs: 4
    max_parallel_jobs: 2
    objective: validation:auc
    ranges:
      eta: {type: continuous, min: 0.05, max: 0.5, scale: log}
      max_depth: {type: integer, min: 2, max: 6}
gate: {metric: roc_auc, margin: 0.05}
"""
APPROVED = "the demo rolls both versions out without an offline gate"
POLICY = Path(__file__).resolve().parent / "demo_policy.yaml"  # package data: works from a wheel
REPLAY_POLICY = Path(__file__).resolve().parent / "demo_replay_policy.yaml"
SLOW_POLICY = Path(__file__).resolve().parent / "demo_slow_policy.yaml"
SHIFTS = {
    "promote": "noise:0.05",
    "regression": "noise:4",
    "error-spike": None,
    "replay": "noise:0.05",
    "slow-candidate": "noise:0.05",
}
HISTORY = 1500  # labelled requests the baseline serves before a replay rollout starts
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
    from manager.config import yamlfile as yamlconfig
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
    shift = SHIFTS[scenario]
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
    trainer: str = "sklearn",
) -> dict[str, Any]:
    """Run one scenario in `workdir`; returns the rollout's outcome, reason and evidence."""
    from manager.db import Database
    from manager.local_sagemaker import LocalSageMaker
    from manager.registry import migrate

    if scenario not in SCENARIOS:
        from manager.errors import UserError

        raise UserError(f"unknown scenario {scenario!r}; choose one of {', '.join(SCENARIOS)}")
    if trainer not in TRAINERS:
        from manager.errors import UserError

        raise UserError(f"unknown trainer {trainer!r}; choose one of {', '.join(TRAINERS)}")
    workdir.mkdir(parents=True, exist_ok=True)
    database = Database(f"sqlite:///{workdir / 'registry.db'}")
    try:
        migrate.upgrade(database)
        with LocalSageMaker(workdir / "sagemaker", provision_delay=0.5, metric_bucket_seconds=1) as host:
            if trainer == "sagemaker":
                say(
                    f"[1/6] training XGBoost on breast_cancer with local SageMaker jobs ({host.url}): "
                    f"a baseline, then the {scenario} scenario's candidate tuned"
                    + (
                        " (its offline gate skipped: see `variantctl demo --help`)"
                        if scenario == "regression"
                        else " and gated offline"
                    )
                )
                refs, held_out = _register_xgboost(database, host, scenario, say)
            else:
                say(f"[1/6] training a baseline and a {scenario} candidate on breast_cancer")
                refs, held_out = _register(database, workdir, scenario)
            knobs = _knobs(scenario, trainer, refs)
            say(f"[2/6] local SageMaker on {host.url}; deploying {refs[0]} with data capture on")
            traffic = Traffic(
                host.client("sagemaker-runtime"),
                ENDPOINT,
                held_out.x_test,
                held_out.y_test,
                LabelWriter(str(workdir / "ground-truth")),
            )
            replay = scenario == "replay"
            policy = {"replay": REPLAY_POLICY, "slow-candidate": SLOW_POLICY}.get(scenario, POLICY)
            history = (lambda: _history(traffic, say)) if policy != POLICY else None
            rollout_id = _deploy_and_start(host, database, workdir, refs, knobs, history, policy)
            say(f"[3/6] rollout {rollout_id}: {refs[1]} beside {refs[0]} under {policy.name}")
            say(
                "[4/6] traffic through boto3 to the baseline alone; the captured, labelled requests"
                " replayed to the candidate at weight 0; a reconcile tick every second"
                if replay
                else "[4/6] traffic through boto3, labels a second later, a reconcile tick every second"
            )
            _drive(host, database, workdir, rollout_id, traffic, on_tick, timeout, knobs, replay)
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


def _register_xgboost(
    database: Any, host: Any, scenario: str, say: Callable[[str], None]
) -> tuple[tuple[str, str], Any]:
    """Both versions trained by local SageMaker jobs through the one retrain pipeline; the candidate
    gated offline by batch transform (but for the regression scenario: see the module docstring)."""
    from manager.config import yamlfile as yamlconfig
    from manager.errors import UserError
    from trainers.config import TrainConfig
    from trainers.datasets import load, split
    from trainers.gate import sagemaker_scorer
    from trainers.pipeline import retrain
    from trainers.sagemaker_job import SageMakerTrainer

    config = yamlconfig.parse(XGBOOST_CONFIG, TrainConfig, "demo training")
    host.client("s3").create_bucket(Bucket="variantctl-demo")
    trainer = SageMakerTrainer(host.client("sagemaker"), host.client("s3"), host.region, poll_seconds=0.2)
    scorer = sagemaker_scorer(trainer, config)
    data = load("sklearn:breast_cancer")
    shift = SHIFTS[scenario]
    assert config.sagemaker is not None
    # The baseline: one training job with the default hyperparameters; nothing to gate against.
    single = config.model_copy(update={"sagemaker": config.sagemaker.model_copy(update={"tuning": None})})
    baseline = retrain(database, trainer, scorer, single, data, "demo", gate=False)
    say(f"      {baseline.ref}: training job {baseline.result.search.get('training_job')}")
    shifted = load("sklearn:breast_cancer", shift, seed=1)
    candidate = retrain(database, trainer, scorer, config, shifted, "demo", gate=scenario != "regression")
    tuning = candidate.result.search.get("tuning_job")
    say(f"      {candidate.ref}: tuning job {tuning}; {candidate.gate}")
    if not candidate.approved:
        raise UserError(f"the offline gate rejected {candidate.ref}: {candidate.gate}")
    if scenario == "error-spike":
        # The gate's batch transform made the candidate's SageMaker model without the fault knob;
        # the rollout makes it again with the knob (see `_platform`).
        host.client("sagemaker").delete_model(ModelName=_sagemaker_model(candidate.ref))
    return (baseline.ref, candidate.ref), split(data)


def _sagemaker_model(ref: str) -> str:
    """The SageMaker model a registered `name:version` is deployed as."""
    from manager.names import model_name
    from manager.registry.models import parse_ref

    name, version = parse_ref(ref)
    assert version is not None, ref
    return model_name(name, version)


def _knobs(scenario: str, trainer: str, refs: tuple[str, str]) -> dict[str, dict[str, str]]:
    """The local SageMaker's knobs each scenario turns, by SageMaker model: the XGBoost error-spike
    candidate fails 5% of its requests; the slow candidate takes 15% longer than the baseline."""
    from manager.local_sagemaker.runtime import EXTRA_LATENCY_MS

    if scenario == "error-spike" and trainer == "sagemaker":
        return {_sagemaker_model(refs[1]): FAULT}
    if scenario == "slow-candidate":
        return {_sagemaker_model(ref): {EXTRA_LATENCY_MS: ms} for ref, ms in zip(refs, SLOW, strict=True)}
    return {}


def _platform(host: Any, knobs: dict[str, dict[str, str]]) -> Any:
    """SageMaker through boto3; each SageMaker model in `knobs` made with those variables set."""
    from dataclasses import replace

    from manager.platforms.base import ModelSpec
    from manager.platforms.sagemaker import SageMakerPlatform

    class Platform(SageMakerPlatform):
        def ensure_model(self, spec: ModelSpec) -> None:
            if spec.name in knobs:
                spec = replace(spec, environment={**spec.environment, **knobs[spec.name]})
            super().ensure_model(spec)

    return Platform(host.client("sagemaker"), host.client("sagemaker-runtime"))


def _history(traffic: Traffic, say: Callable[[str], None]) -> None:
    """The baseline serves HISTORY requests, each labelled, before the rollout: what a replay reads, and
    the latency a quantile guardrail's threshold is fixed from."""
    workers = traffic.start()
    deadline = time.monotonic() + 60
    while traffic.sent < HISTORY and time.monotonic() < deadline:
        time.sleep(0.05)
    traffic.stop.set()
    for w in workers:
        w.join(timeout=10)
    traffic.flush_labels()
    traffic.stop.clear()
    say(f"      the baseline served {traffic.sent:,} labelled requests before the rollout")


def _deploy_and_start(
    host: Any,
    database: Any,
    workdir: Path,
    refs: tuple[str, str],
    knobs: dict[str, dict[str, str]],
    history: Callable[[], None] | None = None,
    source: Path = POLICY,
) -> int:
    """The endpoint serving the baseline with data capture on (then `history`: traffic before the
    rollout), then the rollout of the candidate."""
    from manager import policy as policies
    from manager.rollout import endpoints, launch

    capture, ground_truth = workdir / "capture", workdir / "ground-truth"
    platform = _platform(host, knobs)
    endpoints.create_and_wait(
        database, platform, ENDPOINT, refs[0], "demo", timeout=60, poll=0.1, capture=capture.as_uri()
    )
    if history is not None:
        history()
    text = (
        source.read_text()
        .replace("CAPTURE_URI", capture.as_uri())
        .replace("GROUND_TRUTH_URI", ground_truth.as_uri())
    )
    policy = policies.parse(text, str(source))
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
    knobs: dict[str, dict[str, str]],
    replay: bool = False,
) -> None:
    """Traffic flows while ingestion and the reconciler (and the replayer) run, once a second, until a
    final state."""
    from manager.groundtruth.ingest import GroundTruthIngestor, QualitySpec
    from manager.metrics.cloudwatch import CloudWatchSource
    from manager.registry import rollouts
    from manager.registry.vocabulary import is_final
    from manager.rollout.reconcile import Reconciler
    from manager.rollout.replay import Replayer

    reconciler = Reconciler(
        database,
        _platform(host, knobs),
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
    replayer = (
        Replayer(database, _platform(host, knobs), owner="demo", budget=timedelta(seconds=0.8))
        if replay
        else None
    )
    workers = traffic.start()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ingestor.run(quality)
            results = reconciler.tick()
            if replayer is not None:
                replayer.run()
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
    from manager.history import audit
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
