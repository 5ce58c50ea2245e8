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
    var_b, var_c = baseline.variance(proportion), candidate.variance(proportion)
    # A floor for the plug-in variance: with 0 or 1 successes a proportion looks certain when it is not.
    if proportion:
        var_b = max(var_b, 0.25 / (baseline.n + 1))
        var_c = max(var_c, 0.25 / (candidate.n + 1))
    v = var_b / baseline.n + var_c / candidate.n
    if v <= 0:
        return Interval(d, d, d, 0.0)
    # Information at the planned sample, from the counts: V* / V = n_eff / N*.
    n_eff = 2.0 / (1.0 / baseline.n + 1.0 / candidate.n)
    tau_sq = optimal_ratio(alpha) * v * n_eff / planned_n
    half = math.sqrt(2 * v * (v + tau_sq) / tau_sq * (math.log(1 / alpha) + 0.5 * math.log((v + tau_sq) / v)))
    return Interval(d, d - half, d + half, v)


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
