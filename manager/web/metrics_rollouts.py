"""Per-rollout gauges on `/metrics`, as Flagger exports per canary: each active rollout's state, step,
phase, the candidate's weight in force and the weight its step asks for, and each metric's estimate,
confidence bounds (on the improvement: positive is better) or e-value, judged as `rollout status`
judges them. Labels: rollout, endpoint (and metric); a finished rollout's series go away."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from manager.db import Database

log = logging.getLogger(__name__)
BOUNDS = {"estimate": "estimate", "low": "improvement_low", "high": "improvement_high"}
# Judging a rollout's metrics costs a few ms (benchmarks/metrics_scrape.py): a scrape judges the newest
# this many, and says how many it left out, so that it stays well inside Prometheus' 10 s timeout.
MAX_JUDGED = 200


def _finite(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if number == number and abs(number) != float("inf") else None


class RolloutCollector(Collector):
    def __init__(self, database: Database) -> None:
        self.database = database

    def collect(self) -> Iterator[Any]:
        from manager.registry import rollouts
        from manager.rollout.status import status

        labels = ["rollout", "endpoint"]
        state = GaugeMetricFamily(
            "variantctl_rollout_info",
            "1 for each active rollout, by state.",
            labels=[*labels, "state", "candidate", "baseline"],
        )
        step = GaugeMetricFamily(
            "variantctl_rollout_step", "The step an active rollout is on (from 0).", labels=labels
        )
        phase = GaugeMetricFamily(
            "variantctl_rollout_phase", "An active rollout's phase (from 0).", labels=labels
        )
        weight = GaugeMetricFamily(
            "variantctl_rollout_candidate_weight_percent",
            "The candidate's share of traffic: in force (actual) and asked for by its step (desired).",
            labels=[*labels, "kind"],
        )
        value = GaugeMetricFamily(
            "variantctl_rollout_metric_value",
            "Each metric of an active rollout, now: its estimate and the bounds of the confidence sequence "
            "on the improvement (positive is better), or its e-value and threshold for an error metric.",
            labels=[*labels, "metric", "value"],
        )
        left = GaugeMetricFamily(
            "variantctl_rollout_gauges_left_out",
            f"Active rollouts beyond the newest {MAX_JUDGED}, left out of this scrape's per-rollout gauges.",
        )
        try:
            with self.database.read() as session:
                records = []
                views = rollouts.views(session)
                for view in views[:MAX_JUDGED]:
                    try:
                        records.append(status(session, view.rollout).record())
                    except Exception as exc:  # one rollout that cannot be judged never hides the others
                        log.warning("metrics: rollout %s: %s", view.rollout, exc)
        except Exception as exc:
            log.warning("metrics: could not read the rollouts: %s", exc)
            return
        left.add_metric([], max(0, len(views) - MAX_JUDGED))
        for r in records:
            at = [str(r["rollout"]), r["endpoint"]]
            state.add_metric([*at, r["state"], r["candidate"], r["baseline"]], 1)
            step.add_metric(at, r["step"])
            phase.add_metric(at, r["phase"])
            weight.add_metric([*at, "actual"], r["weight"])
            weight.add_metric([*at, "desired"], r["desired_weight"])
            for name, evidence in r["metrics"].items():
                for label, key in (*BOUNDS.items(), ("e_value", "e_value"), ("threshold", "threshold")):
                    number = _finite(evidence.get(key))
                    if number is not None:
                        value.add_metric([*at, name, label], number)
        yield from (state, step, phase, weight, value, left)
