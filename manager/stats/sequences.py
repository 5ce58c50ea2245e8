"""Anytime-valid confidence sequences for candidate minus baseline, by the normal mixture (mSPRT).

With V the variance of the estimated difference d and mixing variance tau^2, the mixture likelihood
ratio for theta is  sqrt(V / (V + tau^2)) * exp(tau^2 (d - theta)^2 / (2 V (V + tau^2))).  It is a
test martingale, so by Ville's inequality the set of theta where it stays below 1/alpha covers the
truth at every look at once with probability at least 1 - alpha:

    |d - theta| <= sqrt(2 V (V + tau^2) / tau^2 * (log(1/alpha) + log((V + tau^2) / V) / 2))

tau^2 is tuned so that the interval is narrowest at a planned sample of N* per arm. It is fixed in
units of the information at N*, which depends on the counts only, never on the data's values.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from manager.metrics.samples import Arm


@lru_cache(maxsize=64)
def optimal_ratio(alpha: float) -> float:
    """The tau^2 / V that makes the width narrowest at V (it depends on alpha alone)."""
    from scipy.optimize import minimize_scalar

    def width_sq(log_r: float) -> float:
        r = math.exp(log_r)
        return (1 + r) / r * (math.log(1 / alpha) + 0.5 * math.log(1 + r))

    return math.exp(float(minimize_scalar(width_sq, bounds=(-10, 10), method="bounded").x))


@dataclass(frozen=True)
class Interval:
    estimate: float  # candidate minus baseline
    low: float
    high: float
    variance: float  # of the estimate

    def excludes(self, value: float) -> bool:
        return not self.low <= value <= self.high


def difference_sequence(
    baseline: Arm, candidate: Arm, alpha: float, planned_n: float, proportion: bool
) -> Interval:
    """The alpha-level confidence sequence on candidate.mean - baseline.mean at this look."""
    d = candidate.mean - baseline.mean
    if baseline.n < 2 or candidate.n < 2:
        return Interval(d, -math.inf, math.inf, math.inf)
    v = _variance(baseline, proportion) / baseline.n + _variance(candidate, proportion) / candidate.n
    if v <= 0:
        return Interval(d, d, d, 0.0)
    half = float(half_width(v, baseline.n, candidate.n, alpha, planned_n))
    return Interval(d, d - half, d + half, v)


def _variance(arm: Arm, proportion: bool) -> float:
    # A floor for the plug-in variance: with 0 or 1 successes a proportion looks certain when it is not.
    var = arm.variance(proportion)
    return max(var, 0.25 / (arm.n + 1)) if proportion else var


def half_width(v: Any, n_b: Any, n_c: Any, alpha: float, planned_n: float) -> Any:
    """The sequence's half-width for an estimate of variance v from n_b and n_c observations: numbers
    or numpy arrays of them (the simulator screens many looks at once with the same formula)."""
    # Information at the planned sample, from the counts: V* / V = n_eff / N*.
    n_eff = 2.0 / (1.0 / n_b + 1.0 / n_c)
    tau_sq = optimal_ratio(alpha) * v * n_eff / planned_n
    return np.sqrt(2 * v * (v + tau_sq) / tau_sq * (math.log(1 / alpha) + 0.5 * np.log((v + tau_sq) / v)))


def difference_bounds(
    baseline: np.ndarray, candidate: np.ndarray, alpha: float, planned_n: float, proportion: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`difference_sequence` at many looks at once: each arm an array of rows (n, total, total_sq);
    (estimate, low, high) per row, with the same special cases (fewer than 2 a side: unbounded)."""
    n_b, n_c = baseline[:, 0], candidate[:, 0]
    with np.errstate(divide="ignore", invalid="ignore"):
        mean_b = np.where(n_b > 0, baseline[:, 1] / n_b, 0.0)
        mean_c = np.where(n_c > 0, candidate[:, 1] / n_c, 0.0)
        var_b, var_c = _variances(baseline, mean_b, proportion), _variances(candidate, mean_c, proportion)
        v = var_b / n_b + var_c / n_c
        half = half_width(v, n_b, n_c, alpha, planned_n)
    d = mean_c - mean_b
    few = (n_b < 2) | (n_c < 2)
    half = np.where(v <= 0, 0.0, half)
    return d, np.where(few, -np.inf, d - half), np.where(few, np.inf, d + half)


def _variances(rows: np.ndarray, mean: np.ndarray, proportion: bool) -> np.ndarray:
    n = rows[:, 0]
    if proportion:
        p = np.clip(mean, 0.0, 1.0)
        return np.maximum(np.where(n < 2, 0.0, p * (1 - p)), 0.25 / (n + 1))
    return np.where(n < 2, 0.0, np.maximum(0.0, (rows[:, 2] - rows[:, 1] * rows[:, 1] / n) / (n - 1)))


def naive_interval(baseline: Arm, candidate: Arm, alpha: float, proportion: bool) -> Interval:
    """A fixed-sample z interval: valid at one pre-planned look only (the baseline of the benchmark)."""
    d = candidate.mean - baseline.mean
    if baseline.n < 2 or candidate.n < 2:
        return Interval(d, -math.inf, math.inf, math.inf)
    v = baseline.variance(proportion) / baseline.n + candidate.variance(proportion) / candidate.n
    half = _z(alpha) * math.sqrt(v)
    return Interval(d, d - half, d + half, v)


@lru_cache(maxsize=64)
def _z(alpha: float) -> float:
    from scipy.stats import norm

    return float(norm.ppf(1 - alpha / 2))
