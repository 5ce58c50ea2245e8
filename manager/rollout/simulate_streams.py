"""The simulator's synthetic streams: each metric's draws for both arms, a block of batches at a time
(`Source`), the phases they land in (`SimPhase`), the batches whose labels are on their way
(`Batch`), and each error metric's e-value kept window by window (`Harms`).

Draws come in blocks so that `simulate_looks.screen` can look ahead at the batches to come; the
look-by-look path takes the same blocks, so a seed gives the same streams either way.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import TYPE_CHECKING

import numpy as np

from manager.metrics.samples import Arm, ErrorWindow, PhaseData
from manager.stats.evalues import HarmEvidence

if TYPE_CHECKING:
    from manager.rollout.simulate import Scenario

FIRST_BLOCK, LAST_BLOCK = 16, 1024  # batches per block: doubling, so short runs draw little ahead


WIDTH = 6  # per batch and arm: n, sum, sum of squares, and the covariate's sum, sum of squares, cross sum


def draws(
    rng: np.random.Generator, scenario: Scenario, n: int, size: int, candidate: bool, covariate: bool
) -> np.ndarray:
    """`size` batches of `n` observations of one arm: rows of (n, sum, sum of squares) and, with a
    `covariate`, the sums of x, x squared and x times the value (x drawn request by request, before
    and whatever the arm, correlated `scenario.rho` with the outcome)."""
    rows = np.zeros((size, WIDTH))
    if n <= 0:
        return rows
    rows[:, 0] = n
    if covariate:
        x = rng.standard_normal((size, n))
        values = _outcomes(rng, scenario, x, candidate)
        rows[:, 1], rows[:, 2] = values.sum(axis=1), np.einsum("ij,ij->i", values, values)
        rows[:, 3], rows[:, 4] = x.sum(axis=1), np.einsum("ij,ij->i", x, x)
        rows[:, 5] = np.einsum("ij,ij->i", x, values)
        return rows
    if scenario.kind == "quantile":
        over = (latencies(rng, scenario, (size, n), candidate) > scenario.cutoff).sum(axis=1)
        rows[:, 1] = rows[:, 2] = over  # requests over the threshold, counted as errors are
        return rows
    if scenario.kind == "mean":
        median = scenario.candidate if candidate else scenario.baseline
        # The scenario's effect is on the mean: the lognormal mean is median * exp(sigma^2 / 2).
        values = (
            latencies(rng, scenario, (size, n), candidate)  # a longer tail above `cutoff`
            if scenario.shape == "tail"
            else rng.lognormal(math.log(median), scenario.sigma, (size, n))
        )
        rows[:, 1], rows[:, 2] = values.sum(axis=1), np.einsum("ij,ij->i", values, values)
        return rows
    p = scenario.candidate if candidate else scenario.baseline
    rows[:, 1] = rows[:, 2] = rng.binomial(n, min(max(p, 0.0), 1.0), size)
    return rows


def latencies(
    rng: np.random.Generator, scenario: Scenario, shape: tuple[int, int], candidate: bool
) -> np.ndarray:
    """Lognormal latencies (median `baseline`); the candidate's scaled by 1 + effect (`shape: scale`), or
    with the tail above the metric's threshold stretched so that the mean rises by `effect` while
    the share over the threshold stays the same (`shape: tail`)."""
    values = rng.lognormal(math.log(scenario.baseline), scenario.sigma, shape)
    if not candidate or scenario.effect == 0:
        return values
    if scenario.shape == "scale":
        return values * (1 + scenario.effect)
    cut = scenario.cutoff or scenario.baseline
    mu, sigma, normal = math.log(scenario.baseline), scenario.sigma, NormalDist()
    mean = math.exp(mu + sigma * sigma / 2)
    z = (math.log(cut) - mu) / sigma
    above = mean * (1 - normal.cdf(z - sigma)) - cut * (1 - normal.cdf(z))  # E[(L - cut)+]
    stretch = 1 + scenario.effect * mean / above
    return np.where(values > cut, cut + stretch * (values - cut), values)


def _outcomes(rng: np.random.Generator, scenario: Scenario, x: np.ndarray, candidate: bool) -> np.ndarray:
    """Each request's outcome given its covariate: a probit (a hit when rho_l x + noise clears the
    arm's threshold) for rates, a lognormal whose log is correlated rho with x for means."""
    noise = rng.standard_normal(x.shape)
    if scenario.kind == "mean":
        median = scenario.candidate if candidate else scenario.baseline
        rho = scenario.rho or 0.0
        return np.exp(math.log(median) + scenario.sigma * (rho * x + math.sqrt(1 - rho * rho) * noise))
    p = min(max(scenario.candidate if candidate else scenario.baseline, 1e-9), 1 - 1e-9)
    latent = latent_rho(scenario)
    return (latent * x + math.sqrt(1 - latent * latent) * noise > NormalDist().inv_cdf(1 - p)).astype(float)


def latent_rho(scenario: Scenario) -> float:
    """The probit's correlation that gives the baseline's 0/1 outcome a correlation `rho` with x
    (point-biserial: rho = rho_l phi(t) / sqrt(p (1 - p))); ValueError when no probit reaches it."""
    if not scenario.rho or scenario.kind == "mean":
        return scenario.rho or 0.0
    p = min(max(scenario.baseline, 1e-9), 1 - 1e-9)
    normal = NormalDist()
    most = normal.pdf(normal.inv_cdf(1 - p)) / math.sqrt(p * (1 - p))
    if abs(scenario.rho) > most:
        raise ValueError(
            f"a covariate correlated {scenario.rho:g} with a 0/1 outcome at rate {scenario.baseline:g}"
            f" cannot be simulated: at most {most:.2f}"
        )
    return scenario.rho / most


class Source:
    """Every flow's draws for both arms at one split (n_b, n_c per batch), a block at a time: a new
    split starts a new block."""

    def __init__(self, rng: np.random.Generator, flows: dict[str, Scenario], covariates: set[str]) -> None:
        self.rng, self.flows, self.covariates = rng, flows, covariates
        self.split: tuple[int, int] | None = None
        self.size = FIRST_BLOCK
        self.blocks: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self.used = 0

    def ahead(self, n_b: int, n_c: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """The batches not yet taken: (baseline rows, candidate rows) per metric, at least one."""
        if self.split != (n_b, n_c):
            self.split, self.size = (n_b, n_c), FIRST_BLOCK
            self._fill()
        elif self.used >= self.size:
            self.size = min(LAST_BLOCK, 2 * self.size)
            self._fill()
        return {name: (b[self.used :], c[self.used :]) for name, (b, c) in self.blocks.items()}

    def _fill(self) -> None:
        assert self.split is not None
        n_b, n_c = self.split
        self.blocks = {
            name: (
                draws(self.rng, flow, n_b, self.size, False, name in self.covariates),
                draws(self.rng, flow, n_c, self.size, True, name in self.covariates),
            )
            for name, flow in self.flows.items()
        }
        self.used = 0

    def take(self, count: int) -> None:
        self.used += count


@dataclass
class Batch:
    at: float  # minutes since the start, when it was served
    phase: int
    rows: dict[str, tuple[np.ndarray, np.ndarray]]  # metric: (baseline row, candidate row), until delivered


@dataclass
class SimPhase:
    number: int
    weight: float
    arms: dict[str, np.ndarray] = field(default_factory=dict)  # metric: [baseline row, candidate row]
    windows: dict[str, list[ErrorWindow]] = field(default_factory=dict)

    def add(self, metric: str, b: np.ndarray, c: np.ndarray, errors: bool) -> None:
        arms = self.arms.setdefault(metric, np.zeros((2, WIDTH)))
        arms[0] += b
        arms[1] += c
        if errors:
            self.windows.setdefault(metric, []).append(
                ErrorWindow(float(b[0]), float(b[1]), float(c[0]), float(c[1]))
            )

    def data(self, metric: str) -> PhaseData:
        arms = self.arms.get(metric)
        if arms is None:
            return PhaseData(self.number, Arm(0.0, 0.0, 0.0), Arm(0.0, 0.0, 0.0))
        b, c = arms.tolist()
        return PhaseData(self.number, Arm(*b), Arm(*c), tuple(self.windows.get(metric, [])))


def deliver(
    pending: deque[Batch], phases: list[SimPhase], minutes: float, lags: dict[str, float], errors: set[str]
) -> None:
    """Each batch's observations land in their phase once their labels have arrived (`lag` minutes
    after it was served; error metrics keep each batch as a window); batches fully delivered leave the
    queue."""
    by_number = {p.number: p for p in phases}
    for batch in pending:
        target = by_number.get(batch.phase)
        if target is None:
            continue
        for name in [n for n in batch.rows if batch.at <= minutes - lags[n]]:
            b, c = batch.rows.pop(name)
            target.add(name, b, c, name in errors)
    while pending and not pending[0].rows:
        pending.popleft()


class Harms:
    """Each error metric's e-value, fed only the windows that arrived since the last look: a run looks
    up to 10,000 times, and re-summing every window at each look made long runs quadratic."""

    def __init__(self, metrics: list[str]) -> None:
        self.evidence = {name: HarmEvidence() for name in metrics}
        self.seen: dict[tuple[str, int], int] = {}  # (metric, phase): windows fed so far

    def fed(self, phases: list[SimPhase]) -> dict[str, HarmEvidence]:
        for name, evidence in self.evidence.items():
            for p in phases:
                windows = p.windows.get(name, [])
                done = self.seen.get((name, p.number), 0)
                if len(windows) > done:
                    evidence.add_many(windows[done:])
                    self.seen[name, p.number] = len(windows)
        return self.evidence
