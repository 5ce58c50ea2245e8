"""An autoscaled production endpoint through rollout after rollout (issue 27's acceptance): 3 x
ml.c5.xlarge under a target-tracking policy (min 2, max 6), adopted, then promote, abort (the rollback
path, asked by an operator), promote, with one unchanged policy file that has a shadow step and two
canary weights, and traffic all along.

The host's clock is held and moved a minute a tick, so its autoscaling really acts (the baseline
scales in while the rollouts run). At every tick: the baseline's instance type never changes and its
count changes only by a scaling activity; once a step is done every variant that carries traffic has
its scalable target, and the candidate's load per instance is within 25% of the baseline's where
whole instances allow it (never above). Each survivor ends registered with the baseline's policy;
the history says each autoscaling call, and verifies. Run twice: by the reconciler's ticks in this
process (every tick checked), and under a real `variantctl daemon` (checked at every poll); killed
at the new points, the daemon is tests/test_crash_scaling.py's.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from manager.db import Database
from manager.history import audit
from manager.platforms.scaling import Scaling, ScalingPolicy
from manager.registry import models
from manager.rollout.reconcile import Reconciler

from .daemon_support import log_file, start_daemon
from .local_sagemaker_support import first_row
from .rollout_support import RolloutRows
from .test_production_shapes import C5, ENDPOINT, Fleet, adopted_fleet

pytestmark = pytest.mark.slow

RESOURCE = f"endpoint/{ENDPOINT}/variant/prod"
DIMENSION = "sagemaker:variant:DesiredInstanceCount"
TRACKING = {
    "TargetValue": 100.0,
    "PredefinedMetricSpecification": {"PredefinedMetricType": "SageMakerVariantInvocationsPerInstance"},
    "ScaleInCooldown": 120,
    "ScaleOutCooldown": 60,
}
BASELINE_SCALING = Scaling(2, 6, (ScalingPolicy("invocations", "TargetTrackingScaling", TRACKING),))
POLICY = f"""
name: autoscaled
target:
  endpoint: {ENDPOINT}
  candidate: {{model: churn, newestApproved: true}}
steps:
  - shadow: {{percent: 100, duration: 1s}}
  - setWeight: {{percent: 25}}
  - setWeight: {{percent: 50}}
  - pause: {{}}
metrics:
  - {{name: 5xx, role: primary, source: cloudwatch, measure: errors_5xx, kind: errors, higherIsBetter: false,
     minSamples: 0, onNoData: pass}}
decisions: {{maxDuration: 10m}}
"""


@dataclass
class Watch:
    """What the checks saw across ticks."""

    count: int = 3
    activities: int = 0
    scaled_in: bool = False
    load_ratios: list[tuple[float, int, int, float]] = field(
        default_factory=list
    )  # (weight, n_c, n_b, ratio)


def _autoscale(fleet: Fleet) -> Any:
    aas = fleet.host.client("application-autoscaling")
    where = {"ServiceNamespace": "sagemaker", "ResourceId": RESOURCE, "ScalableDimension": DIMENSION}
    aas.register_scalable_target(MinCapacity=2, MaxCapacity=6, **where)
    aas.put_scaling_policy(
        PolicyName="invocations",
        PolicyType="TargetTrackingScaling",
        TargetTrackingScalingPolicyConfiguration=TRACKING,
        **where,
    )
    return aas


def _activities(aas: Any) -> int:
    rows = aas.describe_scaling_activities(ServiceNamespace="sagemaker", ResourceId=RESOURCE)
    return len(rows["ScalingActivities"])


def _check(fleet: Fleet, aas: Any, watch: Watch, rollout_id: int) -> None:
    described = fleet.endpoint()
    config = fleet.sagemaker.describe_endpoint_config(EndpointConfigName=described["EndpointConfigName"])
    prod = next(v for v in config["ProductionVariants"] if v["VariantName"] == "prod")
    assert prod["InstanceType"] == "ml.c5.xlarge", "the baseline's instance type never changes"
    live = {v["VariantName"]: v for v in described.get("ProductionVariants", [])}
    count, activities = int(live["prod"]["DesiredInstanceCount"]), _activities(aas)
    if count != watch.count:
        assert activities > watch.activities, f"prod went {watch.count} -> {count} with no scaling activity"
        watch.scaled_in |= count < watch.count
    watch.count, watch.activities = count, activities
    row = fleet.rollout(rollout_id)
    if (
        described["EndpointStatus"] != "InService"
        or row.pending is not None
        or row.state
        not in (
            "running",
            "paused",
        )
    ):
        return
    registered = fleet.platform.scaling(ENDPOINT)
    carrying = [n for n, v in live.items() if v["CurrentWeight"] > 0]
    carrying += [v["VariantName"] for v in described.get("ShadowProductionVariants", [])]
    assert set(carrying) <= set(registered), f"{carrying} carry traffic, registered: {sorted(registered)}"
    candidate = next((n for n in live if n != "prod"), None)
    if candidate is not None and 0 < live[candidate]["CurrentWeight"] < 100:
        weight = 100 * live[candidate]["CurrentWeight"] / sum(v["CurrentWeight"] for v in live.values())
        n_c, n_b = int(live[candidate]["CurrentInstanceCount"]), int(live["prod"]["CurrentInstanceCount"])
        ratio = (weight / n_c) / ((100 - weight) / n_b)
        one_fewer = (weight / (n_c - 1)) / ((100 - weight) / n_b) if n_c > 1 else float("inf")
        assert ratio <= 1.25 + 1e-9, f"the candidate is overloaded: {ratio:.2f}x at {weight:g}%"
        assert ratio >= 0.75 - 1e-9 or one_fewer > 1.25, f"{n_c} instances where fewer would do"
        watch.load_ratios.append((weight, n_c, n_b, ratio))


def _run(fleet: Fleet, aas: Any, watch: Watch, then: str, step: Callable[[], None]) -> str:
    """Start the policy's rollout and drive it, a minute of the host's clock and some traffic at each
    `step` (a reconciler tick, or a poll while the daemon ticks), to the operator's `then` (promote
    or abort) at its pause, and to its end."""
    runtime = fleet.host.client("sagemaker-runtime")
    rollout_id = fleet.start(POLICY)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        fleet.host.clock.advance(60)
        for _ in range(3):
            runtime.invoke_endpoint(EndpointName=ENDPOINT, ContentType="text/csv", Body=first_row())
        step()
        _check(fleet, aas, watch, rollout_id)
        row = fleet.rollout(rollout_id)
        if row.state == "paused" and row.intent is None:
            fleet.intend(rollout_id, then)  # type: ignore[arg-type]
        if row.state in ("promoted", "aborted", "rolled_back", "failed"):
            return row.state
    raise AssertionError(f"rollout {rollout_id} stayed {fleet.rollout(rollout_id).state}")


@contextmanager
def _driver(fleet: Fleet, kind: str, logs: Path) -> Iterator[Callable[[], None]]:
    """`reconciler`: the daemon's loop body, one tick per step, in this process. `daemon`: a real
    `variantctl daemon` process ticking on its own (every 0.2 s); each step polls."""
    if kind == "reconciler":
        yield Reconciler(fleet.database, fleet.platform, None, owner="test").tick
        return
    db = str(fleet.database.url).removeprefix("sqlite:///")
    daemon = start_daemon(fleet.host.url, db, stderr=log_file(logs, "daemon"))
    try:
        yield lambda: time.sleep(0.05)
    finally:
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=30) == 0, (logs / "daemon.log").read_text()[-3000:]


def _approve(fleet: Fleet, artifact: Path) -> None:
    with fleet.database.write() as session:
        version = models.register(session, models.NewVersion("churn", str(artifact), "sklearn"), "t")
        models.transition(session, version, "approved", "t", reason="test")


@pytest.mark.parametrize("driver", ["reconciler", "daemon"])
def test_three_rollouts_in_a_row_on_an_autoscaled_fleet(
    tmp_path: Path, artifacts: dict[str, Path], driver: str
) -> None:
    with (
        adopted_fleet(tmp_path, artifacts, C5, clock="held") as fleet,
        _driver(fleet, driver, tmp_path) as step,
    ):
        aas = _autoscale(fleet)
        watch = Watch(activities=_activities(aas))
        outcomes = []
        for then, artifact in (("promote", None), ("abort", "logistic"), ("promote", "prior")):
            if artifact is not None:
                _approve(fleet, artifacts[artifact])
            outcomes.append(_run(fleet, aas, watch, then, step))
            assert fleet.platform.scaling(ENDPOINT) == {"prod": BASELINE_SCALING}, (
                "the survivor alone is registered, with the baseline's range and policy"
            )
            assert list(fleet.serving()) == ["prod"]
        assert outcomes == ["promoted", "aborted", "promoted"]
        assert watch.scaled_in, "the baseline's own autoscaling acted while the rollouts ran"
        assert {round(w) for w, *_ in watch.load_ratios} == {25, 50}, watch.load_ratios
        history = audit.history(fleet.database, audit.HistoryFilter(limit=1000))
        actions = [e.action for e in history]
        # Per rollout: the candidate registered at deploy, freed for the shadow step (the shadow config
        # has the baseline alone beside it), the shadow registered then freed, the candidate registered
        # again, its range raised for 50% (after its count), and freed for the promotion or rollback.
        assert actions.count("rollout.scaled") >= 3 * 4, actions
        assert actions.count("rollout.unscaled") == 3 * 3, [
            (e.action, e.reason) for e in reversed(history) if "scal" in e.action
        ]
        assert actions.count("rollout.capacity") >= 3, actions
        assert audit.verify(fleet.database).ok


@dataclass
class _Rows(RolloutRows):
    database: Database


def test_the_same_rollout_through_moto(
    tmp_path: Path, artifacts: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The rollout on moto (with its Application Auto Scaling): the calls are AWS's shapes and moto
    keeps the registrations. moto cannot check the rest: it runs no update rule (it would accept the
    update that AWS refuses), changes endpoints at once (no Updating), ignores weights when invoked,
    forgets instance counts once a weight changes (so the capacity step has nothing to follow), drops
    shadow variants, and never scales; the local SageMaker covers those above."""
    import boto3
    from moto import mock_aws

    from manager.platforms.sagemaker import SageMakerPlatform
    from manager.registry import migrate
    from manager.rollout import configs, endpoints

    from .aws_support import moto_with_update_endpoint

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    database = Database(f"sqlite:///{tmp_path / 'registry.db'}")
    migrate.upgrade(database)
    with mock_aws(), moto_with_update_endpoint(monkeypatch):
        sagemaker = boto3.client("sagemaker", region_name="us-east-1")
        platform = SageMakerPlatform(sagemaker)
        with database.write() as session:
            v1 = models.register(
                session, models.NewVersion("churn", str(artifacts["logistic"]), "sklearn"), "t"
            )
            models.register(
                session,
                models.NewVersion("churn", str(artifacts["prior"]), "sklearn", status="approved"),
                "t",
            )
            model = configs.Images().model(v1)
        platform.ensure_model(model)
        sagemaker.create_endpoint_config(
            EndpointConfigName="by-hand",
            ProductionVariants=[{"VariantName": "prod", "ModelName": model.name, **C5}],
        )
        sagemaker.create_endpoint(EndpointName=ENDPOINT, EndpointConfigName="by-hand")
        endpoints.adopt(database, platform, ENDPOINT, "operator")
        aas = boto3.client("application-autoscaling", region_name="us-east-1")
        where = {"ServiceNamespace": "sagemaker", "ResourceId": RESOURCE, "ScalableDimension": DIMENSION}
        aas.register_scalable_target(MinCapacity=2, MaxCapacity=6, **where)
        aas.put_scaling_policy(
            PolicyName="invocations",
            PolicyType="TargetTrackingScaling",
            TargetTrackingScalingPolicyConfiguration=TRACKING,
            **where,
        )
        rows = _Rows(database)
        text = POLICY.replace("  - shadow: {percent: 100, duration: 1s}\n", "")  # moto drops shadow variants
        rollout_id = rows.start(text)
        reconciler = Reconciler(database, platform, None, owner="test")
        for _ in range(200):
            reconciler.tick()
            row = rows.rollout(rollout_id)
            if row.state == "paused" and row.intent is None:
                with database.write() as session:
                    from manager.registry import rollouts

                    rollouts.set_intent(session, rollout_id, "promote", "looked fine", "alice")
            if row.state in ("promoted", "failed", "rolled_back", "aborted"):
                break
        assert rows.rollout(rollout_id).state == "promoted", rows.rollout(rollout_id).last_error
        assert platform.scaling(ENDPOINT) == {"prod": BASELINE_SCALING}
        history = [e.action for e in audit.history(database, audit.HistoryFilter(limit=500))]
        # The candidate registered after the deploy, freed before the promotion. (moto's
        # UpdateEndpointWeightsAndCapacities drops every variant's instance counts from its description,
        # so after the first weight change there are no counts for the capacity step to follow.)
        assert history.count("rollout.scaled") == 1 and history.count("rollout.unscaled") == 1, history
        assert audit.verify(database).ok
    database.dispose()
