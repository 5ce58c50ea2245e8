"""What the statistics read, as the registry stores it: per-arm sums, per-window error counts, and
both for one metric in one phase. A leaf: it imports nothing from the rest of `manager`, so the data
layer (`registry.observations`) and the decision core (`rollout.decide`, `stats`) share these types
without depending on each other."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Arm:
    """What one variant's observations sum to: count, sum and sum of squares."""

    n: float
    total: float
    total_sq: float

    @property
    def mean(self) -> float:
        return self.total / self.n if self.n else 0.0

    def variance(self, proportion: bool) -> float:
        if self.n < 2:
            return 0.0
        if proportion:
            p = min(max(self.mean, 0.0), 1.0)
            return p * (1 - p)
        return max(0.0, (self.total_sq - self.total * self.total / self.n) / (self.n - 1))


@dataclass(frozen=True)
class ErrorWindow:
    """Requests and errors of both arms in one window (weights fixed within it)."""

    baseline_requests: float
    baseline_errors: float
    candidate_requests: float
    candidate_errors: float


@dataclass(frozen=True)
class PhaseData:
    """One metric in one phase: the two arms, and per-window error counts for error metrics."""

    phase: int
    baseline: Arm
    candidate: Arm
    windows: tuple[ErrorWindow, ...] = ()


Observations = Mapping[str, Sequence[PhaseData]]  # by metric name
