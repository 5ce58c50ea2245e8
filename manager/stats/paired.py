"""Anytime-valid comparisons of two models scored on the same requests (paired designs).

Proportions (accuracy). Of n labelled pairs, b had the baseline right and the candidate wrong, c the
reverse; the rest agree and say nothing about the difference. The accuracy difference is
Delta = q (2 theta - 1), with q the chance that a pair is discordant and theta the chance that a
discordant pair favours the candidate. Both are binomial chances, each followed by a beta-binomial
mixture confidence sequence (Robbins): with a Beta(1, 1) prior, the mixture of likelihood ratios
against p is a test martingale under p, so the set of p where it stays below 2/alpha covers p at
every look with probability 1 - alpha/2 (Ville). The two sequences hold together with probability
1 - alpha (a union bound), and Delta's bounds follow from theirs. `discordant_log_evalue` is the log
of the exact McNemar-style e-value against "theta <= 1/2" (the candidate no better): a mixture over
theta in [1/2, 1], a supermartingale under every theta <= 1/2.

Continuous losses. Per-request loss differences (candidate minus baseline) are one sample; the
normal-mixture confidence sequence of `sequences` applies to their mean with V = s^2 / n.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from manager.stats.evalues import log_mean_exp
from manager.stats.sequences import Interval, optimal_ratio

# The Beta(a, a) prior of the sign test's mixture: centred on 1/2, where the sign is decided, and wide
# enough for the theta of a typical retrain (0.6-0.7: 5-10% disagreement, a 1-2 point difference).
# benchmarks/decision_quality.py measures it; a = 1 (uniform) needs about 15% more pairs there.
SIGN_PRIOR = 5.0


def _log_mixture(p: float, k: int, m: int, a: float = 1.0) -> float:
    """log of the Beta(a, a)-mixture likelihood ratio against the chance p (0 < p < 1), after k of m."""
    from scipy.special import betaln  # here, not at import: scipy costs a daemon or a command 0.4 s

    return float(betaln(a + k, a + m - k) - betaln(a, a) - k * math.log(p) - (m - k) * math.log1p(-p))


def binomial_sequence(k: int, m: int, alpha: float, prior: float = 1.0) -> tuple[float, float]:
    """The confidence sequence for a chance p after k successes in m trials, at level 1 - alpha; the
    mixture's prior is Beta(prior, prior) (any fixed prior gives a valid sequence)."""
    if m <= 0:
        return 0.0, 1.0
    from scipy.optimize import brentq

    level = math.log(1.0 / alpha)
    a = prior

    def excess(p: float) -> float:
        return _log_mixture(p, k, m, a) - level

    # The mixture is smallest at k/m, where the likelihood peaks (a marginal likelihood never exceeds
    # the maximum one, so k/m is always inside), and grows without bound towards 0 (if k > 0) and 1
    # (if k < m).
    centre = min(max(k / m, 1e-12), 1 - 1e-12)  # kept inside (0, 1), where the mixture is finite
    low = 0.0
    if k > 0 and excess(1e-12) > 0:
        low = brentq(excess, 1e-12, centre, xtol=1e-12)
    high = 1.0
    if k < m and excess(1 - 1e-12) > 0:
        high = brentq(excess, centre, 1 - 1e-12, xtol=1e-12)
    return float(low), float(high)


def accuracy_sign_sequence(pairs: Pairs, alpha: float) -> tuple[float, float]:
    """The 1 - alpha confidence sequence on theta, the chance that a discordant pair favours the
    candidate: the sign of the accuracy difference is that of theta - 1/2, so a two-sided decision at
    margin 0 needs this sequence alone, at the full alpha (no union bound with the discordance)."""
    return binomial_sequence(pairs.candidate_only, pairs.discordant, alpha, SIGN_PRIOR)


@dataclass(frozen=True)
class Pairs:
    """Labelled pairs so far: all of them, and the two kinds of disagreement about who is right."""

    n: int
    baseline_only: int  # b: the baseline right, the candidate wrong
    candidate_only: int  # c: the candidate right, the baseline wrong

    @property
    def discordant(self) -> int:
        return self.baseline_only + self.candidate_only

    @classmethod
    def of(cls, baseline_right: np.ndarray, candidate_right: np.ndarray) -> Pairs:
        b = np.asarray(baseline_right, dtype=bool)
        c = np.asarray(candidate_right, dtype=bool)
        return cls(int(b.size), int(np.sum(b & ~c)), int(np.sum(c & ~b)))


def accuracy_difference_sequence(pairs: Pairs, alpha: float) -> Interval:
    """The 1 - alpha confidence sequence on candidate accuracy minus baseline accuracy, from pairs."""
    n, m = pairs.n, pairs.discordant
    estimate = (pairs.candidate_only - pairs.baseline_only) / n if n else 0.0
    if n == 0:
        return Interval(estimate, -1.0, 1.0, math.inf)
    q_low, q_high = binomial_sequence(m, n, alpha / 2)
    t_low, t_high = binomial_sequence(pairs.candidate_only, m, alpha / 2)
    # Delta = q (2 theta - 1): each bound takes the q that pushes it furthest out.
    lower = 2 * t_low - 1
    upper = 2 * t_high - 1
    low = (q_low if lower >= 0 else q_high) * lower
    high = (q_high if upper >= 0 else q_low) * upper
    variance = (m / n - ((pairs.candidate_only - pairs.baseline_only) / n) ** 2) / n
    return Interval(estimate, low, high, max(variance, 0.0))


# theta on a grid over [1/2, 1] with a uniform prior: the alternatives "the candidate is better".
_THETA = np.linspace(0.5, 1.0, 401)[1:]
_LOG_THETA, _LOG_NOT = np.log(_THETA), np.log1p(-np.minimum(_THETA, 1 - 1e-12))


def discordant_log_evalue(pairs: Pairs) -> float:
    """log of the e-value against "the candidate is no more accurate" (theta <= 1/2), from discordant
    pairs; it passes any float's range once the pairs are many and one-sided, so it stays a log."""
    b, c = pairs.baseline_only, pairs.candidate_only
    if b + c == 0:
        return 0.0
    return log_mean_exp(c * _LOG_THETA + b * _LOG_NOT + (b + c) * math.log(2.0))


@dataclass(frozen=True)
class Differences:
    """Running moments of per-request loss differences (candidate minus baseline)."""

    n: int
    mean: float
    variance: float  # sample variance of the differences

    @classmethod
    def of(cls, differences: np.ndarray) -> Differences:
        d = np.asarray(differences, dtype=np.float64)
        return cls(
            int(d.size), float(d.mean()) if d.size else 0.0, float(d.var(ddof=1)) if d.size > 1 else 0.0
        )


def paired_mean_sequence(diffs: Differences, alpha: float, planned_n: float) -> Interval:
    """The alpha-level normal-mixture confidence sequence on the mean loss difference."""
    if diffs.n < 2:
        return Interval(diffs.mean, -math.inf, math.inf, math.inf)
    v = diffs.variance / diffs.n
    if v <= 0:
        return Interval(diffs.mean, diffs.mean, diffs.mean, 0.0)
    tau_sq = optimal_ratio(alpha) * v * diffs.n / planned_n
    half = math.sqrt(2 * v * (v + tau_sq) / tau_sq * (math.log(1 / alpha) + 0.5 * math.log((v + tau_sq) / v)))
    return Interval(diffs.mean, diffs.mean - half, diffs.mean + half, v)
