"""The daemon's own Prometheus metrics (served on `/metrics` by `daemon --http` and the dashboard).

Counters and histograms here count what this process did (decisions taken, ticks, platform calls,
webhook deliveries); gauges that describe the registry (rollouts by state, leases, ingestion, the
delivery queue) are read from it at each scrape (`manager.web.metrics`), so every daemon of a shared
registry reports the same numbers for them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)

DECISIONS = Counter(
    "variantctl_decisions",
    "Decisions the reconciler applied, by action (set_weight, advance, pause, promote, rollback, ...).",
    ["action"],
    registry=REGISTRY,
)
TICK_SECONDS = Histogram(
    "variantctl_reconcile_tick_seconds",
    "Wall time of one reconcile tick over every rollout this daemon works.",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
    registry=REGISTRY,
)
TICK_RESULTS = Counter(
    "variantctl_reconcile_results",
    "What each tick did to each rollout (wait, set_weight, error, skip, ...).",
    ["did"],
    registry=REGISTRY,
)
PLATFORM_SECONDS = Histogram(
    "variantctl_platform_call_seconds",
    "Latency of calls to the endpoint platform (SageMaker), by operation.",
    ["operation"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
    registry=REGISTRY,
)
PLATFORM_ERRORS = Counter(
    "variantctl_platform_call_errors",
    "Calls to the endpoint platform that raised, by operation.",
    ["operation"],
    registry=REGISTRY,
)
WEBHOOK_ATTEMPTS = Counter(
    "variantctl_webhook_attempts",
    "Webhook deliveries attempted, by result (delivered, failed: non-2xx or no answer).",
    ["result"],
    registry=REGISTRY,
)
GATE_CALLS = Counter(
    "variantctl_gate_calls",
    "Gate webhooks called, by answer (passed, held: non-2xx or no answer).",
    ["answer"],
    registry=REGISTRY,
)


class TimedPlatform:
    """The platform with each call timed and each failure counted, by operation."""

    def __init__(self, platform: Any) -> None:
        self._platform = platform

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._platform, name)
        if not callable(attribute) or name.startswith("_"):
            return attribute
        return _timed(name, attribute)


def _timed(operation: str, call: Callable[..., Any]) -> Callable[..., Any]:
    def timed(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return call(*args, **kwargs)
        except Exception:
            PLATFORM_ERRORS.labels(operation).inc()
            raise
        finally:
            PLATFORM_SECONDS.labels(operation).observe(time.perf_counter() - started)

    return timed


SIGNIN_FAILURES = Counter(
    "variantctl_dashboard_signin_failures",
    "Failed dashboard sign-ins, by how (sign-in form, bearer token): each is logged with its address.",
    ["how"],
    registry=REGISTRY,
)
