"""One reconcile tick over N active rollouts, against a fake platform and metric source, on SQLite.

Each rollout is mid-analysis at 50/50 with 30 one-minute windows of accuracy and 5xx observations,
so every tick reads its observations, runs the statistics and decides (to wait: the minimum samples
are set out of reach). Baseline, same run: the same tick over N/10 rollouts, times 10 (linear
scaling); and the registry read alone. Target: one tick over 1,000 rollouts in under 1 s.

    python benchmarks/reconcile_scale.py [--rollouts 1000] [--ticks 7]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from manager.db import Database
from manager.platforms.base import EndpointState, VariantState
from manager.registry import migrate
from manager.registry.tables import (
    ConfigVariant,
    Endpoint,
    EndpointConfig,
    ModelVersion,
    Observation,
    Rollout,
    RolloutPhase,
)
from manager.rollout.reconcile import Reconciler

POLICY = """
name: bench
target: {endpoint: ENDPOINT, candidate: {model: m, version: 2}, captureDestination: s3://bench/capture,
         groundTruth: s3://bench/labels}
stepWeights: [5, 50]
metrics:
  - {name: accuracy, source: quality, measure: accuracy, kind: proportion, higherIsBetter: true,
     role: primary, test: {margin: 0.01}, minSamples: 1000000}
  - {name: 5xx, source: cloudwatch, measure: errors_5xx, kind: errors, higherIsBetter: false,
     minSamples: 1000000}
decisions: {maxSamples: 100000000, maxDuration: 30d}
"""


@dataclass
class FakePlatform:
    """Every endpoint InService at 50/50; nothing to wait for."""

    calls: int = 0
    configs: dict[str, str] = field(default_factory=dict)

    def describe(self, name: str) -> EndpointState:
        self.calls += 1
        return EndpointState(
            name,
            "InService",
            self.configs.get(name, f"{name}-ab"),
            (VariantState("baseline", 50, 50, 1, 1), VariantState("candidate", 50, 50, 1, 1)),
        )

    def ensure_model(self, spec: object) -> None: ...
    def ensure_endpoint_config(self, spec: object) -> None: ...
    def create_endpoint(self, name: str, config_name: str) -> None: ...
    def update_endpoint(self, name: str, config_name: str, blue_green: object = None) -> None: ...
    def set_weights(self, name: str, weights: object) -> None: ...
    def delete_config(self, name: str) -> bool:
        return False


class FakeMetrics:
    def windows(self, endpoint: str, variants: object, since: datetime, now: datetime) -> list[object]:
        return []


def populate(database: Database, n: int, now: datetime, windows: int = 30) -> None:
    """`n` rollouts mid-analysis at 50/50, each with `windows` one-minute windows of observations."""
    with database.write() as session:
        base = ModelVersion(
            name="m", version=1, framework="sklearn", artifact_uri="s3://b/1", status="serving"
        )
        cand = ModelVersion(
            name="m", version=2, framework="sklearn", artifact_uri="s3://b/2", status="approved"
        )
        session.add_all([base, cand])
        session.flush()
        for i in range(n):
            name = f"ep-{i:04d}"
            config = EndpointConfig(name=f"{name}-ab", endpoint_name=name)
            config.variants = [
                ConfigVariant(variant_name="baseline", model_version_id=base.id, instance_type="ml.m5.large"),
                ConfigVariant(
                    variant_name="candidate",
                    model_version_id=cand.id,
                    instance_type="ml.m5.large",
                    initial_weight=0,
                ),
            ]
            session.add(config)
            session.flush()
            endpoint = Endpoint(name=name, current_config_id=config.id)
            session.add(endpoint)
            session.flush()
            text = POLICY.replace("ENDPOINT", name)
            rollout = Rollout(
                endpoint_id=endpoint.id,
                baseline_version_id=base.id,
                candidate_version_id=cand.id,
                policy_yaml=text,
                policy_hash=str(i % 7),
                state="running",
                step=3,
                phase=2,
                weight=50,
                created_at=now - timedelta(hours=1),
                step_started_at=now - timedelta(minutes=30),
                phase_started_at=now - timedelta(minutes=30),
            )
            session.add(rollout)
            session.flush()
            session.add(RolloutPhase(rollout_id=rollout.id, phase=2, started_at=now - timedelta(minutes=30)))
            rows = []
            for minute in range(windows):
                start = now - timedelta(minutes=windows - minute)
                for variant, acc in (("baseline", 0.85), ("candidate", 0.86)):
                    rows.append(
                        Observation(
                            rollout_id=rollout.id,
                            phase=2,
                            variant_name=variant,
                            metric="accuracy",
                            window_start=start,
                            window_end=start + timedelta(minutes=1),
                            n=50,
                            total=50 * acc,
                            total_sq=50 * acc,
                        )
                    )
                    rows.append(
                        Observation(
                            rollout_id=rollout.id,
                            phase=2,
                            variant_name=variant,
                            metric="errors_5xx",
                            window_start=start,
                            window_end=start + timedelta(minutes=1),
                            n=100,
                            total=1,
                            total_sq=1,
                        )
                    )
            session.add_all(rows)


def measure(n: int, ticks: int) -> tuple[list[float], float]:
    with tempfile.TemporaryDirectory() as tmp:
        database = Database(f"sqlite:///{Path(tmp) / 'r.db'}")
        migrate.upgrade(database)
        now = datetime.now(UTC)
        populate(database, n, now)
        reconciler = Reconciler(database, FakePlatform(), FakeMetrics(), owner="bench")  # type: ignore[arg-type]
        reconciler.tick()  # leases taken, policies parsed: the steady state starts here
        samples = []
        for _ in range(ticks):
            t0 = time.perf_counter()
            outcomes = reconciler.tick()
            samples.append(time.perf_counter() - t0)
            assert len(outcomes) == n and all(o.did == "wait" for o in outcomes), outcomes[:3]
        t0 = time.perf_counter()
        with database.read() as session:
            for rollout in session.query(Rollout).all():
                _ = rollout.endpoint.name, rollout.policy_yaml
        read = time.perf_counter() - t0
        database.dispose()
        return samples, read


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rollouts", type=int, default=1000)
    parser.add_argument("--ticks", type=int, default=7)
    args = parser.parse_args()
    big, read = measure(args.rollouts, args.ticks)
    small, _ = measure(args.rollouts // 10, args.ticks)
    m_big, m_small = statistics.median(big), statistics.median(small)
    print(f"one reconcile tick, {args.ticks} ticks each, medians (SQLite, fake platform and metrics):")
    per = m_big / args.rollouts * 1e6
    print(f"  {args.rollouts:>5} rollouts: {m_big * 1000:8.1f} ms  ({per:.0f} us per rollout)")
    linear = m_small * 10
    print(
        f"  {args.rollouts // 10:>5} rollouts: {m_small * 1000:8.1f} ms  "
        f"(baseline: x10 = {linear * 1000:.1f} ms; measured/linear = {m_big / linear:.2f})"
    )
    print(f"  registry read alone for {args.rollouts}: {read * 1000:.1f} ms")
    print(f"target < 1 s: {'PASS' if m_big < 1.0 else 'FAIL'}")


if __name__ == "__main__":
    main()
