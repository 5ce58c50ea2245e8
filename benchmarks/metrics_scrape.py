"""`/metrics` with per-rollout gauges (issue 31): the time one scrape takes with N active rollouts, each
mid-analysis with 30 one-minute windows of observations, against the baseline measured in the same
run: the registry-wide gauges alone (what a scrape cost before the per-rollout gauges). Medians of
--repeat scrapes; Prometheus' default scrape timeout is 10 s.

    python benchmarks/metrics_scrape.py [--rollouts 1 10 100] [--repeat 7]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest
from reconcile_scale import populate

from manager.db import Database
from manager.registry import migrate
from manager.web.metrics import RegistryCollector
from manager.web.metrics_rollouts import RolloutCollector


def scrape_seconds(collectors: list[object], repeat: int) -> float:
    registry = CollectorRegistry(auto_describe=False)
    for collector in collectors:
        registry.register(collector)  # type: ignore[arg-type]
    generate_latest(registry)  # warm: imports, caches
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        generate_latest(registry)
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rollouts", type=int, nargs="+", default=[1, 10, 100])
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    print("rollouts  registry gauges (ms)  + per-rollout (ms)  ratio  per rollout (ms)")
    for n in args.rollouts:
        with tempfile.TemporaryDirectory() as tmp:
            database = Database(f"sqlite:///{Path(tmp) / 'r.db'}")
            migrate.upgrade(database)
            populate(database, n, datetime.now(UTC))
            base = scrape_seconds([RegistryCollector(database)], args.repeat)
            full = scrape_seconds([RegistryCollector(database), RolloutCollector(database)], args.repeat)
            database.dispose()
        each = (full - base) * 1000 / n
        print(f"{n:>8}  {base * 1000:>20.1f}  {full * 1000:>18.1f}  {full / base:>5.1f}  {each:.1f}")


if __name__ == "__main__":
    main()
