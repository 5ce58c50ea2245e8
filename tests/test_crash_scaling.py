"""kill -9 the daemon between the autoscaling calls of a rollout on an autoscaled endpoint: after a
restart the rollout is promoted, the survivor alone is registered (once) with the baseline's range
and policy, no variant is left unscaled that was scaled before, and the history verifies."""

from __future__ import annotations

from pathlib import Path

import pytest

from manager.history import audit
from manager.platforms.scaling import Scaling, ScalingPolicy

from .crash_support import crash_and_recover
from .local_sagemaker_support import until
from .rollout_support import ENDPOINT, World, make_world, platform_matches_registry, policy_text

pytestmark = pytest.mark.slow  # each point restarts a real daemon

RESOURCE = f"endpoint/{ENDPOINT}/variant/baseline"
TRACKING = {
    "TargetValue": 1000.0,
    "PredefinedMetricSpecification": {"PredefinedMetricType": "SageMakerVariantInvocationsPerInstance"},
}
BASELINE = Scaling(2, 3, (ScalingPolicy("invocations", "TargetTrackingScaling", TRACKING),))
# Registering the candidate after the deploy (scale-call; scaling-registered falls between its
# RegisterScalableTarget and PutScalingPolicy), its count raised before 50% (capacity-call), and the
# candidate deregistered before the promotion's update (unscale-call).
POINTS = ["scaling-registered", "scale-call", "capacity-call", "unscale-call"]


def _autoscale(world: World) -> None:
    """The baseline registered with min 2 (which moves it from 1 to 2 instances at once) and a policy."""
    aas = world.host.client("application-autoscaling")
    where = {
        "ServiceNamespace": "sagemaker",
        "ResourceId": RESOURCE,
        "ScalableDimension": "sagemaker:variant:DesiredInstanceCount",
    }
    aas.register_scalable_target(MinCapacity=2, MaxCapacity=3, **where)
    aas.put_scaling_policy(
        PolicyName="invocations",
        PolicyType="TargetTrackingScaling",
        TargetTrackingScalingPolicyConfiguration=TRACKING,
        **where,
    )

    def two() -> bool:
        state = world.platform.describe(ENDPOINT)
        return state is not None and not state.busy and state.variants[0].current_instances == 2

    until(two, "the baseline at its new minimum")


@pytest.mark.parametrize("point", POINTS)
def test_crash_between_autoscaling_calls(tmp_path: Path, artifacts: dict[str, Path], point: str) -> None:
    with make_world(tmp_path, artifacts) as world:
        _autoscale(world)
        rollout_id = world.start(policy_text(min_samples=20))
        crash_and_recover(world, rollout_id, point, "promoted")
        assert platform_matches_registry(world) == {"baseline": "churn:2"}
        assert world.platform.scaling(ENDPOINT) == {"baseline": BASELINE}
        aas = world.host.client("application-autoscaling")
        targets = aas.describe_scalable_targets(ServiceNamespace="sagemaker")["ScalableTargets"]
        assert [t["ResourceId"] for t in targets] == [RESOURCE], "registered once, the survivor alone"
        state = world.platform.describe(ENDPOINT)
        assert state is not None and state.variants[0].desired_instances >= 2
        assert audit.verify(world.database).ok
        actions = [e.action for e in audit.history(world.database, audit.HistoryFilter(limit=500))]
        assert actions.count("rollout.promoted") == 1
        assert "rollout.scaled" in actions and "rollout.unscaled" in actions and "rollout.capacity" in actions
