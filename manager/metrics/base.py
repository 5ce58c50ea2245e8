"""The MetricSource protocol and the VariantWindow it returns."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol


class MetricsUnavailable(Exception):
    """The source could not answer now (an error status, or no access); try on the next tick."""


@dataclass(frozen=True)
class VariantWindow:
    """One metric of one variant over [start, end): n observations with their sum and sum of squares.

    For error rates an observation is a request (total = errors); for latency from CloudWatch it is
    one minute's mean (batch means), in milliseconds; for quality it is one labelled request.
    """

    variant: str
    metric: str
    start: datetime
    end: datetime
    n: int
    total: float
    total_sq: float
    quantiles: Mapping[str, float] = field(default_factory=dict)

    @property
    def mean(self) -> float | None:
        return self.total / self.n if self.n else None


class MetricSource(Protocol):
    def windows(
        self, endpoint: str, variants: Sequence[str], since: datetime, now: datetime
    ) -> list[VariantWindow]:
        """Complete windows in [since, now - lag), oldest first."""
        ...

    def custom_windows(
        self, endpoint: str, variants: Sequence[str], metrics: Sequence[Any], since: datetime, now: datetime
    ) -> list[VariantWindow]:
        """The policy's own metrics (those with a `query`), per variant: complete windows, oldest first."""
        ...

    def quantile_windows(
        self,
        endpoint: str,
        variants: Sequence[str],
        thresholds: Sequence[tuple[Any, float]],
        since: datetime,
        now: datetime,
    ) -> list[VariantWindow]:
        """Per variant and window of each quantile guardrail: requests, and those over its threshold."""
        ...

    def baseline_quantile(
        self, endpoint: str, variant: str, latency: str, quantile: float, until: datetime
    ) -> float | None:
        """A variant's latency percentile (ms) over the hour before `until`, or None without data."""
        ...
