"""Every e-value, confidence sequence and likelihood in `stats/` at extreme counts: a million pieces of
evidence one way and none the other, and the reverse. Strong evidence must give a finite decision in
the right direction, never an OverflowError, an inf or a NaN (a log likelihood ratio passes 709, where
exp overflows, long before that). The decisions built on them are checked too, down to the audit
record's JSON, which refuses inf and NaN."""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from manager import policy as policies
from manager.history.audit import canonical_json
from manager.metrics.samples import Arm, ErrorWindow, Paired, PairedSums, PhaseData, ReplayProgress
from manager.rollout.decide import decide
from manager.rollout.verdicts import RolloutState
from manager.stats import evalues, logspace, paired, sequences, srm
from manager.stats.paired import Differences, Pairs

ALPHA = 0.05
LEVEL = math.log(1 / ALPHA)
MILLION = 10**6
# (evidence for the candidate, evidence against it): overwhelming either way, both, or none.
EXTREMES = [(MILLION, 0), (0, MILLION), (MILLION, MILLION), (10**9, 1), (1, 10**9), (0, 0)]


def finite(*values: float) -> bool:
    return all(math.isfinite(v) for v in values)


@pytest.mark.parametrize(("better", "worse"), EXTREMES)
def test_the_discordant_pairs_evalue_is_finite_and_points_the_right_way(better: int, worse: int) -> None:
    log_e = paired.discordant_log_evalue(Pairs(better + worse + 5, worse, better))
    assert finite(log_e)
    if better > 100 * max(worse, 1):
        assert log_e > LEVEL  # the candidate is better: rejected, however strong
    if worse >= better:
        assert log_e < LEVEL


def _harm_windows(candidate_errors: int, baseline_errors: int) -> list[ErrorWindow]:
    return [ErrorWindow(2 * MILLION, baseline_errors, 2 * MILLION, candidate_errors)] * 3


@pytest.mark.parametrize(("more", "fewer"), EXTREMES)
def test_the_harm_evalue_is_finite_and_points_the_right_way(more: int, fewer: int) -> None:
    windows = _harm_windows(more, fewer)
    log_e = evalues.harm_log_evalue(windows)
    running = evalues.HarmEvidence()
    for w in windows:
        running.add(w)
    assert finite(log_e, running.log_value)
    assert running.log_value == pytest.approx(log_e, rel=1e-9)
    if more > 100 * max(fewer, 1):
        assert log_e > LEVEL
    if fewer >= more:
        assert log_e < LEVEL
    assert finite(logspace.saturating_exp(log_e))


@pytest.mark.parametrize(("candidate", "total"), [(MILLION, MILLION), (0, MILLION), (10**9, 2 * 10**9)])
def test_the_sample_ratio_test_is_finite_at_a_million_requests(candidate: int, total: int) -> None:
    ratio = srm.test(candidate, total, 0.5)
    assert finite(ratio.log_e_value, ratio.e_value)
    assert ratio.mismatch is (candidate != total / 2)


@pytest.mark.parametrize(("better", "worse"), EXTREMES)
def test_the_binomial_and_accuracy_sequences_stay_inside_their_ranges(better: int, worse: int) -> None:
    pairs = Pairs(better + worse + 5, worse, better)
    low, high = paired.binomial_sequence(better, better + worse, ALPHA)
    assert 0.0 <= low <= high <= 1.0
    t_low, t_high = paired.accuracy_sign_sequence(pairs, ALPHA)
    assert 0.0 <= t_low <= t_high <= 1.0
    interval = paired.accuracy_difference_sequence(pairs, ALPHA)
    assert finite(interval.low, interval.high, interval.variance)
    assert -1.0 <= interval.low <= interval.estimate <= interval.high <= 1.0
    if better > 100 * max(worse, 1):
        assert t_low > 0.5 and interval.low > 0
    if worse > 100 * max(better, 1):
        assert t_high < 0.5 and interval.high < 0


@pytest.mark.parametrize("n", [MILLION, 10**9])
@pytest.mark.parametrize(("base_rate", "cand_rate"), [(0.0, 1.0), (1.0, 0.0), (1.0, 1.0), (0.0, 0.0)])
def test_the_normal_mixture_sequences_are_finite_at_extreme_counts(
    n: int, base_rate: float, cand_rate: float
) -> None:
    base, cand = Arm(n, base_rate * n, base_rate * n), Arm(n, cand_rate * n, cand_rate * n)
    interval = sequences.difference_sequence(base, cand, ALPHA, 5000, proportion=True)
    assert finite(interval.low, interval.high)
    assert interval.low <= cand_rate - base_rate <= interval.high
    if cand_rate != base_rate:
        assert interval.excludes(0.0)
    for mean, variance in ((1e6, 1e-12), (-1e6, 1e12), (0.0, 1e-300)):
        diff = paired.paired_mean_sequence(Differences(n, mean, variance), ALPHA, 5000)
        assert finite(diff.low, diff.high) and diff.low <= mean <= diff.high


# ---- the decisions built on them ------------------------------------------------------------------

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
POLICY = """
name: extremes
target: {endpoint: e, candidate: {model: m, version: 2}, captureDestination: file:///c,
         groundTruth: file:///g}
labelsIndependentOfServing: true
steps:
  - replay: {requests: 5000, window: 7d}
  - analysis: {final: true}
metrics:
  - {name: accuracy, source: quality, measure: accuracy, kind: proportion, higherIsBetter: true,
     role: primary, test: {margin: MARGIN}, minSamples: 200}
  - {name: 5xx, source: cloudwatch, measure: errors_5xx, kind: errors, higherIsBetter: false,
     onNoData: pass}
decisions: {maxSamples: 1000000000}
"""


def _state(step: int, weight: float) -> RolloutState:
    return RolloutState(
        state="running",
        step=step,
        phase=0,
        weight=weight,
        started_at=NOW - timedelta(minutes=30),
        step_started_at=NOW - timedelta(minutes=5),
        phase_started_at=NOW - timedelta(minutes=10),
    )


def _pairs(better: int, worse: int) -> Paired:
    n = better + worse + 10
    right = n - worse - 5
    accuracy = PairedSums(n, right, right - worse + better, better - worse, better + worse)
    return Paired(
        "replay",
        {
            "accuracy": accuracy,
            "agreement": PairedSums(n, 0, n - better - worse, 0, 0),
            "errors": PairedSums(n, 0, 0, 0, 0),  # every replayed request answered
        },
        ReplayProgress(planned=n, done=n),
    )


Check = Callable[[str], bool]


@pytest.mark.parametrize("margin", ["0", "0.01"])
@pytest.mark.parametrize(
    ("better", "worse", "expected"),
    [(MILLION, 0, lambda a: a == "promote"), (0, MILLION, lambda a: a == "rollback")],
)
def test_a_paired_decision_on_a_million_discordant_pairs_is_taken_and_recorded(
    margin: str, better: int, worse: int, expected: Check
) -> None:
    policy = policies.parse(POLICY.replace("MARGIN", margin))
    decision = decide(_state(1, 0.0), policy, {}, NOW, paired=_pairs(better, worse))
    assert expected(decision.action), decision.reason
    canonical_json(decision.evidence)  # the audit record refuses inf and NaN


@pytest.mark.parametrize(("candidate_errors", "baseline_errors"), [(MILLION, 0), (0, MILLION)])
def test_a_live_decision_on_a_million_errors_is_taken_and_recorded(
    candidate_errors: int, baseline_errors: int
) -> None:
    policy = policies.parse(
        POLICY.replace("MARGIN", "0.01").replace(
            "  - analysis: {final: true}", "  - setWeight: {percent: 50}\n  - analysis: {final: true}"
        )
    )
    requests = 4 * MILLION
    windows = tuple(_harm_windows(candidate_errors, baseline_errors))
    errors = [
        PhaseData(
            1,
            Arm(3 * requests, 3 * baseline_errors, 3 * baseline_errors),
            Arm(3 * requests, 3 * candidate_errors, 3 * candidate_errors),
            windows,
        )
    ]
    rng = np.random.default_rng(26)
    right = rng.binomial(requests, 0.9)
    accuracy = [PhaseData(1, Arm(requests, right, right), Arm(requests, right, right))]
    state = RolloutState(
        state="running",
        step=2,
        phase=1,
        weight=50.0,
        started_at=NOW - timedelta(hours=3),
        step_started_at=NOW - timedelta(hours=1),
        phase_started_at=NOW - timedelta(hours=1),
    )
    decision = decide(state, policy, {"5xx": errors, "accuracy": accuracy}, NOW)
    verdict = decision.evidence["metrics"]["5xx"]
    assert finite(verdict["log_e_value"], verdict["e_value"])
    if candidate_errors:
        assert decision.action == "rollback", decision.reason
        assert verdict["log_e_value"] > math.log(verdict["threshold"])
    else:
        assert verdict["status"] == "pass"
    canonical_json(decision.evidence)
