"""Issue 31: per-rollout gauges on /metrics (Flagger's per-canary metrics): state, step, phase, the
candidate's weight actual and desired, and each metric's value, for each active rollout."""

from __future__ import annotations

import time
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from manager.web.metrics import Exposition

from .rollout_support import CANARY, make_world, policy_text


def _samples(body: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(body.decode())
        for s in family.samples
    }


def test_each_active_rollout_has_its_gauges(tmp_path: Path, artifacts: dict[str, Path]) -> None:
    with make_world(tmp_path, artifacts) as world, world.traffic():
        rollout_id = world.start(policy_text(CANARY, min_samples=1_000_000))  # it stays at step 1
        reconciler, deadline = world.reconciler(), time.monotonic() + 60
        exposition = Exposition(world.database)
        while True:
            reconciler.tick()
            samples = _samples(exposition()[0])
            at = (("endpoint", "churn-prod"), ("rollout", str(rollout_id)))
            seen = {labels for (name, labels) in samples if name == "variantctl_rollout_metric_value"}
            if world.rollout(rollout_id).step == 1 and seen:
                break
            assert time.monotonic() < deadline, "no metric value while the rollout ran"
            time.sleep(0.1)
        weight = "variantctl_rollout_candidate_weight_percent"
        assert samples[(weight, (*at[:1], ("kind", "actual"), *at[1:]))] == 20.0
        assert samples[(weight, (*at[:1], ("kind", "desired"), *at[1:]))] == 20.0
        assert samples[("variantctl_rollout_step", at)] == 1.0
        info = [labels for (name, labels) in samples if name == "variantctl_rollout_info"]
        assert [dict(i)["state"] for i in info] == ["running"]
        values = {dict(labels)["value"] for labels in seen if dict(labels)["metric"] == "5xx"}
        assert {"e_value", "threshold"} <= values

        world.tick_until(rollout_id, ("running",))
        with world.database.write() as session:
            from manager.registry import rollouts

            rollouts.set_intent(session, rollout_id, "abort", "done", "t")
        world.tick_until(rollout_id, ("aborted",), reconciler)
        after = _samples(exposition()[0])
        gone = [k for k in after if k[0].startswith("variantctl_rollout_") and k[0] != "variantctl_rollouts"]
        assert gone == [("variantctl_rollout_gauges_left_out", ())]  # only the count of those left out
        assert after[("variantctl_rollout_gauges_left_out", ())] == 0
