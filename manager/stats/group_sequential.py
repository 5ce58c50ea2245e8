"""Group-sequential bounds with Lan-DeMets alpha spending, for users who can fix a maximum sample.

Bounds are found look by look so that the probability, under H0, of first crossing at look k equals
the alpha spent between looks k-1 and k; the joint law of the looks' z statistics (Brownian motion
in information time) is propagated on a grid, as gsDesign does. One-sided, upper bounds.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Literal

import numpy as np
from scipy.optimize import brentq
from scipy.stats import norm

Spending = Literal["obrien_fleming", "pocock"]


def spent(kind: Spending, alpha: float, t: float) -> float:
    """Alpha spent by information fraction t (Lan-DeMets approximations to OBF and Pocock)."""
    if t <= 0:
        return 0.0
    t = min(t, 1.0)
    if kind == "obrien_fleming":
        return float(2 - 2 * norm.cdf(norm.ppf(1 - alpha / 2) / math.sqrt(t)))
    return float(alpha * math.log(1 + (math.e - 1) * t))


def _simpson(n: int, width: float) -> np.ndarray:
    weights = np.ones(n)
    weights[1:-1:2], weights[2:-1:2] = 4.0, 2.0
    return weights * width / (3 * (n - 1))


def bounds(
    fractions: Sequence[float],
    alpha: float = 0.025,
    kind: Spending = "obrien_fleming",
    points: int = 1201,
    low: float = -10.0,
) -> list[float]:
    """Upper z bounds at each information fraction (increasing, ending at 1), one-sided level alpha.

    Look k's density, restricted to the region not yet crossed, lives on a grid from `low` to the
    bound (Simpson weights, so the cut at the bound is exact); the crossing probability at the next
    look is integrated against the exact normal tail of the increment.
    """
    t = [float(f) for f in fractions]
    if not (all(b > a for a, b in itertools.pairwise(t)) and t[0] > 0 and abs(t[-1] - 1.0) < 1e-12):
        raise ValueError("information fractions must increase strictly and end at 1")
    if points % 2 == 0:
        points += 1
    out: list[float] = []
    grid: np.ndarray | None = None
    weights = density = np.empty(0)
    previous = 0.0
    for tk in t:
        target = spent(kind, alpha, tk) - spent(kind, alpha, previous)
        if grid is None:
            b = float(norm.isf(target))
        else:
            step = math.sqrt(tk - previous)
            mass = weights * density
            start = grid * math.sqrt(previous)

            def excess(
                bound: float,
                mass: np.ndarray = mass,
                start: np.ndarray = start,
                step: float = step,
                tk: float = tk,
                target: float = target,
            ) -> float:
                return float(np.dot(mass, norm.sf((bound * math.sqrt(tk) - start) / step))) - target

            b = float(brentq(excess, low, 40.0)) if target > 0 else math.inf
        out.append(b)
        new_grid = np.linspace(low, b, points)
        if grid is None:
            density = np.asarray(norm.pdf(new_grid))
        else:
            step = math.sqrt(tk - previous)
            density = (
                norm.pdf((new_grid[:, None] * math.sqrt(tk) - grid[None, :] * math.sqrt(previous)) / step)
                * math.sqrt(tk)
                / step
            ) @ (weights * density)
        grid, weights = new_grid, _simpson(points, b - low)
        previous = tk
    return out
