"""Regression-adjusted confidence sequences (CUPED / CUPAC with anytime validity).

Each request carries a covariate x that does not depend on which variant served it: the prediction
of a model fitted on the baseline's labelled history from *before* the rollout started (its
correctness or its loss, from the captured input alone). The estimate of candidate minus baseline is

    d = (mean_c(y) - mean_b(y)) - theta (mean_c(x) - mean_b(x)),

theta the pooled within-arm regression slope of y on x. Randomisation makes the x term 0 on average,
so d estimates the same difference as the unadjusted test, with the variance of the residuals
y - theta x: (1 - rho^2) of the unadjusted one for a covariate correlated rho with the outcome (Deng,
Xu, Kohavi and Walker, "Improving the sensitivity of online controlled experiments by utilizing
pre-experiment data", WSDM 2013; Lin, "Agnostic notes on regression adjustments to experimental
data", 2013). Its variance, estimated from each arm's residuals (robust to heteroskedasticity),
goes into the same normal-mixture boundary as `sequences.difference_sequence`: the asymptotic
confidence sequence of Waudby-Smith, Arbour, Sinha, Kennedy and Ramdas ("Time-uniform central limit
theory and asymptotic confidence sequences", 2021, arXiv:2103.06476), which is what Lindon, Ham,
Tingley and Bojinov derive for regression adjustment in randomised experiments ("Anytime-Valid Linear
Models and Regression Adjusted Causal Inference in Randomized Experiments", 2022, arXiv:2210.08589).

Below MIN_ADJUSTED observations a side, or with a covariate that does not vary (none recorded), the
test is exactly the unadjusted one. A covariate fitted on data from after the start is refused where
it is fitted (`metrics.covariate`): one that has seen the rollout's outcomes follows the arms, and the
x term then cancels the very difference under test.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from manager.metrics.samples import Arm
from manager.stats.sequences import Interval, difference_sequence, half_width

MIN_ADJUSTED = 30  # observations per arm before the slope is estimated


@dataclass(frozen=True)
class Adjustment:
    theta: float  # the slope of the outcome on the covariate, pooled within arms
    variance_ratio: float  # the adjusted estimate's variance over the unadjusted one's
    unadjusted: Interval  # the sequence without the covariate, for comparison

    @property
    def explained(self) -> float:
        """The share of the estimate's variance the covariate took away (about rho squared)."""
        return 1.0 - self.variance_ratio


def adjusted_sequence(
    baseline: Arm, candidate: Arm, alpha: float, planned_n: float, proportion: bool
) -> tuple[Interval, Adjustment | None]:
    """The alpha-level confidence sequence on candidate minus baseline, adjusted by the covariate
    (None for the adjustment when the unadjusted sequence was used)."""
    plain = difference_sequence(baseline, candidate, alpha, planned_n, proportion)
    rows = np.array([_row(baseline)]), np.array([_row(candidate)])
    d, low, high, v, theta = (float(a[0]) for a in adjusted_bounds(*rows, alpha, planned_n, proportion))
    if not np.isfinite(theta):
        return plain, None
    ratio = float(v / plain.variance) if plain.variance > 0 else 1.0
    return Interval(d, low, high, v), Adjustment(theta, ratio, plain)


def _row(arm: Arm) -> tuple[float, ...]:
    return arm.n, arm.total, arm.total_sq, arm.x_total, arm.x_sq, arm.xy


def adjusted_bounds(
    baseline: np.ndarray, candidate: np.ndarray, alpha: float, planned_n: float, proportion: bool
) -> tuple[np.ndarray, ...]:
    """At many looks at once: each arm an array of rows (n, total, total_sq, x_total, x_sq, xy);
    (estimate, low, high, variance, theta) per row; theta is nan where the look is not adjusted
    (too few observations, or no variation in x), and the rest are then NaN too."""
    n_b, n_c = baseline[:, 0], candidate[:, 0]
    with np.errstate(divide="ignore", invalid="ignore"):
        sxx_b, sxy_b, syy_b = _centred(baseline)
        sxx_c, sxy_c, syy_c = _centred(candidate)
        theta = (sxy_b + sxy_c) / (sxx_b + sxx_c)
        resid_b = np.maximum(0.0, syy_b - 2 * theta * sxy_b + theta * theta * sxx_b) / (n_b - 1)
        resid_c = np.maximum(0.0, syy_c - 2 * theta * sxy_c + theta * theta * sxx_c) / (n_c - 1)
        if proportion:  # the floor of the unadjusted test: a few hits look certain when they are not
            resid_b, resid_c = np.maximum(resid_b, 0.25 / (n_b + 1)), np.maximum(resid_c, 0.25 / (n_c + 1))
        v = resid_b / n_b + resid_c / n_c
        d = (candidate[:, 1] / n_c - baseline[:, 1] / n_b) - theta * (
            candidate[:, 3] / n_c - baseline[:, 3] / n_b
        )
        half = half_width(v, n_b, n_c, alpha, planned_n)
    usable = (np.minimum(n_b, n_c) >= MIN_ADJUSTED) & (sxx_b + sxx_c > 1e-12 * (n_b + n_c)) & (v > 0)
    nan = np.full(len(n_b), np.nan)
    return (
        np.where(usable, d, nan),
        np.where(usable, d - half, nan),
        np.where(usable, d + half, nan),
        np.where(usable, v, nan),
        np.where(usable, theta, nan),
    )


def _centred(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Within-arm centred sums: of x squared, x times y, y squared."""
    n, y, yy, x, xx, xy = rows.T
    return xx - x * x / n, xy - x * y / n, yy - y * y / n
