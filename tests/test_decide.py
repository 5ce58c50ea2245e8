"""decide() table-tested: every rule, with no I/O."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from manager import policy as policies
from manager.metrics.samples import PhaseData
from manager.rollout.decide import decide
from manager.rollout.verdicts import RolloutState
from manager.stats.evalues import ErrorWindow
from manager.stats.sequences import Arm

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
CANARY = policies.load(Path(__file__).resolve().parent.parent / "examples" / "policies" / "canary.yaml")[0]


def state(step: int = 3, weight: float = 50, phase: int = 2, **kw: object) -> RolloutState:
    base = RolloutState(
        state="running",
        step=step,
        phase=phase,
        weight=weight,
        started_at=NOW - timedelta(minutes=30),
        step_started_at=NOW - timedelta(minutes=5),
        phase_started_at=NOW - timedelta(minutes=10),
    )
    return replace(base, **kw)  # type: ignore[arg-type]


def accuracy(base: float, cand: float, n: int, phase: int = 2) -> list[PhaseData]:
    return [PhaseData(phase, Arm(n, base * n, base * n), Arm(n, cand * n, cand * n))]


def errors(
    base_rate: float, cand_rate: float, requests: int, windows: int = 10, phase: int = 2
) -> list[PhaseData]:
    w = [ErrorWindow(requests, base_rate * requests, requests, cand_rate * requests) for _ in range(windows)]
    total = requests * windows
    return [
        PhaseData(
            phase,
            Arm(total, base_rate * total, base_rate * total),
            Arm(total, cand_rate * total, cand_rate * total),
            tuple(w),
        )
    ]


ERRORS_ONLY = (
    "metrics: [{name: e, role: primary, source: cloudwatch, measure: errors_5xx, kind: errors, "
    "higherIsBetter: false, onNoData: pass}]\n"
)
GOOD = {"accuracy": accuracy(0.85, 0.86, 20_000), "5xx": errors(0.005, 0.005, 2000)}


@pytest.mark.parametrize(
    "current,observations,action,reason",
    [
        (state(), GOOD, "promote", "non-inferiority shown"),
        (
            state(),
            {"accuracy": accuracy(0.85, 0.75, 5000), "5xx": errors(0.005, 0.005, 2000)},
            "rollback",
            "worse than the baseline",
        ),
        (
            state(),
            {"accuracy": accuracy(0.85, 0.86, 20_000), "5xx": errors(0.005, 0.02, 2000)},
            "rollback",
            "guardrail 5xx shows harm",
        ),
        (
            state(),
            {"accuracy": accuracy(0.85, 0.85, 300), "5xx": errors(0.005, 0.005, 200)},
            "wait",
            "not decided",
        ),
        (state(), {}, "wait", "not decided"),  # no data: accuracy is inconclusive, 5xx passes on no data
        (state(step=0, weight=0, phase=0), {}, "set_weight", "candidate to 5%"),
        (state(step=0, weight=5, phase=1), {}, "advance", "candidate at 5%"),
        (
            state(step=1, weight=5, phase=1),
            {"5xx": errors(0.005, 0.005, 100, phase=1), "accuracy": accuracy(0.85, 0.85, 3500, phase=1)},
            "advance",
            "no harm seen",
        ),
        (  # the canary waits for the primary's minimum sample too
            state(step=1, weight=5, phase=1),
            {"5xx": errors(0.005, 0.005, 100, phase=1), "accuracy": accuracy(0.85, 0.85, 300, phase=1)},
            "wait",
            "minimum samples",
        ),
        (
            state(step=1, weight=5, phase=1),
            {"5xx": errors(0.005, 0.005, 10, windows=1, phase=1)},
            "wait",
            "minimum samples",
        ),
        (
            state(step=1, weight=5, phase=1),
            {"5xx": errors(0.005, 0.05, 400, phase=1)},
            "rollback",
            "5xx shows harm",
        ),
        (state(step=4), GOOD, "promote", "every step passed"),
        (state(endpoint_ready=False), GOOD, "wait", "endpoint is updating"),
        (
            state(endpoint_ready=False, step_started_at=NOW - timedelta(minutes=31)),
            GOOD,
            "rollback",
            "no progress for 30m",
        ),
        (state(intent="abort", intent_reason="pager"), GOOD, "rollback", "aborted by the operator: pager"),
        (state(intent="promote", intent_reason="hotfix"), {}, "promote", "skipping the analysis: hotfix"),
        (state(intent="pause"), GOOD, "pause", "paused by the operator"),
        (state(state="paused"), GOOD, "wait", "paused"),
        (state(state="paused", intent="resume"), GOOD, "resume", "resumed"),
        (state(state="promoted"), {}, "wait", "final"),
        (
            state(started_at=NOW - timedelta(hours=3)),
            {"accuracy": accuracy(0.85, 0.85, 300)},
            "rollback",
            "maximum duration 2h",
        ),
    ],
)
def test_rules(
    current: RolloutState, observations: dict[str, list[PhaseData]], action: str, reason: str
) -> None:
    decision = decide(current, CANARY, observations, NOW)
    assert decision.action == action, decision.reason
    assert reason in decision.reason


def test_inconclusive_at_max_samples_follows_the_policy() -> None:
    flat = {"accuracy": accuracy(0.85, 0.8452, 20_000), "5xx": errors(0.005, 0.005, 2000)}
    for choice, action in (("rollback", "rollback"), ("pause", "pause"), ("extend", "wait")):
        policy = CANARY.model_copy(
            update={"decisions": CANARY.decisions.model_copy(update={"on_inconclusive": choice})}
        )
        decision = decide(state(), policy, flat, NOW)
        assert decision.action == action and "inconclusive" in decision.reason


def test_a_dry_run_metric_is_recorded_but_never_acted_on() -> None:
    slow = dict(GOOD)
    slow["latency"] = [PhaseData(2, Arm(10, 10 * 5.0, 10 * 25.0), Arm(10, 10 * 50.0, 10 * 2500.0))]
    decision = decide(state(), CANARY, slow, NOW)
    assert decision.action == "promote"
    latency = decision.evidence["metrics"]["latency"]
    assert latency["status"] == "fail" and latency["dry_run"] is True and latency["relative_change"] == 9.0


def test_a_manual_gate_pauses_until_resumed() -> None:
    gated = policies.parse(
        """
name: gated
target: {endpoint: ep, candidate: {model: m, version: 2}}
steps: [{setWeight: {percent: 10}}, {pause: {}}, {setWeight: {percent: 100}}]
"""
        + ERRORS_ONLY
    )
    running = state(step=1, weight=10, phase=1)
    assert decide(running, gated, {}, NOW).action == "pause"
    paused = replace(running, state="paused")
    assert decide(paused, gated, {}, NOW + timedelta(days=1)).action == "wait"
    resumed = decide(replace(paused, intent="resume"), gated, {}, NOW)
    assert (resumed.action, resumed.next_step) == ("resume", 2)


def test_a_timed_pause_ends_by_itself() -> None:
    timed = policies.parse(
        """
name: timed
target: {endpoint: ep, candidate: {model: m, version: 2}}
steps: [{setWeight: {percent: 10}}, {pause: {duration: 10m}}]
"""
        + ERRORS_ONLY
    )
    paused = state(step=1, weight=10, phase=1, state="paused", step_started_at=NOW - timedelta(minutes=9))
    assert decide(paused, timed, {}, NOW).action == "wait"
    assert decide(paused, timed, {}, NOW + timedelta(minutes=2)).action == "resume"


def test_no_data_that_fails_rolls_back() -> None:
    strict = CANARY.model_copy(
        update={
            "metrics": [
                m.model_copy(update={"on_no_data": "fail", "min_samples": 0}) if m.name == "5xx" else m
                for m in CANARY.metrics
            ]
        }
    )
    decision = decide(state(), strict, {"accuracy": accuracy(0.85, 0.86, 20_000)}, NOW)
    assert decision.action == "rollback" and "5xx" in decision.reason


def test_evidence_carries_every_bound_and_count() -> None:
    decision = decide(state(), CANARY, GOOD, NOW)
    acc = decision.evidence["metrics"]["accuracy"]
    assert {"improvement_low", "improvement_high", "margin", "baseline_n", "candidate_n", "alpha"} <= set(acc)
    assert acc["improvement_low"] > -0.01
    assert decision.evidence["metrics"]["5xx"]["e_value"] < 20
