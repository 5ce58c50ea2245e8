"""Paired statistics (issue 15, in part): the sequences cover the truth at every look at once, the
e-value stays a valid test under the null, and pairing needs far fewer labels than two arms."""

from __future__ import annotations

import math

import numpy as np
import pytest

from manager.metrics.samples import Arm
from manager.stats.paired import (
    Differences,
    Pairs,
    accuracy_difference_sequence,
    binomial_sequence,
    discordant_log_evalue,
    paired_mean_sequence,
)
from manager.stats.sequences import difference_sequence

ALPHA = 0.05


def _paired_outcomes(
    rng: np.random.Generator, n: int, base: float, diff: float, disagree: float
) -> tuple[np.ndarray, np.ndarray]:
    """Right/wrong for both models on the same n requests: they disagree on `disagree` of them, and
    the candidate's accuracy is `base + diff`."""
    discordant = rng.random(n) < disagree
    # Among discordant pairs the candidate wins with theta = 1/2 + diff / (2 disagree).
    theta = 0.5 + diff / (2 * disagree)
    candidate_wins = rng.random(n) < theta
    # Concordant pairs: both right with the chance that keeps the baseline's accuracy at `base`.
    both_right = rng.random(n) < (base - disagree * (1 - theta)) / (1 - disagree)
    baseline_right = np.where(discordant, ~candidate_wins, both_right)
    candidate_right = np.where(discordant, candidate_wins, both_right)
    return baseline_right, candidate_right


def test_the_binomial_sequence_is_exact_where_it_can_be_checked() -> None:
    # With no trials it says nothing; with all successes its upper end is 1; it narrows with data.
    assert binomial_sequence(0, 0, ALPHA) == (0.0, 1.0)
    assert binomial_sequence(10, 10, ALPHA)[1] == 1.0
    wide, narrow = binomial_sequence(30, 100, ALPHA), binomial_sequence(300, 1000, ALPHA)
    assert wide[0] < narrow[0] < 0.3 < narrow[1] < wide[1]
    # At its ends the Beta(1,1) mixture equals 1/alpha exactly.
    low, high = narrow
    for p in (low, high):
        log_mix = (
            math.lgamma(301) + math.lgamma(701) - math.lgamma(1002) - 300 * math.log(p) - 700 * math.log1p(-p)
        )
        assert log_mix == pytest.approx(math.log(1 / ALPHA), abs=1e-6)


def test_the_accuracy_sequence_covers_the_truth_at_every_look() -> None:
    """500 seeded runs of 2,000 pairs, looked at every 100: the share of runs where any look misses
    the true difference stays under alpha."""
    rng = np.random.default_rng(20261203)
    truth, misses = -0.02, 0
    for _ in range(500):
        b, c = _paired_outcomes(rng, 2000, 0.85, truth, 0.10)
        for n in range(100, 2001, 100):
            interval = accuracy_difference_sequence(Pairs.of(b[:n], c[:n]), ALPHA)
            if not interval.low <= truth <= interval.high:
                misses += 1
                break
    assert misses / 500 <= ALPHA


def test_the_discordant_evalue_is_a_valid_test_under_the_null() -> None:
    """Equal models (theta = 1/2) and a worse candidate: the e-value reaches 1/alpha at any look in
    under alpha of 1,000 seeded runs; a better candidate reaches it nearly always."""
    rng = np.random.default_rng(7)

    def rejected(diff: float) -> float:
        hits = 0
        for _ in range(1000):
            b, c = _paired_outcomes(rng, 3000, 0.85, diff, 0.10)
            wins = np.cumsum(c & ~b)
            losses = np.cumsum(b & ~c)
            if any(
                discordant_log_evalue(Pairs(n, int(losses[n - 1]), int(wins[n - 1]))) >= math.log(1 / ALPHA)
                for n in range(50, 3001, 50)
            ):
                hits += 1
        return hits / 1000

    assert rejected(0.0) <= ALPHA
    assert rejected(-0.02) <= ALPHA
    assert rejected(0.03) >= 0.9
    assert discordant_log_evalue(Pairs(100, 0, 0)) == 0.0


def test_pairing_needs_far_fewer_labels_than_two_arms() -> None:
    """A 2-point loss at 85% accuracy with 10% disagreement: the paired sequence excludes 0 after a
    fraction of the requests the unpaired one needs (both arms counted), same seed, same alpha."""
    rng = np.random.default_rng(11)
    b, c = _paired_outcomes(rng, 40_000, 0.85, -0.02, 0.10)
    paired = next(
        n
        for n in range(100, 40_001, 100)
        if accuracy_difference_sequence(Pairs.of(b[:n], c[:n]), ALPHA).high < 0
    )
    # Two independent arms of the same accuracies, the design an unpaired A/B test has.
    arm_b, arm_c = rng.random(40_000) < 0.85, rng.random(40_000) < 0.83

    def arm(x: np.ndarray) -> Arm:
        return Arm(float(x.size), float(x.sum()), float(x.sum()))  # 0/1 outcomes: x^2 = x

    unpaired = next(
        n
        for n in range(500, 40_001, 500)
        if difference_sequence(arm(arm_b[:n]), arm(arm_c[:n]), ALPHA, 20_000, proportion=True).high < 0
    )
    assert paired < 0.35 * 2 * unpaired, (paired, unpaired)


def test_the_paired_mean_sequence_covers_the_mean_loss_difference() -> None:
    rng = np.random.default_rng(3)
    misses = 0
    for _ in range(400):
        loss_b = rng.exponential(1.0, 2000)
        loss_c = loss_b + rng.normal(0.05, 0.3, 2000)  # the candidate 0.05 worse per request
        d = loss_c - loss_b
        for n in range(50, 2001, 50):
            interval = paired_mean_sequence(Differences.of(d[:n]), ALPHA, planned_n=1000)
            if not interval.low <= 0.05 <= interval.high:
                misses += 1
                break
    assert misses / 400 <= ALPHA
    assert paired_mean_sequence(Differences.of(np.array([1.0])), ALPHA, 100).low == -math.inf


def test_the_sign_sequence_errs_at_most_alpha_by_exact_enumeration() -> None:
    """Under theta = 1/2 (neither model better on discordant pairs), the exact chance, by dynamic
    programming over every path of up to 200 discordant pairs looked at after each one, that the sign
    sequence ever excludes 1/2 (a false promotion or rollback at margin 0) is at most alpha."""
    from manager.stats.paired import accuracy_sign_sequence

    alive = {0: 1.0}  # successes so far -> chance of having come here without a false decision
    crossed = 0.0
    for m in range(1, 201):
        step: dict[int, float] = {}
        for k, chance in alive.items():
            for nxt in (k, k + 1):
                step[nxt] = step.get(nxt, 0.0) + chance / 2
        alive = {}
        for k, chance in step.items():
            low, high = accuracy_sign_sequence(Pairs(m, m - k, k), ALPHA)
            if low > 0.5 or high < 0.5:
                crossed += chance
            else:
                alive[k] = chance
    assert 0.0 < crossed <= ALPHA
    # and when the candidate truly wins 70% of discordant pairs, 200 of them decide it most of the time
    assert accuracy_sign_sequence(Pairs(200, 60, 140), ALPHA)[0] > 0.5
