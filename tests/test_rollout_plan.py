"""`variantctl rollout plan` (and `policy validate --endpoint`): the calls a rollout would make against
the endpoint as it is now, checked against AWS's rules, changing nothing; exit 1 when AWS would refuse
one, naming the call and the rule."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from manager.cli.main import cli

from .test_production_shapes import C5, SERVERLESS, Fleet, adopted_fleet, policy_text

STEPS = (
    "[{shadow: {percent: 50, duration: 1m}}, {setWeight: {percent: 20}}, {analysis: {final: false}},"
    " {setWeight: {percent: 50}}]"
)
GUARDED = (
    "decisions:\n  maxDuration: 5m\n"
    "  promotion: {mode: blueGreen, blueGreen: {routing: CANARY, sizePercent: 10}}"
)


def _plan(
    fleet: Fleet, tmp_path: Path, text: str, monkeypatch: pytest.MonkeyPatch, *args: str
) -> tuple[int, str]:
    for key, value in (
        ("AWS_ENDPOINT_URL", fleet.host.url),
        ("AWS_DEFAULT_REGION", "us-east-1"),
        ("AWS_ACCESS_KEY_ID", "local"),
        ("AWS_SECRET_ACCESS_KEY", "local"),
    ):
        monkeypatch.setenv(key, value)
    policy = tmp_path / "policy.yaml"
    policy.write_text(text)
    db = str(fleet.database.url).removeprefix("sqlite:///")
    result = CliRunner().invoke(cli, ["--db", db, *args[:2], str(policy), *args[2:]])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    return result.exit_code, result.output


def test_the_plan_shows_each_call_on_the_endpoints_own_fleet_and_changes_nothing(
    tmp_path: Path, artifacts: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    text = policy_text(STEPS).replace("decisions: {maxDuration: 5m}", GUARDED)
    with adopted_fleet(tmp_path, artifacts, C5) as fleet:
        configs_before = fleet.sagemaker.list_endpoint_configs()["EndpointConfigs"]
        code, out = _plan(fleet, tmp_path, text, monkeypatch, "rollout", "plan", "-o", "json")
        assert code == 0, out
        calls = json.loads(out)
        assert all(c["aws"] == "ok" for c in calls), out
        kinds = [(c["when"], c["call"]) for c in calls]
        assert kinds[:3] == [
            ("deploy", "CreateModel"),
            ("deploy", "CreateEndpointConfig"),
            ("deploy", "UpdateEndpoint"),
        ]
        deploy = calls[1]["request"]["ProductionVariants"]
        assert [v["VariantName"] for v in deploy] == ["prod", "candidate"]
        assert {k: deploy[0][k] for k in C5} == C5, "the baseline on its own fleet"
        assert {k: deploy[1][k] for k in C5} == {**C5, "InitialInstanceCount": 1}, (
            "the candidate hosted like it, at the count its weight (0) needs"
        )
        shadow = next(
            c for c in calls if c["when"] == "step 1 shadow" and c["call"] == "CreateEndpointConfig"
        )
        assert [v["VariantName"] for v in shadow["request"]["ProductionVariants"]] == ["prod"]
        assert [v["VariantName"] for v in shadow["request"]["ShadowProductionVariants"]] == [
            "candidate-shadow"
        ]
        weights = [c["what"] for c in calls if c["call"] == "UpdateEndpointWeightsAndCapacities"]
        assert weights[:3] == [
            "prod 80, candidate 20",  # 3 x 20/80 = 0.75 instances' worth: the 1 it has
            "candidate to 3 instance(s) before its weight rises (load per instance 1.00x the baseline's)",
            "prod 50, candidate 50",
        ]
        guarded = next(c for c in calls if c["when"] == "promote: guarded" and c["call"] == "UpdateEndpoint")
        assert (
            guarded["request"]["DeploymentConfig"]["BlueGreenUpdatePolicy"]["TrafficRoutingConfiguration"][
                "Type"
            ]
            == "CANARY"
        )
        assert [c["when"] for c in calls][-3:] == ["rollback"] * 3
        assert fleet.sagemaker.list_endpoint_configs()["EndpointConfigs"] == configs_before, "nothing created"
        assert fleet.endpoint()["EndpointConfigName"] == "fleet-made-by-hand"
        code, table = _plan(fleet, tmp_path, text, monkeypatch, "rollout", "plan")
        assert code == 0 and "3 x ml.c5.xlarge" in table and "REFUSED" not in table


def test_a_call_aws_would_refuse_exits_1_naming_the_call_and_the_rule(
    tmp_path: Path, artifacts: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    with adopted_fleet(tmp_path, artifacts, SERVERLESS) as fleet:
        for command in (("rollout", "plan"), ("policy", "validate", "--endpoint", "fleet-prod")):
            code, out = _plan(fleet, tmp_path, policy_text(STEPS), monkeypatch, *command)
            assert code == 1, out
            assert "REFUSED" in out
            assert "error: AWS would refuse CreateEndpointConfig (step 1 shadow)" in out
            assert "no shadow test on a serverless endpoint" in out
        code, out = _plan(fleet, tmp_path, policy_text(), monkeypatch, "rollout", "plan")
        assert code == 0, out
        assert "serverless 2048 MB" in out


def test_policy_validate_with_an_endpoint_gives_one_json_document(
    tmp_path: Path, artifacts: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    with adopted_fleet(tmp_path, artifacts, C5) as fleet:
        args = ("policy", "validate", "--endpoint", "fleet-prod", "-o", "json")
        code, out = _plan(fleet, tmp_path, policy_text(STEPS), monkeypatch, *args)
        assert code == 0, out
        document = json.loads(out)
        assert [s["what"] for s in document["steps"]][:2] == [
            "shadow 50% of requests",
            "set candidate weight to 20%",
        ]
        assert document["calls"][0]["call"] == "CreateModel"
        assert all(c["aws"] == "ok" for c in document["calls"])


def test_on_an_autoscaled_endpoint_the_plan_shows_the_autoscaling_calls(
    tmp_path: Path, artifacts: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    with adopted_fleet(tmp_path, artifacts, C5) as fleet:
        aas = fleet.host.client("application-autoscaling")
        where = {
            "ServiceNamespace": "sagemaker",
            "ResourceId": "endpoint/fleet-prod/variant/prod",
            "ScalableDimension": "sagemaker:variant:DesiredInstanceCount",
        }
        aas.register_scalable_target(MinCapacity=2, MaxCapacity=6, **where)
        tracking = {
            "TargetValue": 100.0,
            "PredefinedMetricSpecification": {
                "PredefinedMetricType": "SageMakerVariantInvocationsPerInstance"
            },
        }
        aas.put_scaling_policy(
            PolicyName="invocations",
            PolicyType="TargetTrackingScaling",
            TargetTrackingScalingPolicyConfiguration=tracking,
            **where,
        )
        code, out = _plan(fleet, tmp_path, policy_text(STEPS), monkeypatch, "rollout", "plan", "-o", "json")
        assert code == 0, out
        calls = [(c["when"], c["call"], c["what"]) for c in json.loads(out)]
        assert ("deploy", "RegisterScalableTarget", "candidate: 1-6 instances") in calls
        assert (
            "step 1 shadow",
            "DeregisterScalableTarget",
            "candidate: AWS refuses the update otherwise",
        ) in calls
        assert ("step 1 shadow", "RegisterScalableTarget", "candidate-shadow: 2-6 instances") in calls
        promote = [c for c in calls if c[0] == "promote"]
        assert [c[1] for c in promote] == [
            "DeleteScalingPolicy",
            "DeregisterScalableTarget",
            "CreateEndpointConfig",
            "UpdateEndpoint",
        ], promote
        updates = [c for c in json.loads(out) if c["call"] == "UpdateEndpoint"]
        assert all(u["request"]["RetainAllVariantProperties"] is True for u in updates)
        assert (
            aas.describe_scalable_targets(ServiceNamespace="sagemaker")["ScalableTargets"][0]["ResourceId"]
            == (where["ResourceId"])
        ), "the plan changed nothing"
