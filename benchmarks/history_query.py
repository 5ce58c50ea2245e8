"""How fast does an auditor get answers from a large history?

Inserts N audit events (default 1,000,000) with a valid hash chain into a real
SQLite registry, then times:
  * the filtered `history` query (one endpoint, one month, limit 100), with the
    registry's indexes, against the same query with those indexes dropped
    (the baseline, measured in the same run);
  * `audit verify` over the whole chain, against a plain scan of the same rows
    without hashing (the I/O floor).
Target: the filtered query under 100 ms.

    python benchmarks/history_query.py [--events 1000000] [--repeat 30]
"""

from __future__ import annotations

import argparse
import platform
import random
import statistics
import tempfile
import time
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

from sqlalchemy import select, text

from manager.clock import format_instant
from manager.db import Database
from manager.history import audit
from manager.registry import migrate
from manager.registry.tables import AuditEvent

ACTIONS = (
    "rollout.start",
    "rollout.set_weights",
    "rollout.decision",
    "rollout.promote",
    "rollout.rollback",
    "model.register",
    "operator.pause",
    "operator.resume",
)
START = datetime(2025, 1, 1, tzinfo=UTC)
SECONDARY_INDEXES = (
    "ix_audit_events_endpoint_at",
    "ix_audit_events_model_at",
    "ix_audit_events_action_at",
    "ix_audit_events_actor_at",
    "ix_audit_events_at",
    "ix_audit_events_endpoint_action_at",
    "ix_audit_events_subject_seq",
)


def generate(n: int, endpoints: int, span: timedelta, seed: int) -> Iterator[SimpleNamespace]:
    rng = random.Random(seed)
    step = span / n
    prev = audit.GENESIS
    for seq in range(1, n + 1):
        e = rng.randrange(endpoints)
        # A plain namespace has the fields `audit.event_hash` reads, without the ORM's per-object cost.
        row = SimpleNamespace(
            seq=seq,
            at=START + step * seq,
            actor=rng.choice(("daemon", "alice", "bob", "scheduler:retrain")),
            action=rng.choice(ACTIONS),
            subject_type="rollout",
            subject_id=str(rng.randrange(10_000)),
            endpoint=f"endpoint-{e:03d}",
            model=f"model-{e % 17:02d}",
            reason="reconcile tick",
            payload=audit.canonical_json(
                {"weights": {"baseline": 95, "candidate": 5}, "n": rng.randrange(100_000)}
            ),
            prev_hash=prev,
        )
        row.hash = audit.event_hash(prev, row)
        prev = row.hash
        yield row


def insert(database: Database, rows: Iterable[SimpleNamespace], batch: int = 50_000) -> tuple[int, str]:
    sql = (
        "INSERT INTO audit_events (seq, at, actor, action, subject_type, subject_id, endpoint, "
        "model, reason, payload, prev_hash, hash) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)"
    )
    raw = database.writer.raw_connection()
    cur = raw.cursor()
    buf: list[tuple[object, ...]] = []
    last = None
    for row in rows:
        buf.append(
            (
                row.seq,
                row.at.replace(tzinfo=None).isoformat(sep=" "),
                row.actor,
                row.action,
                row.subject_type,
                row.subject_id,
                row.endpoint,
                row.model,
                row.reason,
                row.payload,
                row.prev_hash,
                row.hash,
            )
        )
        last = row
        if len(buf) >= batch:
            cur.execute("BEGIN IMMEDIATE")
            cur.executemany(sql, buf)
            cur.execute("COMMIT")
            buf.clear()
    cur.execute("BEGIN IMMEDIATE")
    cur.executemany(sql, buf)
    assert last is not None
    cur.execute("UPDATE audit_head SET seq = ?, hash = ? WHERE id = 1", (last.seq, last.hash))
    cur.execute("COMMIT")
    raw.close()
    return last.seq, last.hash


def time_query(database: Database, flt: audit.HistoryFilter, repeat: int) -> tuple[list[float], int]:
    samples, count = [], 0
    for _ in range(repeat):
        t0 = time.perf_counter()
        count = len(audit.history(database, flt))
        samples.append(time.perf_counter() - t0)
    return samples, count


def plan(database: Database, flt: audit.HistoryFilter) -> str:
    stmt = audit.history_query(flt)
    compiled = stmt.compile(database.reader, compile_kwargs={"literal_binds": False})
    with database.reader.connect() as conn:
        params = compiled.construct_params()
        rows = conn.exec_driver_sql(
            "EXPLAIN QUERY PLAN " + str(compiled), tuple(params[k] for k in compiled.positiontup or ())
        ).fetchall()
    return "; ".join(str(r[-1]) for r in rows)


def ms(seconds: float) -> str:
    return f"{seconds * 1000:8.2f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--endpoints", type=int, default=50)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--verify-repeat", type=int, default=3)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        database = Database(f"sqlite:///{Path(tmp) / 'bench.db'}")
        migrate.upgrade(database)
        print(
            f"python {platform.python_version()} on {platform.machine()}, "
            f"{args.events:,} events over {args.days} days, {args.endpoints} endpoints"
        )

        t0 = time.perf_counter()
        head_seq, head_hash = insert(
            database, generate(args.events, args.endpoints, timedelta(days=args.days), args.seed)
        )
        took = time.perf_counter() - t0
        size = (Path(tmp) / "bench.db").stat().st_size
        print(
            f"insert (hash chain + indexes): {took:.1f} s, {args.events / took:,.0f} events/s, "
            f"db {size / 2**20:.0f} MiB"
        )
        with database.writer.connect() as conn:
            conn.exec_driver_sql("ANALYZE")

        month = START + timedelta(days=args.days // 2)
        flt = audit.HistoryFilter(
            endpoint="endpoint-007", since=month, until=month + timedelta(days=30), limit=100
        )
        print(
            f"\nquery: history --endpoint endpoint-007 --since {format_instant(month)[:10]} "
            f"--until +30d --limit 100"
        )
        print(f"  plan: {plan(database, flt)}")
        indexed, count = time_query(database, flt, args.repeat)
        print(
            f"  indexed   median {ms(statistics.median(indexed))}  p90 "
            f"{ms(statistics.quantiles(indexed, n=10)[-1])}  ({count} rows, {args.repeat} runs)"
        )

        verify_times, scan_times, rows_times = [], [], []
        for _ in range(args.verify_repeat):
            t0 = time.perf_counter()
            verdict = audit.verify(database, rows=False)
            verify_times.append(time.perf_counter() - t0)
            assert verdict.ok and verdict.count == head_seq and verdict.head_hash == head_hash
            # With the registry-row check: the synthetic events have no rows behind them, so it reports
            # them (not ok); what is measured is the cost of replaying the history into expectations.
            t0 = time.perf_counter()
            with_rows = audit.verify(database)
            rows_times.append(time.perf_counter() - t0)
            assert with_rows.count == head_seq and with_rows.rows
            t0 = time.perf_counter()
            with database.read() as session:
                for _row in session.execute(select(AuditEvent.__table__).order_by(AuditEvent.seq)):
                    pass
            scan_times.append(time.perf_counter() - t0)

        with database.writer.begin() as conn:
            for name in SECONDARY_INDEXES:
                conn.execute(text(f"DROP INDEX {name}"))
        database.reader.dispose()  # pooled connections keep prepared plans that name the old indexes
        unindexed, count_b = time_query(database, flt, max(3, args.repeat // 6))
        assert count_b == count
        print(
            f"  baseline  median {ms(statistics.median(unindexed))}  (same query, secondary "
            f"indexes dropped: {plan(database, flt)})"
        )
        speedup = statistics.median(unindexed) / statistics.median(indexed)
        verdict_line = "PASS" if statistics.median(indexed) < 0.1 else "FAIL"
        print(f"  speed-up {speedup:,.0f}x; target < 100 ms: {verdict_line}")

        v, s = statistics.median(verify_times), statistics.median(scan_times)
        r = statistics.median(rows_times)
        print(f"\naudit verify with the registry-row check: median {r:.2f} s ({r / v:.2f}x the chain alone)")
        print(
            f"\naudit verify: median {v:.2f} s over {args.verify_repeat} runs, {head_seq / v:,.0f} events/s"
        )
        print(
            f"  baseline: plain ordered scan of the same rows, no hashing: median {s:.2f} s "
            f"(verify = {v / s:.1f}x the scan)"
        )
        database.dispose()


if __name__ == "__main__":
    main()
