"""Several daemons on one registry: what a reconcile tick costs per rollout, and how long the
survivors take to claim a dead daemon's endpoints.

1. One reconcile tick over --rollouts rollouts (default 10,000), each mid-analysis at 50/50 with
   --windows one-minute windows of accuracy and 5xx observations (a fake platform and metric source,
   as in reconcile_scale.py), worked by 1 daemon on SQLite, 1 on PostgreSQL and 3 on PostgreSQL, same
   run. The three daemons' reconcilers tick one after another in this process (each with its own
   connection pool and heartbeat), so the figure is per-rollout work, not wall-clock scaling on 2
   cores: the sum of the three ticks' times over the rollouts, each working its fair share and
   skipping the others'. Lock overhead: that per-rollout cost against one daemon's on PostgreSQL.
2. A daemon holding --claim endpoints (default 1,000) dies (its leases expire, it stops
   heartbeating); two survivors tick at once, in two threads, until every endpoint is theirs: the
   seconds that takes (after the lease has expired), how they split them, and each taken exactly
   once (epoch 2); against one steady tick of theirs over the same endpoints afterwards.

    python benchmarks/scale_out.py [--rollouts 10000] [--windows 5] [--rounds 3] [--claim 1000]
PostgreSQL: VARIANTCTL_TEST_PG (default postgresql+psycopg://postgres@127.0.0.1:5432/postgres).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

from pgdb import throwaway_database
from reconcile_scale import FakeMetrics, FakePlatform, populate
from sqlalchemy import select, update

from manager.db import Database
from manager.registry import migrate
from manager.registry.tables import DaemonInstance, EndpointLease
from manager.rollout.reconcile import Reconciler


def heartbeat(database: Database, owners: list[str]) -> None:
    """The daemons are alive (what each daemon's leader-lease thread writes every third of its lease)."""
    now = datetime.now(UTC)
    with database.write() as session:
        for owner in owners:
            row = session.get(DaemonInstance, owner)
            if row is None:
                session.add(DaemonInstance(instance=owner, host="bench", pid=0, started_at=now, seen_at=now))
            else:
                row.seen_at = now


def reconcilers(url: str, owners: list[str]) -> list[Reconciler]:
    return [Reconciler(Database(url), FakePlatform(), FakeMetrics(), owner=o) for o in owners]  # type: ignore[arg-type]


def worked(outcomes: list[object]) -> int:
    return sum(1 for o in outcomes if o.did != "skip")  # type: ignore[attr-defined]


def tick_cost(url: str, n: int, daemons: int, windows: int, rounds: int) -> tuple[float, list[int]]:
    """Median seconds of work per rollout for one tick of every daemon; how many each worked."""
    database = Database(url)
    migrate.upgrade(database)
    populate(database, n, datetime.now(UTC), windows)
    owners = [f"daemon-{k}" for k in range(daemons)]
    several = not url.startswith("sqlite")  # a daemon on PostgreSQL heartbeats, alone or not
    workers = reconcilers(url, owners)
    for _ in range(10):  # until every rollout is leased and every policy parsed
        if several:
            heartbeat(database, owners)
        if sum(worked(r.tick()) for r in workers) == n:
            break
    costs, shares = [], []
    for _ in range(rounds):
        if several:
            heartbeat(database, owners)
        seconds, counts = 0.0, []
        for reconciler in workers:
            t0 = time.perf_counter()
            outcomes = reconciler.tick()
            seconds += time.perf_counter() - t0
            counts.append(worked(outcomes))
            assert all(o.did in ("wait", "skip") for o in outcomes), outcomes[:3]
        assert sum(counts) == n, counts
        costs.append(seconds / n)
        shares = counts
    for reconciler in workers:
        reconciler.database.dispose()
    database.dispose()
    return statistics.median(costs), shares


def claim_time(url: str, n: int) -> None:
    database = Database(url)
    migrate.upgrade(database)
    populate(database, n, datetime.now(UTC), 1)
    [dead] = reconcilers(url, ["dead"])
    dead.tick()
    dead.tick()
    with database.write() as session:  # it died: its leases run out, it never heartbeats again
        session.execute(update(EndpointLease).values(expires_at=datetime.now(UTC) - timedelta(seconds=1)))
    survivors = reconcilers(url, ["survivor-1", "survivor-2"])
    heartbeat(database, ["survivor-1", "survivor-2"])

    def held() -> Counter[str]:
        with database.read() as session:
            now = datetime.now(UTC)
            return Counter(session.scalars(select(EndpointLease.owner).where(EndpointLease.expires_at > now)))

    def work(reconciler: Reconciler) -> None:
        while sum(held().values()) < n or held()["dead"]:
            reconciler.tick()

    t0 = time.perf_counter()
    threads = [threading.Thread(target=work, args=(r,)) for r in survivors]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    claim = time.perf_counter() - t0
    with database.read() as session:
        epochs = Counter(session.scalars(select(EndpointLease.epoch)))
    split = held()
    steady = []
    for reconciler in survivors:
        t0 = time.perf_counter()
        reconciler.tick()
        steady.append(time.perf_counter() - t0)
    for reconciler in [dead, *survivors]:
        reconciler.database.dispose()
    database.dispose()
    print(
        f"claiming the {n} endpoints of a dead daemon, two survivors at once (PostgreSQL):"
        f" {claim:.2f} s after its leases expired ({claim / n * 1e3:.2f} ms per endpoint);"
        f" split {dict(split)}; epochs {dict(epochs)} (each taken over once: epoch 2)"
    )
    print(
        f"  baseline, same run: one steady tick of both survivors over them, {sum(steady):.2f} s;"
        f" claim/steady = {claim / sum(steady):.2f}. Failover = the lease (default 60 s) + this."
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rollouts", type=int, default=10_000)
    parser.add_argument("--windows", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--claim", type=int, default=1000)
    args = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        sqlite = f"sqlite:///{Path(tmp) / 'r.db'}"
        results["1 daemon, SQLite"] = tick_cost(sqlite, args.rollouts, 1, args.windows, args.rounds)
    with throwaway_database("scale_one") as url:
        results["1 daemon, PostgreSQL"] = tick_cost(url, args.rollouts, 1, args.windows, args.rounds)
    with throwaway_database("scale_three") as url:
        results["3 daemons, PostgreSQL"] = tick_cost(url, args.rollouts, 3, args.windows, args.rounds)
    print(
        f"one reconcile tick over {args.rollouts} rollouts ({args.windows} windows each), median of"
        f" {args.rounds} rounds, work per rollout:"
    )
    one_pg = results["1 daemon, PostgreSQL"][0]
    for name, (cost, shares) in results.items():
        print(
            f"  {name:<22} {cost * 1e6:7.0f} us per rollout  (x{cost / one_pg:.2f} of 1 daemon on"
            f" PostgreSQL; rollouts worked per daemon: {shares})"
        )
    three = results["3 daemons, PostgreSQL"][0]
    print(f"lock and skip overhead of sharing the work three ways: {three / one_pg:.2f}x per rollout")
    with throwaway_database("claim") as url:
        claim_time(url, args.claim)


if __name__ == "__main__":
    main()
