"""What the statistics read, as the registry stores it: per-arm sums, per-window error counts, and
both for one metric in one phase. A leaf: it imports nothing from the rest of `manager`, so the data
layer (`registry.observations`) and the decision core (`rollout.decide`, `stats`) share these types
without depending on each other."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Arm:
    """What one variant's observations sum to: count, sum and sum of squares; and, for a metric
    adjusted by a covariate x (a pre-period model's prediction for each request, `adjust:
    prePeriodModel`), the sums of x, x squared and x times the value (0 without one)."""

    n: float
    total: float
    total_sq: float
    x_total: float = 0.0
    x_sq: float = 0.0
    xy: float = 0.0

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


@dataclass(frozen=True)
class PairedSums:
    """One measure over pairs (both models scored on the same request): how many, and the sums of the
    baseline's value, the candidate's, and their difference (candidate minus baseline) and its square.
    For 0/1 outcomes (accuracy) the discordant pairs follow: b = (dd - d) / 2, c = (dd + d) / 2."""

    n: float
    sum_baseline: float
    sum_candidate: float
    sum_diff: float
    sum_diff_sq: float

    @property
    def baseline_only(self) -> int:
        return round((self.sum_diff_sq - self.sum_diff) / 2)

    @property
    def candidate_only(self) -> int:
        return round((self.sum_diff_sq + self.sum_diff) / 2)

    @property
    def mean_diff(self) -> float:
        return self.sum_diff / self.n if self.n else 0.0

    @property
    def diff_variance(self) -> float:
        if self.n < 2:
            return 0.0
        return max(0.0, (self.sum_diff_sq - self.sum_diff * self.sum_diff / self.n) / (self.n - 1))


@dataclass(frozen=True)
class ReplayProgress:
    """Where a replay stands: what its plan holds, what is done, and why a plan was refused."""

    planned: int
    done: int = 0
    failed: int = 0  # given up after repeated transport errors (never sent to the statistics)
    refused: str | None = None  # the plan could not be made, and why (e.g. capture without inputs)
    skipped: Mapping[str, int] | None = None  # captured records left out of the plan, by reason

    @property
    def queued(self) -> int:
        return max(0, self.planned - self.done - self.failed)


@dataclass(frozen=True)
class Paired:
    """Paired evidence of one rollout: per measure (accuracy, abs_error, squared_error; `prediction`
    for the shift between the two models' scores; `agreement` whose candidate sum counts the pairs
    where both predict the same class; `errors` and `latency_ms` for the candidate's own answers)."""

    source: str  # replay | shadow
    sums: Mapping[str, PairedSums]
    progress: ReplayProgress | None = None
