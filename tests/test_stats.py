"""The statistics, seeded and fast: anytime validity under repeated looks, the naive control, the
error-count e-value, and group-sequential bounds against gsDesign's published values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from manager.stats.evalues import ErrorWindow, HarmEvidence, harm_log_evalue
from manager.stats.group_sequential import bounds
from manager.stats.sequences import Arm, difference_sequence, naive_interval

ALPHA = 0.05
LOOKS = range(100, 20_001, 100)


def _aa_false_rates(runs: int, draw: str, seed: int) -> tuple[float, float]:
    """Share of A/A streams whose interval ever excludes 0: (confidence sequence, naive z)."""
    rng = np.random.default_rng(seed)
    n_max = LOOKS[-1]
    if draw == "bernoulli":
        a, b = rng.random((runs, n_max)) < 0.85, rng.random((runs, n_max)) < 0.85
        a, b = a.astype(float), b.astype(float)
    else:
        a, b = rng.lognormal(3.0, 0.5, (runs, n_max)), rng.lognormal(3.0, 0.5, (runs, n_max))
    proportion = draw == "bernoulli"
    sa, sb = np.cumsum(a, axis=1), np.cumsum(b, axis=1)
    qa, qb = np.cumsum(a * a, axis=1), np.cumsum(b * b, axis=1)
    sequence_false = naive_false = 0
    for r in range(runs):
        seq_hit = naive_hit = False
        for n in LOOKS:
            base = Arm(n, sa[r, n - 1], qa[r, n - 1])
            cand = Arm(n, sb[r, n - 1], qb[r, n - 1])
            seq_hit = seq_hit or difference_sequence(base, cand, ALPHA, 5000, proportion).excludes(0.0)
            naive_hit = naive_hit or naive_interval(base, cand, ALPHA, proportion).excludes(0.0)
            if seq_hit and naive_hit:
                break
        sequence_false += seq_hit
        naive_false += naive_hit
    return sequence_false / runs, naive_false / runs


@pytest.mark.slow
@pytest.mark.parametrize("draw", ["bernoulli", "lognormal"])
def test_aa_false_decisions_stay_within_alpha_and_naive_z_does_not(draw: str) -> None:
    runs = 2000
    sequence, naive = _aa_false_rates(runs, draw, seed=11)
    se = math.sqrt(ALPHA * (1 - ALPHA) / runs)
    assert sequence <= ALPHA + 3 * se, f"confidence sequence: {sequence:.3f} false decisions in A/A"
    assert naive > 0.30, f"negative control: naive repeated z-tests only {naive:.3f}"


def test_the_sequence_narrows_and_finds_a_real_difference() -> None:
    rng = np.random.default_rng(3)
    a, b = rng.random(20_000) < 0.85, rng.random(20_000) < 0.80  # candidate 5 points worse
    widths, decided = [], None
    for n in LOOKS:
        interval = difference_sequence(
            Arm(n, a[:n].sum(), a[:n].sum()), Arm(n, b[:n].sum(), b[:n].sum()), ALPHA, 5000, True
        )
        widths.append(interval.high - interval.low)
        if decided is None and interval.high < 0:
            decided = n
    assert widths == sorted(widths, reverse=True)
    assert decided is not None and decided <= 3000


def test_no_data_is_an_unbounded_interval() -> None:
    interval = difference_sequence(Arm(0, 0, 0), Arm(1, 1, 1), ALPHA, 5000, True)
    assert (interval.low, interval.high) == (-math.inf, math.inf)


def test_evalue_is_one_without_errors_or_requests() -> None:
    assert harm_log_evalue([]) == 0.0
    assert harm_log_evalue([ErrorWindow(100, 0, 100, 0)]) == 0.0
    assert harm_log_evalue([ErrorWindow(0, 0, 0, 0)]) == 0.0


def test_evalue_false_alarms_stay_within_alpha() -> None:
    rng = np.random.default_rng(5)
    runs, alarms = 1000, 0
    for _ in range(runs):
        evidence = HarmEvidence()
        for _ in range(100):  # 100 checks of 200 requests per arm at a 0.5% error rate on both
            evidence.add(ErrorWindow(200, rng.binomial(200, 0.005), 200, rng.binomial(200, 0.005)))
            if evidence.log_value >= math.log(1 / ALPHA):
                alarms += 1
                break
    assert alarms / runs <= ALPHA + 3 * math.sqrt(ALPHA * (1 - ALPHA) / runs)


def test_evalue_finds_three_times_the_errors_across_phases_of_different_shares() -> None:
    rng = np.random.default_rng(9)
    windows = []
    for share in (0.05, 0.25, 0.5):  # the canary's share grows; the e-value spans the phases
        for _ in range(10):
            requests = 1000
            candidate = int(requests * share)
            windows.append(
                ErrorWindow(
                    requests - candidate,
                    rng.binomial(requests - candidate, 0.005),
                    candidate,
                    rng.binomial(candidate, 0.015),
                )
            )
    assert harm_log_evalue(windows) >= math.log(1 / ALPHA)
    fewer = [ErrorWindow(w.baseline_requests, w.baseline_errors, w.candidate_requests, 0) for w in windows]
    assert harm_log_evalue(fewer) < 0  # a candidate with no errors is evidence against harm


def test_group_sequential_bounds_match_gsdesign() -> None:
    # gsDesign::gsDesign(k=5, test.type=1, alpha=0.025, sfu=sfLDOF)$upper$bound
    assert bounds([0.2, 0.4, 0.6, 0.8, 1.0], 0.025, "obrien_fleming") == pytest.approx(
        [4.877, 3.357, 2.680, 2.290, 2.031], abs=1e-3
    )
    # gsDesign::gsDesign(k=5, test.type=1, alpha=0.025, sfu=sfLDPocock)$upper$bound
    assert bounds([0.2, 0.4, 0.6, 0.8, 1.0], 0.025, "pocock") == pytest.approx(
        [2.438, 2.427, 2.410, 2.397, 2.386], abs=1e-3
    )
    with pytest.raises(ValueError):
        bounds([0.5, 0.4, 1.0])


def test_the_batch_evalue_equals_the_incremental_one() -> None:
    rng = np.random.default_rng(1)
    windows = [
        ErrorWindow(float(b), float(rng.binomial(b, 0.01)), float(c), float(rng.binomial(c, 0.02)))
        for b, c in zip(rng.integers(50, 500, 60), rng.integers(5, 500, 60), strict=True)
    ]
    incremental = HarmEvidence()
    for w in windows:
        incremental.add(w)
    assert harm_log_evalue(windows) == pytest.approx(incremental.log_value, rel=1e-9)
