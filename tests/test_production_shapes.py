"""Production endpoints as they are: a rollout keeps what serves (the baseline's instance type, live
count and every other setting SageMaker describes, serverless included), builds only the configs AWS
accepts (a shadow beside the baseline alone; a guarded promotion that keeps the variant name), and
the local SageMaker refuses what AWS refuses, in AWS's words. Each rule is in docs/aws-rules.md."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from manager import policy as policies
from manager.db import Database
from manager.local_sagemaker import LocalSageMaker
from manager.platforms.sagemaker import SageMakerPlatform
from manager.registry import migrate, models, rollouts
from manager.registry.tables import Rollout
from manager.registry.vocabulary import RolloutIntent
from manager.rollout import configs, endpoints
from manager.rollout.reconcile import Reconciler

from .rollout_support import RolloutRows

ENDPOINT = "fleet-prod"
C5 = {
    "InstanceType": "ml.c5.xlarge",
    "InitialInstanceCount": 3,
    "VolumeSizeInGB": 30,
    "ModelDataDownloadTimeoutInSeconds": 900,
    "ContainerStartupHealthCheckTimeoutInSeconds": 600,
    "RoutingConfig": {"RoutingStrategy": "LEAST_OUTSTANDING_REQUESTS"},
}
SERVERLESS = {"ServerlessConfig": {"MemorySizeInMB": 2048, "MaxConcurrency": 5}}
POLICY = f"""
name: shapes
target:
  endpoint: {ENDPOINT}
  candidateVariant: candidate
  candidate: {{model: churn, version: 2}}
HOSTING
steps: STEPS
metrics:
  - {{name: 5xx, role: primary, source: cloudwatch, measure: errors_5xx, kind: errors, higherIsBetter: false,
     minSamples: 0, onNoData: pass}}
decisions: {{maxDuration: 5m}}
PROMOTION
"""
CANARY = "[{setWeight: {percent: 20}}, {pause: {}}]"


def policy_text(steps: str = CANARY, hosting: str = "", promotion: str = "") -> str:
    return POLICY.replace("STEPS", steps).replace("HOSTING", hosting).replace("PROMOTION", promotion)


@dataclass
class Fleet(RolloutRows):
    host: LocalSageMaker
    database: Database
    platform: SageMakerPlatform
    sagemaker: Any

    def tick_until(self, rollout_id: int, done: Any, timeout: float = 60) -> Rollout:
        reconciler = Reconciler(self.database, self.platform, None, owner="test")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            reconciler.tick()
            row = self.rollout(rollout_id)
            if done(row):
                return row
            time.sleep(0.05)
        row = self.rollout(rollout_id)
        raise AssertionError(f"rollout {rollout_id} stayed {row.state}: {row.last_error}, {self.endpoint()}")

    def intend(self, rollout_id: int, intent: RolloutIntent) -> None:
        with self.database.write() as session:
            rollouts.set_intent(session, rollout_id, intent, "looked fine", "alice")

    def serving(self) -> dict[str, dict[str, Any]]:
        """Each production variant of the config the endpoint serves, as SageMaker describes it."""
        config = self.endpoint()["EndpointConfigName"]
        raw = self.sagemaker.describe_endpoint_config(EndpointConfigName=config)
        return {v["VariantName"]: v for v in raw["ProductionVariants"]}

    def endpoint(self) -> dict[str, Any]:
        out: dict[str, Any] = self.sagemaker.describe_endpoint(EndpointName=ENDPOINT)
        return out


@contextmanager
def adopted_fleet(
    tmp_path: Path, artifacts: dict[str, Path], hosting: dict[str, Any], clock: str = "real"
) -> Iterator[Fleet]:
    """An endpoint made outside variantctl on `hosting` (one variant, `prod`), then adopted; churn:2
    approved beside it. `clock="held"`: the host's clock moves only when the test moves it."""
    database = Database(f"sqlite:///{tmp_path / 'registry.db'}")
    migrate.upgrade(database)
    with database.write() as session:
        v1 = models.register(session, models.NewVersion("churn", str(artifacts["logistic"]), "sklearn"), "t")
        models.register(
            session, models.NewVersion("churn", str(artifacts["prior"]), "sklearn", status="approved"), "t"
        )
        model = configs.Images().model(v1)
    with LocalSageMaker(
        tmp_path / "sagemaker",
        provision_delay=0.05,
        metric_bucket_seconds=1,
        clock=clock,  # type: ignore[arg-type]
    ) as host:
        sagemaker = host.client("sagemaker")
        platform = SageMakerPlatform(sagemaker)
        platform.ensure_model(model)
        sagemaker.create_endpoint_config(
            EndpointConfigName="fleet-made-by-hand",
            ProductionVariants=[{"VariantName": "prod", "ModelName": model.name, **hosting}],
        )
        sagemaker.create_endpoint(EndpointName=ENDPOINT, EndpointConfigName="fleet-made-by-hand")
        fleet = Fleet(host, database, platform, sagemaker)
        _wait(
            lambda: (
                (not host.clock.held or host.clock.advance(1))
                and fleet.endpoint()["EndpointStatus"] == "InService"
            )
        )
        endpoints.adopt(database, platform, ENDPOINT, "operator")
        yield fleet
    database.dispose()


def _wait(check: Any, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "not within the deadline"
        time.sleep(0.05)


def _hosting(variant: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in variant.items() if k not in ("VariantName", "ModelName", "InitialVariantWeight")}


def test_a_rollout_keeps_the_baselines_fleet_and_hosts_the_candidate_like_it(
    tmp_path: Path, artifacts: dict[str, Path]
) -> None:
    with adopted_fleet(tmp_path, artifacts, C5) as fleet:
        rollout_id = fleet.start(policy_text())
        fleet.tick_until(rollout_id, lambda r: r.state == "paused")
        both = fleet.serving()
        assert set(both) == {"prod", "candidate"}
        assert _hosting(both["prod"]) == C5, "the baseline keeps its type, count and every setting"
        assert _hosting(both["candidate"]) == {**C5, "InitialInstanceCount": 1}, (
            "the policy names no hosting: the candidate's is the baseline's, its count its share's"
        )
        # 20% beside 3 baseline instances: 3 x 20/80 = 0.75 instances' worth of load, so 1 instance.
        live = {v["VariantName"]: v for v in fleet.endpoint()["ProductionVariants"]}
        assert (live["prod"]["DesiredInstanceCount"], live["candidate"]["DesiredInstanceCount"]) == (3, 1)
        fleet.intend(rollout_id, "promote")
        fleet.tick_until(rollout_id, lambda r: r.state == "promoted")
        survivor = fleet.serving()
        assert list(survivor) == ["prod"], "the survivor keeps the baseline's variant name"
        assert survivor["prod"]["ModelName"] == "churn-v2"
        assert _hosting(survivor["prod"]) == C5, "and the capacity the whole traffic needed"
        with fleet.database.read() as session:
            row = fleet.rollout(rollout_id)
            assert row.outcome == "promoted"
            assert models.get(session, "churn:2").status == "serving"


def test_the_policys_hosting_is_the_candidates_only(tmp_path: Path, artifacts: dict[str, Path]) -> None:
    hosting = "  instanceType: ml.m5.xlarge\n  instanceCount: 2"
    with adopted_fleet(tmp_path, artifacts, C5) as fleet:
        rollout_id = fleet.start(policy_text(hosting=hosting))
        fleet.tick_until(rollout_id, lambda r: r.state == "paused")
        both = fleet.serving()
        assert _hosting(both["prod"]) == C5
        assert _hosting(both["candidate"]) == {"InstanceType": "ml.m5.xlarge", "InitialInstanceCount": 2}
        fleet.intend(rollout_id, "abort")
        fleet.tick_until(rollout_id, lambda r: r.state == "aborted")
        assert {k: _hosting(v) for k, v in fleet.serving().items()} == {"prod": C5}


def test_a_serverless_endpoint_stays_serverless_through_a_rollout(
    tmp_path: Path, artifacts: dict[str, Path]
) -> None:
    with adopted_fleet(tmp_path, artifacts, SERVERLESS) as fleet:
        rollout_id = fleet.start(policy_text())
        fleet.tick_until(rollout_id, lambda r: r.state == "paused")
        assert {k: _hosting(v) for k, v in fleet.serving().items()} == {
            "prod": SERVERLESS,
            "candidate": SERVERLESS,
        }
        # A serverless variant has no instance count, as AWS describes it: no capacity to follow.
        for live in fleet.endpoint()["ProductionVariants"]:
            assert "CurrentInstanceCount" not in live and "DesiredInstanceCount" not in live
            assert live["CurrentServerlessConfig"] == SERVERLESS["ServerlessConfig"]
        message = _refused(
            fleet.sagemaker.update_endpoint_weights_and_capacities,
            EndpointName=ENDPOINT,
            DesiredWeightsAndCapacities=[{"VariantName": "candidate", "DesiredInstanceCount": 2}],
        )
        assert "serverless" in message
        fleet.intend(rollout_id, "promote")
        fleet.tick_until(rollout_id, lambda r: r.state == "promoted")
        survivor = fleet.serving()
        assert list(survivor) == ["prod"] and _hosting(survivor["prod"]) == SERVERLESS


def test_a_shadow_step_shadows_the_baseline_alone(tmp_path: Path, artifacts: dict[str, Path]) -> None:
    steps = "[{shadow: {percent: 50, duration: 10m}}, {setWeight: {percent: 20}}, {pause: {}}]"
    with adopted_fleet(tmp_path, artifacts, C5) as fleet:
        rollout_id = fleet.start(policy_text(steps))
        fleet.tick_until(rollout_id, lambda r: r.shadow_config is not None)
        config = fleet.sagemaker.describe_endpoint_config(
            EndpointConfigName=fleet.endpoint()["EndpointConfigName"]
        )
        assert [v["VariantName"] for v in config["ProductionVariants"]] == ["prod"]
        assert [v["VariantName"] for v in config["ShadowProductionVariants"]] == ["candidate-shadow"]
        assert _hosting(config["ProductionVariants"][0]) == C5
        fleet.intend(rollout_id, "abort")
        fleet.tick_until(rollout_id, lambda r: r.state == "aborted")
        assert {k: _hosting(v) for k, v in fleet.serving().items()} == {"prod": C5}


def test_a_guarded_promotion_keeps_the_variant_name(tmp_path: Path, artifacts: dict[str, Path]) -> None:
    promotion = (
        "  promotion: {mode: blueGreen, blueGreen: {routing: LINEAR, sizePercent: 50, waitSeconds: 0}}"
    )
    text = policy_text(promotion="").replace(
        "decisions: {maxDuration: 5m}", "decisions:\n  maxDuration: 5m\n" + promotion
    )
    with adopted_fleet(tmp_path, artifacts, C5) as fleet:
        rollout_id = fleet.start(text)
        fleet.tick_until(rollout_id, lambda r: r.state == "paused")
        fleet.intend(rollout_id, "promote")
        fleet.tick_until(rollout_id, lambda r: r.state == "promoted")
        survivor = fleet.serving()
        assert list(survivor) == ["prod"] and survivor["prod"]["ModelName"] == "churn-v2"
        assert _hosting(survivor["prod"]) == C5
        last = fleet.endpoint().get("LastDeploymentConfig") or {}
        assert last["BlueGreenUpdatePolicy"]["TrafficRoutingConfiguration"]["Type"] == "LINEAR"


# ---- the local SageMaker refuses what AWS refuses --------------------------------------------------


def _refused(call: Any, **kwargs: Any) -> str:
    with pytest.raises(ClientError) as caught:
        call(**kwargs)
    error = caught.value.response["Error"]
    assert error["Code"] == "ValidationException", error
    return str(error["Message"])


def test_a_shadow_goes_beside_one_production_variant_only(tmp_path: Path, artifacts: dict[str, Path]) -> None:
    with adopted_fleet(tmp_path, artifacts, C5) as fleet:
        prod = {"ModelName": "churn-v1", **C5}
        message = _refused(
            fleet.sagemaker.create_endpoint_config,
            EndpointConfigName="three",
            ProductionVariants=[{"VariantName": "a", **prod}, {"VariantName": "b", **prod}],
            ShadowProductionVariants=[{"VariantName": "c", **prod}],
        )
        assert "you can only specify one variant for ProductionVariants and one variant for" in message
        message = _refused(
            fleet.sagemaker.create_endpoint_config,
            EndpointConfigName="serverless-shadow",
            ProductionVariants=[{"VariantName": "a", "ModelName": "churn-v1", **SERVERLESS}],
            ShadowProductionVariants=[{"VariantName": "c", "ModelName": "churn-v1", **SERVERLESS}],
        )
        assert "serverless" in message


def test_guardrails_need_the_same_variant_names_and_sagemakers_step_sizes(
    tmp_path: Path, artifacts: dict[str, Path]
) -> None:
    with adopted_fleet(tmp_path, artifacts, C5) as fleet:
        for name, variant in (("renamed", "green"), ("same", "prod")):
            fleet.sagemaker.create_endpoint_config(
                EndpointConfigName=name,
                ProductionVariants=[{"VariantName": variant, "ModelName": "churn-v1", **C5}],
            )

        def guarded(config: str, routing: dict[str, Any]) -> str:
            return _refused(
                fleet.sagemaker.update_endpoint,
                EndpointName=ENDPOINT,
                EndpointConfigName=config,
                DeploymentConfig={"BlueGreenUpdatePolicy": {"TrafficRoutingConfiguration": routing}},
            )

        linear = {"Type": "LINEAR", "WaitIntervalInSeconds": 0}
        message = guarded("renamed", {**linear, "LinearStepSize": {"Type": "CAPACITY_PERCENT", "Value": 20}})
        assert "same variant name" in message
        for value in (5, 60):
            message = guarded(
                "same", {**linear, "LinearStepSize": {"Type": "CAPACITY_PERCENT", "Value": value}}
            )
            assert "10-50%" in message
        canary = {
            "Type": "CANARY",
            "WaitIntervalInSeconds": 0,
            "CanarySize": {"Type": "CAPACITY_PERCENT", "Value": 60},
        }
        assert "50%" in guarded("same", canary)
        assert fleet.endpoint()["EndpointConfigName"] == "fleet-made-by-hand", "nothing changed"


@pytest.mark.parametrize(
    "steps,promotion,why",
    [
        (
            "[{setWeight: {percent: 20}}, {shadow: {percent: 50, duration: 1m}}]",
            "",
            "shadow step comes before",
        ),
        ("[{setWeight: {percent: 20}}]", "{routing: LINEAR, sizePercent: 5}", "10-50 percent"),
        ("[{setWeight: {percent: 20}}]", "{routing: LINEAR, sizePercent: 60}", "10-50 percent"),
    ],
)
def test_policies_aws_would_refuse_are_refused_with_the_reason(steps: str, promotion: str, why: str) -> None:
    text = policy_text(steps)
    if promotion:
        text = text.replace(
            "decisions: {maxDuration: 5m}",
            f"decisions:\n  maxDuration: 5m\n  promotion: {{mode: blueGreen, blueGreen: {promotion}}}",
        )
    with pytest.raises(Exception, match=why):
        policies.parse(text)


def test_config_and_guardrail_limits_are_those_aws_states(tmp_path: Path, artifacts: dict[str, Path]) -> None:
    with adopted_fleet(tmp_path, artifacts, C5) as fleet:
        prod = {"ModelName": "churn-v1", **C5}
        eleven = [{"VariantName": f"v{i}", **prod} for i in range(11)]
        message = _refused(
            fleet.sagemaker.create_endpoint_config, EndpointConfigName="x", ProductionVariants=eleven
        )
        assert "Member must have length between 1 and 10" in message
        twice = [{"VariantName": "Blue", **prod}, {"VariantName": "blue", **prod}]
        message = _refused(
            fleet.sagemaker.create_endpoint_config, EndpointConfigName="x", ProductionVariants=twice
        )
        assert "not unique" in message
        fleet.sagemaker.create_endpoint_config(
            EndpointConfigName="same", ProductionVariants=[{"VariantName": "prod", **prod}]
        )
        routing = {"Type": "ALL_AT_ONCE", "WaitIntervalInSeconds": 0}
        # botocore checks `min` itself: send as AWS would receive it, unchecked
        unchecked = fleet.host.client("sagemaker", config=Config(parameter_validation=False))
        for policy, rollback, says in (
            ({"TerminationWaitInSeconds": 3601}, None, "between 0 and 3600"),
            ({"MaximumExecutionTimeoutInSeconds": 599}, None, "between 600 and 28800"),
            ({}, {"Alarms": [{"AlarmName": f"a{i}"} for i in range(11)]}, "less than or equal to 10"),
        ):
            deployment: dict[str, Any] = {
                "BlueGreenUpdatePolicy": {"TrafficRoutingConfiguration": routing, **policy}
            }
            if rollback:
                deployment["AutoRollbackConfiguration"] = rollback
            message = _refused(
                unchecked.update_endpoint,
                EndpointName=ENDPOINT,
                EndpointConfigName="same",
                DeploymentConfig=deployment,
            )
            assert says in message, message
        assert fleet.endpoint()["EndpointStatus"] == "InService"
