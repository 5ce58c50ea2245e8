"""Sample ratio mismatch: is the split what the weights say?

A sequential test of "the candidate's share of requests is p0" (p0 the weight in force), from the
counts per variant, valid at every look: the Dirichlet-multinomial mixture likelihood ratio of Lindon
and Malek (2020) with two categories, a Beta(k p0, k (1 - p0)) mixture over the share. Under p0 it is
a test martingale, so it crosses 1/alpha with probability at most alpha however often it is looked at
(Ville); experimentation platforms alarm at alpha = 0.001. The prior's concentration k sets where it
is most powerful: k = 3000 puts it at shifts of one or two points of the share, what a variant losing a
few percent of its requests (a crashing host, a logging gap) looks like (benchmarks/decision_quality.py
measures both error rates).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from manager.stats.logspace import saturating_exp

ALPHA = 0.001
CONCENTRATION = 3000.0


@dataclass(frozen=True)
class Ratio:
    """The counts tested and the verdict: `log_e_value` >= log(1/alpha) is a mismatch."""

    candidate: float
    total: float
    expected_share: float
    log_e_value: float
    alpha: float

    @property
    def e_value(self) -> float:
        """For display and JSON: saturates at the largest float, which a mismatch of a few
        thousand requests passes."""
        return saturating_exp(self.log_e_value)

    @property
    def observed_share(self) -> float:
        return self.candidate / self.total if self.total else 0.0

    @property
    def mismatch(self) -> bool:
        return self.log_e_value >= math.log(1.0 / self.alpha)


def log_evalue(candidate: float, total: float, p0: float, k: float = CONCENTRATION) -> float:
    """log of the mixture likelihood ratio against share p0 after `candidate` of `total`."""
    if total <= 0 or not 0.0 < p0 < 1.0:
        return 0.0
    from scipy.special import betaln  # here, not at import: scipy costs a daemon or a command 0.4 s

    x, y = candidate, total - candidate
    a, b = k * p0, k * (1.0 - p0)
    return float(betaln(a + x, b + y) - betaln(a, b) - x * math.log(p0) - y * math.log1p(-p0))


def test(candidate: float, total: float, p0: float, alpha: float = ALPHA) -> Ratio:
    return Ratio(candidate, total, p0, log_evalue(candidate, total, p0), alpha)
