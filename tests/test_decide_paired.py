"""decide() on replayed pairs and on the sample ratio: pure, table-tested, no I/O. The sample-ratio
test's error rates are checked by simulation, seeded."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from manager import policy as policies
from manager.metrics.samples import Arm, Paired, PairedSums, PhaseData, ReplayProgress
from manager.rollout.decide import decide
from manager.rollout.verdicts import SRM_REASON, RolloutState
from manager.stats import srm

NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
REPLAY = """
name: replay
target:
  endpoint: e
  candidate: {model: m, version: 2}
  captureDestination: file:///c
  groundTruth: file:///g
labelsIndependentOfServing: LABELS
steps:
  - replay: {requests: 5000, window: 7d}
  - analysis: {final: FINAL}
  - setWeight: {percent: 50}
  - analysis: {}
metrics:
  - {name: accuracy, source: quality, measure: accuracy, kind: proportion, higherIsBetter: true,
     role: primary, test: {margin: 0.01}, minSamples: 200}
  - {name: 5xx, source: cloudwatch, measure: errors_5xx, kind: errors, higherIsBetter: false, onNoData: pass}
decisions: {maxSamples: 100000}
"""


def policy(final: bool = True, labels: bool = True) -> policies.RolloutPolicy:
    text = REPLAY.replace("LABELS", str(labels).lower()).replace("FINAL", str(final).lower())
    if final:
        text = text.replace("  - setWeight: {percent: 50}\n  - analysis: {}\n", "")
    return policies.parse(text)


def state(step: int = 1, weight: float = 0.0, **kw: object) -> RolloutState:
    base = RolloutState(
        state="running",
        step=step,
        phase=0,
        weight=weight,
        started_at=NOW - timedelta(minutes=30),
        step_started_at=NOW - timedelta(minutes=5),
        phase_started_at=NOW - timedelta(minutes=10),
    )
    return replace(base, **kw)  # type: ignore[arg-type]


def paired(n: int, b: int, c: int, errors: int = 0, planned: int = 5000, agree: int | None = None) -> Paired:
    """n labelled pairs: b right only for the baseline, c only for the candidate (base accuracy 0.85)."""
    right = round(0.85 * n)
    accuracy = PairedSums(n, right, right - b + c, c - b, b + c)
    agreement = PairedSums(n, 0, n - b - c if agree is None else agree, 0, 0)
    sent = PairedSums(n, 0, errors, errors, errors)
    return Paired(
        "replay",
        {"accuracy": accuracy, "agreement": agreement, "errors": sent},
        ReplayProgress(planned=planned, done=n),
    )


def test_the_replay_step_waits_for_its_plan_then_moves_on_or_stops_with_the_refusal() -> None:
    p = policy()
    assert decide(state(step=0), p, {}, NOW).action == "wait"
    planned = Paired("replay", {}, ReplayProgress(planned=300))
    moved = decide(state(step=0), p, {}, NOW, paired=planned)
    assert (moved.action, moved.next_step) == ("advance", 1)
    refused = Paired("replay", {}, ReplayProgress(planned=0, refused="no request bodies"))
    stop = decide(state(step=0), p, {}, NOW, paired=refused)
    assert stop.action == "rollback" and "no request bodies" in stop.reason


@pytest.mark.parametrize(
    "b,c,action,words",
    [
        (30, 90, "promote", "non-inferiority shown on 1000 replayed pairs"),
        (90, 30, "rollback", "worse than the baseline"),
        (50, 50, "wait", "replaying"),
    ],
)
def test_a_final_analysis_at_weight_0_judges_the_pairs(b: int, c: int, action: str, words: str) -> None:
    decision = decide(state(), policy(), {}, NOW, paired=paired(1000, b, c))
    assert decision.action == action and words in decision.reason
    accuracy = decision.evidence["metrics"]["accuracy"]
    assert accuracy["design"] == "paired" and accuracy["discordant"] == b + c
    assert decision.evidence["paired"]["agreement_rate"] == pytest.approx((1000 - b - c) / 1000)


def test_an_exhausted_replay_with_no_decision_is_inconclusive() -> None:
    decision = decide(state(), policy(), {}, NOW, paired=paired(1000, 50, 50, planned=1000))
    assert decision.action == "rollback" and "inconclusive" in decision.reason


def test_the_candidates_errors_on_replayed_requests_roll_it_back() -> None:
    decision = decide(state(), policy(), {}, NOW, paired=paired(1000, 30, 90, errors=60))
    assert decision.action == "rollback" and "failed 60 of 1000 replayed requests" in decision.reason


def test_without_independent_labels_replay_only_smoke_tests_then_moves_to_live_traffic() -> None:
    p = policy(final=False, labels=False)
    # a worse candidate's pairs are not judged: labels could depend on what was served
    running = decide(state(), p, {}, NOW, paired=paired(1000, 90, 30, planned=2000))
    assert running.action == "wait" and "accuracy" not in running.evidence["metrics"].get("accuracy", {}).get(
        "design", ""
    )
    done = decide(state(), p, {}, NOW, paired=paired(2000, 90, 30, planned=2000))
    assert (done.action, done.next_step) == ("advance", 2)


def test_policies_refuse_a_final_analysis_on_replay_without_independent_labels() -> None:
    with pytest.raises(Exception, match="labelsIndependentOfServing"):
        policy(final=True, labels=False)


# ---- sample ratio ----------------------------------------------------------------------------------

LIVE = policies.parse(
    REPLAY.replace("LABELS", "true")
    .replace("FINAL", "false")
    .replace("  - replay: {requests: 5000, window: 7d}\n  - analysis: {final: false}\n", "")
)


def requests(baseline: int, candidate: int, phase: int = 0) -> list[PhaseData]:
    return [PhaseData(phase, Arm(baseline, baseline, baseline), Arm(candidate, candidate, candidate))]


def test_a_mismatched_split_pauses_with_the_counts_and_a_resume_starts_the_phase_afresh() -> None:
    live = state(step=1, weight=50)
    decision = decide(live, LIVE, {}, NOW, requests=requests(15_390, 14_610))
    assert decision.action == "pause" and decision.reason.startswith(SRM_REASON)
    assert "14,610 of 30,000 requests (48.7%, expected 50.0%" in decision.reason
    assert decision.evidence["sample_ratio"]["requests"]["e_value"] >= 1000
    paused = replace(live, state="paused", intent="resume", ratio_paused=True)
    resumed = decide(paused, LIVE, {}, NOW, requests=requests(15_390, 14_610))
    assert resumed.action == "resume" and resumed.restart_phase and resumed.evidence == {}


def test_the_split_is_judged_against_the_weights_in_force() -> None:
    fair_at_10 = decide(state(step=1, weight=10), LIVE, {}, NOW, requests=requests(18_000, 2_000))
    assert fair_at_10.action != "pause", fair_at_10.reason
    assert decide(state(step=1, weight=50), LIVE, {}, NOW, requests=requests(18_000, 2_000)).action == "pause"


def test_labels_missing_from_one_arm_are_a_mismatch_too() -> None:
    labelled = {"accuracy": [PhaseData(0, Arm(10_000, 8_500, 8_500), Arm(9_000, 7_650, 7_650))]}
    decision = decide(state(step=1, weight=50), LIVE, labelled, NOW, requests=requests(10_000, 10_000))
    assert decision.action == "pause" and "labelled requests" in decision.reason


def test_the_policy_can_roll_back_or_ignore_a_mismatch() -> None:
    skewed = requests(10_500, 9_500)
    rollback = LIVE.model_copy(
        update={"decisions": LIVE.decisions.model_copy(update={"on_sample_ratio_mismatch": "rollback"})}
    )
    assert decide(state(step=1, weight=50), rollback, {}, NOW, requests=skewed).action == "rollback"
    ignore = LIVE.model_copy(
        update={"decisions": LIVE.decisions.model_copy(update={"on_sample_ratio_mismatch": "ignore"})}
    )
    assert decide(state(step=1, weight=50), ignore, {}, NOW, requests=skewed).action != "pause"


def test_the_ratio_test_holds_its_alpha_and_catches_a_five_percent_loss() -> None:
    rng = np.random.default_rng(15)
    looks = np.arange(100, 200_001, 100)
    runs = 2000

    def crossed(share: float) -> np.ndarray:
        x = np.cumsum(rng.binomial(100, share, (runs, looks.size)), axis=1)
        log_e = np.vectorize(srm.log_evalue)(x[:, ::10], looks[::10], 0.5)  # every 1,000: enough here
        return (log_e >= np.log(1 / srm.ALPHA)).any(axis=1)

    assert crossed(0.5).mean() <= 0.003  # at most 0.1% in expectation; 2,000 runs
    assert crossed(0.487).mean() >= 0.99
