"""The SageMaker adapter, one suite run twice: under moto (mock_aws) and against the local SageMaker."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws

from manager.local_sagemaker import LocalSageMaker
from manager.names import readable_name
from manager.platforms import traffic
from manager.platforms.base import (
    BlueGreen,
    CaptureSpec,
    ConfigSpec,
    EndpointState,
    InvalidSpec,
    ModelSpec,
    NotNow,
    SpecConflict,
    VariantSpec,
)
from manager.platforms.sagemaker import SageMakerPlatform
from manager.platforms.scaling import Scaling, ScalingPolicy

from .aws_support import moto_with_update_endpoint, record_operations

ROLE = "arn:aws:iam::123456789012:role/SageMakerRole"


@dataclass
class Env:
    kind: str
    platform: SageMakerPlatform
    calls: list[str]
    artifacts: dict[str, Path]
    host: LocalSageMaker | None = None  # the local kind's, whose clock a test may hold

    def model(self, name: str, artifact: str = "logistic") -> ModelSpec:
        return ModelSpec(name, "local/sklearn:1.9", self.artifacts[artifact].as_uri(), ROLE)

    def settle(self, endpoint: str) -> EndpointState:
        """Wait until the endpoint is not busy (moto is never busy; the local host is, briefly). A held
        host clock is moved on past the transition; it is never waited for."""
        deadline = time.monotonic() + 20
        while True:
            state = self.platform.describe(endpoint)
            assert state is not None
            if not state.busy:
                return state
            assert time.monotonic() < deadline, f"{endpoint} still {state.status} after 20 s"
            if self.host is not None and self.host.clock.held:
                self.host.clock.advance(1)
            time.sleep(0.02)


@pytest.fixture(params=["moto", "local"])
def env(
    request: pytest.FixtureRequest,
    artifacts: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Env]:
    calls: list[str] = []
    if request.param == "moto":
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        with mock_aws(), moto_with_update_endpoint(monkeypatch):
            client = record_operations(boto3.client("sagemaker", region_name="us-east-1"), calls)
            yield Env("moto", SageMakerPlatform(client), calls, artifacts)
    else:
        with LocalSageMaker(tmp_path / "state", provision_delay=0.1) as host:
            client = record_operations(host.client("sagemaker"), calls)
            yield Env("local", SageMakerPlatform(client), calls, artifacts, host)


def _config(name: str, *variants: VariantSpec, capture: CaptureSpec | None = None) -> ConfigSpec:
    return ConfigSpec(name, variants, capture)


def _two_variant_endpoint(env: Env) -> None:
    env.platform.ensure_model(env.model("base"))
    env.platform.ensure_model(env.model("cand", "prior"))
    env.platform.ensure_endpoint_config(
        _config(
            "c1",
            VariantSpec("baseline", "base", "ml.m5.large"),
            VariantSpec("candidate", "cand", "ml.m5.large", weight=0),
        )
    )
    env.platform.create_endpoint("ep", "c1")
    env.settle("ep")


def test_ensure_model_reuses_the_same_spec_and_refuses_another(env: Env) -> None:
    env.platform.ensure_model(env.model("m"))
    env.platform.ensure_model(env.model("m"))
    assert env.calls.count("CreateModel") == 1
    with pytest.raises(SpecConflict, match="already has a model m with artifact"):
        env.platform.ensure_model(env.model("m", "prior"))


def test_ensure_config_reuses_the_same_spec_and_refuses_another(env: Env) -> None:
    env.platform.ensure_model(env.model("m"))
    capture = CaptureSpec("s3://bucket/capture", 50)
    spec = _config("c", VariantSpec("a", "m", "ml.m5.large", 2, 1.0), capture=capture)
    env.platform.ensure_endpoint_config(spec)
    env.platform.ensure_endpoint_config(spec)
    assert env.calls.count("CreateEndpointConfig") == 1
    with pytest.raises(SpecConflict):
        env.platform.ensure_endpoint_config(
            _config("c", VariantSpec("a", "m", "ml.m5.large", 3, 1.0), capture=capture)
        )
    with pytest.raises(SpecConflict):
        env.platform.ensure_endpoint_config(_config("c", VariantSpec("a", "m", "ml.m5.large", 2, 1.0)))


def test_create_endpoint_is_idempotent(env: Env) -> None:
    _two_variant_endpoint(env)
    env.platform.create_endpoint("ep", "c1")
    assert env.calls.count("CreateEndpoint") == 1
    state = env.settle("ep")
    assert (state.status, state.config_name) == ("InService", "c1")
    assert state.shares() == {"baseline": 1.0, "candidate": 0.0}
    env.platform.ensure_endpoint_config(_config("c2", VariantSpec("only", "base", "ml.m5.large")))
    with pytest.raises(SpecConflict, match="serves config c1"):
        env.platform.create_endpoint("ep", "c2")


def test_describe_of_a_missing_endpoint_is_none(env: Env) -> None:
    assert env.platform.describe("nope") is None


def test_set_weights_shifts_traffic_once(env: Env) -> None:
    _two_variant_endpoint(env)
    env.platform.set_weights("ep", {"baseline": 95, "candidate": 5})
    state = env.settle("ep")
    assert state.shares() == pytest.approx({"baseline": 0.95, "candidate": 0.05})
    calls_before = len(env.calls)
    env.platform.set_weights("ep", {"baseline": 95, "candidate": 5})  # already so: no call
    assert "UpdateEndpointWeightsAndCapacities" not in env.calls[calls_before:]


def test_update_endpoint_swaps_the_config(env: Env) -> None:
    _two_variant_endpoint(env)
    env.platform.ensure_endpoint_config(_config("c2", VariantSpec("candidate", "cand", "ml.m5.large")))
    env.platform.update_endpoint("ep", "c2")
    env.platform.update_endpoint("ep", "c2")  # in progress or done: never a second UpdateEndpoint
    state = env.settle("ep")
    assert env.calls.count("UpdateEndpoint") == 1
    assert (state.config_name, [v.name for v in state.variants]) == ("c2", ["candidate"])
    assert state.update_outcome("c2") == "done"


def test_busy_endpoint_is_not_now(env: Env) -> None:
    if env.kind == "moto":
        pytest.skip("moto's endpoints are never busy: every change is immediate (see aws_support)")
    _two_variant_endpoint(env)
    env.platform.set_weights("ep", {"candidate": 1})
    with pytest.raises(NotNow):
        env.platform.set_weights("ep", {"candidate": 2})
    env.platform.ensure_endpoint_config(_config("c2", VariantSpec("candidate", "cand", "ml.m5.large")))
    with pytest.raises(NotNow):
        env.platform.update_endpoint("ep", "c2")


def test_a_deleting_endpoint_is_not_now_and_its_name_is_free_once_gone(env: Env) -> None:
    """SageMaker keeps a deleted endpoint Deleting for a while; creating its name again meanwhile is
    not a conflict with another spec, only too early (moto deletes at once, so only the wait runs)."""
    _two_variant_endpoint(env)
    env.platform.ensure_endpoint_config(_config("c2", VariantSpec("only", "base", "ml.m5.large")))
    if env.host is not None:
        env.host.clock.hold()  # Deleting lasts until the clock moves, however slow this machine is
    env.platform.delete_endpoint("ep")
    if env.host is not None:
        assert env.platform._require("ep").status == "Deleting"
        with pytest.raises(NotNow, match="still Deleting"):
            env.platform.create_endpoint("ep", "c2")
        assert env.platform._require("ep").status == "Deleting"
        env.host.clock.advance(1)
    traffic.wait_gone(env.platform, "ep", timeout=10, poll=0.02)
    assert env.platform.describe("ep") is None
    env.platform.create_endpoint("ep", "c2")
    assert env.settle("ep").config_name == "c2"


def test_config_in_use_or_pending_is_never_deleted(env: Env) -> None:
    _two_variant_endpoint(env)
    env.platform.ensure_endpoint_config(_config("spare", VariantSpec("a", "base", "ml.m5.large")))
    assert env.platform.delete_config("c1") is False
    assert env.platform.delete_config("spare") is True
    assert env.platform.delete_config("spare") is True  # already gone: still done
    if env.host is not None:
        env.platform.ensure_endpoint_config(_config("c2", VariantSpec("a", "base", "ml.m5.large")))
        env.host.clock.hold()  # the update stays pending while both configs are checked
        env.platform.update_endpoint("ep", "c2")
        assert env.platform.delete_config("c2") is False  # pending
        assert env.platform.delete_config("c1") is False  # still serving until the swap
    assert "DeleteEndpointConfig" in env.calls


def test_rollback_zeroes_the_candidate_then_swaps_to_the_baseline(env: Env) -> None:
    _two_variant_endpoint(env)
    env.platform.set_weights("ep", {"baseline": 50, "candidate": 50})
    env.settle("ep")
    baseline = _config("base-only", VariantSpec("baseline", "base", "ml.m5.large"))
    assert traffic.rollback(env.platform, "ep", "candidate", baseline) == "weights-zeroed"
    assert env.settle("ep").shares()["candidate"] == 0.0
    assert traffic.rollback(env.platform, "ep", "candidate", baseline) == "updating"
    env.settle("ep")
    assert traffic.rollback(env.platform, "ep", "candidate", baseline) == "done"
    weight_call = env.calls.index("UpdateEndpointWeightsAndCapacities", env.calls.index("CreateEndpoint") + 2)
    assert weight_call < env.calls.index("UpdateEndpoint")


def test_promote_moves_to_the_winner_alone(env: Env) -> None:
    _two_variant_endpoint(env)
    winner = _config("cand-only", VariantSpec("candidate", "cand", "ml.m5.large"))
    assert traffic.promote(env.platform, "ep", winner) == "updating"
    env.settle("ep")
    assert traffic.promote(env.platform, "ep", winner) == "done"


@pytest.mark.parametrize(
    "bad",
    [
        lambda: ModelSpec("x" * 64, "img", "s3://b/k"),
        lambda: ModelSpec("under_score", "img", "s3://b/k"),
        lambda: ModelSpec("m", "has space", "s3://b/k"),
        lambda: ModelSpec("m", "img", "gs://b/k"),
        lambda: ModelSpec("m", "img", "s3://b/k", role_arn="not-an-arn"),
        lambda: ModelSpec("m", "img", "s3://b/k", environment={"1BAD": "x"}),
    ],
)
def test_invalid_models_are_refused_before_any_call(env: Env, bad: Any) -> None:
    with pytest.raises(InvalidSpec):
        env.platform.ensure_model(bad())
    assert env.calls == []


@pytest.mark.parametrize(
    "variants",
    [
        (),
        tuple(VariantSpec(f"v{i}", "m", "ml.m5.large") for i in range(11)),
        (VariantSpec("a", "m", "m5.large"),),
        (VariantSpec("a", "m", "ml.m5.large", instance_count=0),),
        (VariantSpec("a", "m", "ml.m5.large", weight=-1),),
        (VariantSpec("a", "m", "ml.m5.large", weight=float("nan")),),
        (VariantSpec("a", "m", "ml.m5.large", weight=0),),
        (VariantSpec("a", "m", "ml.m5.large"), VariantSpec("a", "m", "ml.m5.large")),
        (
            VariantSpec("a", "m", "ml.m5.large"),
            VariantSpec("s1", "m", "ml.m5.large", shadow=True),
            VariantSpec("s2", "m", "ml.m5.large", shadow=True),
        ),
    ],
)
def test_invalid_configs_are_refused_before_any_call(env: Env, variants: tuple[VariantSpec, ...]) -> None:
    with pytest.raises(InvalidSpec):
        env.platform.ensure_endpoint_config(ConfigSpec("c", variants))
    assert env.calls == []


def test_invalid_traffic_requests_are_refused_before_any_call(env: Env) -> None:
    with pytest.raises(InvalidSpec, match="at most 50 percent"):
        env.platform.update_endpoint("ep", "c", BlueGreen("CANARY", size_percent=60))
    with pytest.raises(InvalidSpec, match="step size"):
        env.platform.update_endpoint("ep", "c", BlueGreen("LINEAR"))
    with pytest.raises(InvalidSpec):
        env.platform.set_weights("ep", {"a": -1})
    with pytest.raises(InvalidSpec):
        env.platform.set_weights("bad_name", {"a": 1})
    assert env.calls == []


def test_unknown_variant_in_weights_is_refused(env: Env) -> None:
    _two_variant_endpoint(env)
    with pytest.raises(InvalidSpec, match="no variant ghost"):
        env.platform.set_weights("ep", {"ghost": 1})
    with pytest.raises(InvalidSpec, match="all be 0"):
        env.platform.set_weights("ep", {"baseline": 0})


def test_shadow_variant_round_trip(env: Env) -> None:
    if env.kind == "moto":
        pytest.skip("moto 5.2 silently drops ShadowProductionVariants")
    env.platform.ensure_model(env.model("base"))
    spec = _config(
        "c",
        VariantSpec("prod", "base", "ml.m5.large"),
        VariantSpec("shadow", "base", "ml.m5.large", shadow=True),
    )
    env.platform.ensure_endpoint_config(spec)
    env.platform.ensure_endpoint_config(spec)
    assert env.calls.count("CreateEndpointConfig") == 1


def test_readable_names_fit_sagemaker() -> None:
    from datetime import UTC, datetime

    spec = ConfigSpec("x", (VariantSpec("a", "m", "ml.m5.large"),))
    now = datetime(2026, 11, 28, 12, 0, 1, tzinfo=UTC)
    long_base = "churn-model-production-endpoint-with-a-really-long-name-indeed"
    name = readable_name(long_base, spec, now)
    assert len(name) <= 63 and "--" not in name
    assert name.endswith("-20261128120001-" + name[-6:])
    assert readable_name(long_base, spec, now) == name
    other = ConfigSpec("x", (VariantSpec("a", "m", "ml.m5.xlarge"),))
    assert readable_name(long_base, other, now) != name
    assert readable_name("ep_1", spec, now).startswith("ep-1-")


SCALING = Scaling(
    1,
    3,
    (
        ScalingPolicy(
            "invocations",
            "TargetTrackingScaling",
            {
                "TargetValue": 50.0,
                "PredefinedMetricSpecification": {
                    "PredefinedMetricType": "SageMakerVariantInvocationsPerInstance"
                },
            },
        ),
    ),
)


def test_a_variant_registers_for_autoscaling_and_deregisters_with_its_policies(env: Env) -> None:
    """moto keeps targets and policies as given; it checks neither that the variant exists nor that
    an update keeps registered variants (the local host does: tests/test_local_autoscaling.py)."""
    _two_variant_endpoint(env)
    assert env.platform.scaling("ep") == {}
    env.platform.scale("ep", "baseline", SCALING)
    env.platform.scale("ep", "baseline", SCALING, SCALING)  # again: the same, nothing doubled
    assert env.platform.scaling("ep") == {"baseline": SCALING}
    env.settle("ep")
    env.platform.scale("ep", "baseline", None, SCALING)
    env.platform.scale("ep", "baseline", None, SCALING)  # gone already: done
    assert env.platform.scaling("ep") == {}


def test_an_update_deregisters_what_it_removes_and_keeps_what_stays(env: Env) -> None:
    """AWS refuses an update that removes a registered variant: the adapter deregisters it first, and
    keeps the live count of what stays (RetainAllVariantProperties). moto runs no update rule and
    retains nothing, so there only the registrations are checked."""
    _two_variant_endpoint(env)
    env.platform.scale("ep", "baseline", SCALING)
    env.platform.scale("ep", "candidate", SCALING)
    env.settle("ep")
    baseline = _config("base-alone", VariantSpec("baseline", "base", "ml.m5.large"))
    env.platform.ensure_endpoint_config(baseline)
    env.platform.update_endpoint("ep", "base-alone")
    state = env.settle("ep")
    assert state.config_name == "base-alone"
    assert env.platform.scaling("ep") == {"baseline": SCALING}
