"""An exact conditional-binomial e-value for "the candidate causes more errors".

Given the errors seen in a window, each one falls on the candidate with probability
pi = n_c / (n_b + n_c) (its share of the requests) when both arms err at the same rate. If the
candidate's rate is r times the baseline's, that probability is p(r) = pi r / (pi r + 1 - pi).
The e-value is the likelihood ratio of r against r = 1, mixed over a prior on r in [1, r_max]:
a product over windows for each r, so windows of different shares (phases) combine, and it is a
test martingale under H0 (r <= 1). Reject when it reaches 1/alpha. With no errors it is 1.

Strong evidence takes the likelihood ratio past the largest float (a log ratio over ~709), so every
e-value here is kept, combined and compared in log space: reject when log e >= log(1/alpha).
`logspace.saturating_exp` turns one into a finite number for people and JSON, never for a decision.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np

from manager.metrics.samples import ErrorWindow

# A log-uniform prior on the rate ratio r in [1, 50], on a grid fine enough for a smooth integral.
_R = np.exp(np.linspace(0.0, math.log(50.0), 400))
_WEIGHTS = np.full(_R.size, 1.0 / _R.size)


def _log_lr(pi: np.ndarray, k: np.ndarray, m: np.ndarray) -> np.ndarray:
    """log likelihood ratio on the r grid, summed over rows of (share, candidate errors, all errors)."""
    pi, k, m = pi[:, None], k[:, None], m[:, None]
    p = pi * _R / (pi * _R + 1 - pi)
    terms: np.ndarray = k * (np.log(p) - np.log(pi)) + (m - k) * (np.log1p(-p) - np.log1p(-pi))
    return np.asarray(terms.sum(axis=0))


def log_mean_exp(log_lr: np.ndarray, weights: np.ndarray | None = None) -> float:
    """log of the (weighted) mean of exp(log_lr), without ever forming exp of a large number."""
    return float(log_mean_exp_rows(log_lr[None, :], weights)[0])


def log_mean_exp_rows(log_lr: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """`log_mean_exp` of each row of a 2-D array."""
    peak = log_lr.max(axis=1)
    inner = np.exp(log_lr - peak[:, None])
    mean = inner.mean(axis=1) if weights is None else inner @ weights
    return np.asarray(peak + np.log(mean))


class HarmEvidence:
    """The e-value, accumulated window by window or batch by batch (the same number as `harm_log_evalue`
    over the same windows, whatever their order: a product over windows)."""

    def __init__(self) -> None:
        self.log_lr = np.zeros(_R.size)
        self.informative = False
        self.windows = 0  # every window added, informative or not (as `len(windows)` counts them)

    def add(self, w: ErrorWindow) -> None:
        self.add_many([w])

    def add_many(self, windows: Sequence[ErrorWindow]) -> None:
        self.windows += len(windows)
        if not windows:
            return
        bn, be, cn, ce = _columns(windows)
        m = be + ce
        keep = (bn > 0) & (cn > 0) & (m > 0)
        if not keep.any():
            return
        self.informative = True
        # Windows with the same share contribute alike: merge them, then one row per distinct share.
        shares, inverse = np.unique(cn[keep] / (bn[keep] + cn[keep]), return_inverse=True)
        self.log_lr += _log_lr(
            shares, np.bincount(inverse, weights=ce[keep]), np.bincount(inverse, weights=m[keep])
        )

    def log_values_ahead(self, share: float, candidate_errors: np.ndarray, errors: np.ndarray) -> np.ndarray:
        """The log e-value at many looks ahead at once, as if windows at one candidate `share` had added
        these cumulative candidate errors and errors (all arms) by each look: the log likelihood
        ratio is linear in the two counts, so a look costs one row of the grid."""
        pi = np.array([share])
        per_candidate_error = _log_lr(pi, np.ones(1), np.ones(1))
        per_other_error = _log_lr(pi, np.zeros(1), np.ones(1))
        grid = (
            self.log_lr[None, :]
            + candidate_errors[:, None] * per_candidate_error[None, :]
            + (errors - candidate_errors)[:, None] * per_other_error[None, :]
        )
        values = log_mean_exp_rows(grid, _WEIGHTS)
        informative = self.informative | (errors > 0)
        return np.asarray(np.where(informative, values, 0.0))

    @property
    def log_value(self) -> float:
        """log of the e-value (0 with no informative window)."""
        return log_mean_exp(self.log_lr, _WEIGHTS) if self.informative else 0.0


def _columns(windows: Iterable[ErrorWindow]) -> np.ndarray:
    rows = np.array(
        [(w.baseline_requests, w.baseline_errors, w.candidate_requests, w.candidate_errors) for w in windows],
        dtype=np.float64,
    ).reshape(-1, 4)
    return rows.T


def harm_log_evalue(windows: Iterable[ErrorWindow]) -> float:
    """log of the e-value against "the candidate's error rate is no higher than the baseline's" (all
    windows at once)."""
    evidence = HarmEvidence()
    evidence.add_many(list(windows))
    return evidence.log_value
