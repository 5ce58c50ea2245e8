"""What an endpoint's page shows (the dashboard's `/endpoints/NAME`, as the SageMaker console's endpoint
page does, and more): its variants with model, share, instance type and count (registered, and live as
SageMaker reports them), each variant's Application Auto Scaling range and policies, per-variant
invocations, errors and model latency over a chosen window from CloudWatch, and every rollout it has
had. What SageMaker or CloudWatch cannot answer is said on the page, never a blank."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from manager.clock import utcnow
from manager.db import Database

WINDOWS = ("15m", "1h", "6h", "1d", "7d")
MAX_POINTS = 360  # per series: the period grows with the window


@dataclass
class EndpointPage:
    row: dict[str, Any]
    window: str
    period: int
    live: dict[str, dict[str, Any]] = field(default_factory=dict)  # variant: current/desired weight, count
    scaling: dict[str, dict[str, Any]] = field(default_factory=dict)  # variant: min, max, policies
    series: dict[str, Any] = field(default_factory=dict)  # times, and per metric per variant the values
    rollouts: list[dict[str, Any]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # what could not be read, and why


def period_for(window: timedelta, base: int) -> int:
    """Seconds per point: at least the metrics' own period, few enough points to draw, and a period
    GetMetricData takes (1, 5, 10, 20, 30 or a multiple of 60: its API reference, MetricStat.Period)."""
    wanted = max(base, math.ceil(window.total_seconds() / MAX_POINTS))
    for allowed in (1, 5, 10, 20, 30):
        if wanted <= allowed:
            return allowed
    return math.ceil(wanted / 60) * 60


def build(database: Database, name: str, window: str) -> EndpointPage:
    from manager.clock import parse_duration
    from manager.config import DaemonTuning
    from manager.errors import UserError
    from manager.registry import endpoints, rollouts
    from manager.views.rows import endpoint_row

    if window not in WINDOWS:
        raise UserError(f"window {window!r}: one of {', '.join(WINDOWS)}")
    span = parse_duration(window)
    with database.read() as session:
        running = rollouts.active_on(session, name)
        row = endpoint_row(
            endpoints.get(session, name), rollouts.RolloutView.of(running) if running else None
        )
        history = [v.record() for v in rollouts.views(session, everything=True) if v.endpoint == name]
    page = EndpointPage(row, window, period_for(span, DaemonTuning.from_env().metrics_period))
    page.rollouts = history
    # the variants serving now, and those the window's rollouts used (a candidate gone since)
    since = utcnow() - span
    variants = [v["variant"] for v in row["variant_details"]]
    for past in history:
        if (past["finished_at"] or utcnow()) >= since:
            used = (past["baseline_variant"], past["candidate_variant"])
            variants += [v for v in used if v not in variants]
    _from_sagemaker(page, name)
    _from_cloudwatch(page, name, variants, since, utcnow())
    return page


def _said(exc: Exception) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}"[:300]


def _from_sagemaker(page: EndpointPage, name: str) -> None:
    from manager.platforms import factory

    try:
        platform = factory.platform()
        state = platform.describe(name)
        if state is None:
            page.problems.append(f"SageMaker has no endpoint {name!r} (deleted outside variantctl?)")
            return
        shares = state.shares()
        for v in state.variants:
            page.live[v.name] = {
                "share": shares.get(v.name),
                "current_instances": v.current_instances,
                "desired_instances": v.desired_instances,
                "status": v.status,
            }
        page.row["live_status"] = state.status
        page.scaling = {variant: s.to_json() for variant, s in platform.scaling(name).items()}
    except Exception as exc:  # the page shows the registry's side and says what SageMaker did not
        page.problems.append(f"SageMaker could not be asked about {name}: {_said(exc)}")


def _from_cloudwatch(
    page: EndpointPage, name: str, variants: list[str], since: datetime, now: datetime
) -> None:
    from manager.metrics.cloudwatch import CloudWatchSource
    from manager.platforms import aws

    if not variants:
        return
    try:
        source = CloudWatchSource(aws.client("cloudwatch"), lag=timedelta(0), period=page.period)
        windows = source.windows(name, variants, since, now)
    except Exception as exc:
        page.problems.append(f"CloudWatch could not be read for {name}: {_said(exc)}")
        return
    times = sorted({w.start for w in windows})
    index = {t: i for i, t in enumerate(times)}
    metrics = {"invocations": "invocations", "errors": "errors", "model_latency_ms": "model latency (ms)"}
    values: dict[str, dict[str, list[float | None]]] = {
        m: {v: [None] * len(times) for v in variants} for m in metrics
    }
    for w in windows:
        at = index[w.start]
        if w.metric == "invocations":
            values["invocations"][w.variant][at] = w.total
        elif w.metric in ("errors_4xx", "errors_5xx"):
            values["errors"][w.variant][at] = (values["errors"][w.variant][at] or 0.0) + w.total
        elif w.metric == "model_latency_ms":
            values["model_latency_ms"][w.variant][at] = w.mean
    page.series = {"times": [t.timestamp() for t in times], "metrics": values, "labels": metrics}
    if not times:
        page.problems.append(
            f"CloudWatch has no data for {name} in the last {page.window} (it arrives 2-5 minutes late)"
        )
