"""How a tuning job chooses each training job's hyperparameters.

Every range becomes a coordinate in [0, 1): linear, logarithmic or reverse-logarithmic as its
`ScalingType` says (`Auto` is linear here), integers rounded, a categorical range cut into equal
parts. Then:

- `Random`: each coordinate uniform, from a generator seeded by `RandomSeed` (or the job's name).
- `Bayesian`: the first `max(3, MaxParallelTrainingJobs)` jobs are random; each later one maximises
  expected improvement under a Gaussian process fitted to the finished jobs' objective values
  (RBF kernel of fixed length scale 0.25 on the unit cube, observations standardised; the jobs
  still running count at the current mean, the "constant liar"), over 512 random candidates. That
  is textbook Bayesian optimisation, small and exact, not SageMaker's own (unpublished) tuner.
- `Grid`: every combination of the categorical ranges, in order (only categorical ranges allowed).
- `Hyperband` is refused.
"""

from __future__ import annotations

import itertools
import math
import random
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from manager.local_sagemaker.protocol import validation

CANDIDATES = 512
LENGTH_SCALE = 0.25


@dataclass
class Dimension:
    name: str
    kind: str  # Integer | Continuous | Categorical
    low: float = 0.0
    high: float = 0.0
    scaling: str = "Linear"
    values: list[str] = field(default_factory=list)

    def decode(self, u: float) -> str:
        u = min(max(u, 0.0), 1.0 - 1e-12)
        if self.kind == "Categorical":
            return self.values[int(u * len(self.values))]
        if self.scaling == "Logarithmic":
            value = math.exp(math.log(self.low) + u * (math.log(self.high) - math.log(self.low)))
        elif self.scaling == "ReverseLogarithmic":
            a, b = math.log(1 - self.high), math.log(1 - self.low)
            value = 1 - math.exp(b + u * (a - b))
        else:
            value = self.low + u * (self.high - self.low)
        if self.kind == "Integer":
            low, high = int(self.low), int(self.high)
            if self.scaling == "Linear":  # each integer equally likely
                return str(min(high, low + int(u * (high - low + 1))))
            return str(min(high, max(low, round(value))))
        return repr(float(value))


@dataclass
class Plan:
    strategy: str
    metric: str
    maximize: bool
    dimensions: list[Dimension]
    rng: random.Random
    warmup: int

    @property
    def names(self) -> list[str]:
        return [d.name for d in self.dimensions]

    @classmethod
    def from_config(cls, config: dict[str, Any], job_name: str) -> Plan:
        strategy = config.get("Strategy", "Bayesian")
        if strategy not in ("Bayesian", "Random", "Grid"):
            raise validation(f"Strategy {strategy!r}: the local SageMaker runs Bayesian, Random and Grid")
        objective = config.get("HyperParameterTuningJobObjective") or {}
        if objective.get("Type") not in ("Maximize", "Minimize") or not objective.get("MetricName"):
            raise validation("HyperParameterTuningJobObjective needs Type (Maximize|Minimize) and MetricName")
        limits = config.get("ResourceLimits") or {}
        total, parallel = limits.get("MaxNumberOfTrainingJobs"), limits.get("MaxParallelTrainingJobs")
        if not isinstance(parallel, int) or parallel < 1:
            raise validation("ResourceLimits.MaxParallelTrainingJobs must be an integer >= 1")
        if strategy != "Grid" and (not isinstance(total, int) or total < 1):
            raise validation("ResourceLimits.MaxNumberOfTrainingJobs must be an integer >= 1")
        ranges = config.get("ParameterRanges") or {}
        dims = []
        for kind in ("Integer", "Continuous", "Categorical"):
            for spec in ranges.get(f"{kind}ParameterRanges") or []:
                dims.append(_dimension(kind, spec))
        names = [d.name for d in dims]
        if not dims:
            raise validation("ParameterRanges must name at least one hyperparameter to tune")
        if len(set(names)) != len(names):
            raise validation(f"a hyperparameter is named in two ranges: {sorted(names)}")
        if strategy == "Grid" and any(d.kind != "Categorical" for d in dims):
            raise validation("The Grid strategy takes categorical parameter ranges only")
        if strategy == "Grid" and total is not None:
            raise validation("MaxNumberOfTrainingJobs must not be set with the Grid strategy")
        seed = config.get("RandomSeed")
        rng = random.Random(seed if seed is not None else job_name)
        return cls(
            strategy, objective["MetricName"], objective["Type"] == "Maximize", dims, rng, max(3, parallel)
        )

    def size(self) -> int:
        return math.prod(len(d.values) for d in self.dimensions)

    def decode(self, point: list[float]) -> dict[str, str]:
        return {d.name: d.decode(u) for d, u in zip(self.dimensions, point, strict=True)}

    def next(
        self, observed: list[tuple[list[float], float | None]], pending: list[list[float]], index: int
    ) -> list[float]:
        if self.strategy == "Grid":
            combo = list(itertools.product(*[range(len(d.values)) for d in self.dimensions]))[index]
            return [(i + 0.5) / len(d.values) for i, d in zip(combo, self.dimensions, strict=True)]
        done = [(x, y) for x, y in observed if y is not None]
        if self.strategy == "Random" or len(done) < 2 or len(observed) + len(pending) < self.warmup:
            return [self.rng.random() for _ in self.dimensions]
        return self._expected_improvement(done, pending)

    def _expected_improvement(
        self, done: list[tuple[list[float], float]], pending: list[list[float]]
    ) -> list[float]:
        x = np.asarray([p for p, _ in done])
        y = np.asarray([v if self.maximize else -v for _, v in done], dtype=float)
        mean, scale = y.mean(), y.std() or 1.0
        z = (y - mean) / scale
        if pending:  # constant liar: a running job is expected at the mean
            x = np.vstack([x, np.asarray(pending)])
            z = np.concatenate([z, np.zeros(len(pending))])
        k = _kernel(x, x) + 1e-6 * np.eye(len(x))
        chol = np.linalg.cholesky(k)
        alpha = np.linalg.solve(chol.T, np.linalg.solve(chol, z))
        candidates = np.asarray([[self.rng.random() for _ in self.dimensions] for _ in range(CANDIDATES)])
        ks = _kernel(candidates, x)
        mu = ks @ alpha
        v = np.linalg.solve(chol, ks.T)
        sigma = np.sqrt(np.maximum(1.0 - (v * v).sum(axis=0), 1e-12))
        best = z[: len(done)].max()
        gap = (mu - best) / sigma
        cdf = 0.5 * (1 + np.vectorize(math.erf)(gap / math.sqrt(2)))
        pdf = np.exp(-0.5 * gap * gap) / math.sqrt(2 * math.pi)
        improvement = (mu - best) * cdf + sigma * pdf
        return [float(u) for u in candidates[int(np.argmax(improvement))]]


def _kernel(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    d2 = ((a[:, None, :] - b[None, :, :]) ** 2).sum(axis=2)
    result: np.ndarray = np.exp(-0.5 * d2 / LENGTH_SCALE**2)
    return result


def _dimension(kind: str, spec: dict[str, Any]) -> Dimension:
    name = spec.get("Name")
    if not name:
        raise validation(f"a {kind} parameter range has no Name")
    if kind == "Categorical":
        values = [str(v) for v in spec.get("Values") or []]
        if not values:
            raise validation(f"categorical range {name} has no Values")
        return Dimension(name, kind, values=values)
    try:
        low, high = float(spec["MinValue"]), float(spec["MaxValue"])
    except (KeyError, ValueError):
        raise validation(f"range {name}: MinValue and MaxValue must be numbers") from None
    if kind == "Integer" and (low != int(low) or high != int(high)):
        raise validation(f"integer range {name}: MinValue and MaxValue must be integers")
    if low > high:
        raise validation(
            f"range {name}: MinValue {spec['MinValue']} is greater than MaxValue {spec['MaxValue']}"
        )
    scaling = spec.get("ScalingType", "Auto")
    if scaling not in ("Auto", "Linear", "Logarithmic", "ReverseLogarithmic"):
        raise validation(
            f"range {name}: ScalingType {scaling!r} must be Auto, Linear, Logarithmic or ReverseLogarithmic"
        )
    if scaling == "Logarithmic" and low <= 0:
        raise validation(f"range {name}: logarithmic scaling needs MinValue > 0")
    if scaling == "ReverseLogarithmic" and (kind == "Integer" or low < 0 or high >= 1):
        raise validation(f"range {name}: reverse logarithmic scaling needs a continuous range within [0, 1)")
    return Dimension(name, kind, low, high, "Linear" if scaling == "Auto" else scaling)
