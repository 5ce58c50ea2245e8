"""1,000 rollout events to a webhook receiver that fails 30% of the time (HTTP 503, seeded), on a
real HTTP server on 127.0.0.1, while reconcile ticks run over 200 rollouts (SQLite, fake platform).

Measured: every event delivered; none accepted twice once deduplicated by idempotency key (the
receiver counts raw duplicates too); attempts and the time to deliver all; and the reconcile tick
with the webhook job running beside it against the tick alone (baseline, same run): the job must
not slow the tick (its HTTP calls happen outside any transaction; its writes are short).

    python benchmarks/webhooks.py [--events 1000] [--fail 0.3] [--rollouts 200]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from reconcile_scale import FakeMetrics, FakePlatform, populate
from sqlalchemy import func, select

from manager import policy as policies
from manager.db import Database
from manager.history import audit
from manager.registry import migrate
from manager.registry.rollouts import snapshot
from manager.registry.tables import Rollout, WebhookDelivery
from manager.rollout.reconcile import Reconciler
from manager.webhooks import deliveries, worker


class Receiver:
    def __init__(self, fail: float, seed: int) -> None:
        self.rng = random.Random(seed)
        self.fail = fail
        self.lock = threading.Lock()
        self.requests = 0
        self.accepted: dict[str, int] = {}

    def answer(self, key: str) -> int:
        with self.lock:
            self.requests += 1
            if self.rng.random() < self.fail:
                return 503
            self.accepted[key] = self.accepted.get(key, 0) + 1
            return 200


def serve(receiver: Receiver) -> tuple[ThreadingHTTPServer, str]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            status = receiver.answer(self.headers.get("Idempotency-Key", ""))
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *_args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/events"


def events(database: Database, n: int) -> None:
    """`n` step events spread over the rollouts, as the reconciler records them."""
    with database.write() as session:
        rows = list(session.scalars(select(Rollout)))
        for i in range(n):
            rollout = rows[i % len(rows)]
            event = audit.Event(
                "rollout.phase",
                "rollout",
                str(rollout.id),
                f"phase {i}: candidate at 50%",
                {"phase": i, "weight": 50.0, "rollout": snapshot(rollout)},
                rollout.endpoint.name,
            )
            audit.append(session, "daemon", event)


def ticks(reconciler: Reconciler, stop: threading.Event, out: list[float], limit: int) -> None:
    while not stop.is_set() and len(out) < limit:
        started = time.perf_counter()
        reconciler.tick()
        out.append(time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=1000)
    parser.add_argument("--fail", type=float, default=0.3)
    parser.add_argument("--rollouts", type=int, default=200)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    receiver = Receiver(args.fail, args.seed)
    server, url = serve(receiver)
    with tempfile.TemporaryDirectory() as tmp:
        database = Database(f"sqlite:///{Path(tmp) / 'r.db'}")
        migrate.upgrade(database)
        populate(database, args.rollouts, datetime.now(UTC), windows=5)
        reconciler = Reconciler(database, FakePlatform(), FakeMetrics(), owner="bench")  # type: ignore[arg-type]
        reconciler.tick()
        baseline: list[float] = []
        ticks(reconciler, threading.Event(), baseline, 15)
        with database.write() as session:
            deliveries.add_target(
                session, policies.Webhook(name="bench", url=url), "bench", datetime.now(UTC)
            )
        events(database, args.events)
        beside: list[float] = []
        stop = threading.Event()
        ticking = threading.Thread(target=ticks, args=(reconciler, stop, beside, 10_000))
        started = time.perf_counter()
        ticking.start()
        rounds = 0
        while True:
            worker.run(database, timedelta(milliseconds=50))
            rounds += 1
            with database.read() as session:
                left = session.scalar(
                    select(func.count())
                    .select_from(WebhookDelivery)
                    .where(WebhookDelivery.state != "delivered")
                )
                made = session.scalar(select(func.count()).select_from(WebhookDelivery))
            if made == args.events and left == 0:
                break
            time.sleep(0.05)  # the daemon's webhook job runs every tick (0.2-5 s); this is faster
        took = time.perf_counter() - started
        stop.set()
        ticking.join()
        with database.read() as session:
            attempts = session.scalar(select(func.sum(WebhookDelivery.attempts)))
        database.dispose()
    server.shutdown()
    twice = sum(1 for n in receiver.accepted.values() if n > 1)
    m_base, m_beside = statistics.median(baseline), statistics.median(beside)
    print(f"{args.events:,} events to a receiver failing {args.fail:.0%} of requests (seed {args.seed}):")
    print(f"  delivered: {len(receiver.accepted):,} distinct idempotency keys; accepted twice: {twice}")
    print(
        f"  attempts: {attempts:,} ({receiver.requests:,} requests), {rounds} webhook rounds,"
        f" {took:.1f} s in all"
    )
    print(
        f"  reconcile tick over {args.rollouts} rollouts, median: alone {m_base * 1000:.1f} ms"
        f" ({len(baseline)} ticks); with the webhook job beside it {m_beside * 1000:.1f} ms"
        f" ({len(beside)} ticks); ratio {m_beside / m_base:.2f}"
    )
    ok = len(receiver.accepted) == args.events and twice == 0
    print(f"all delivered once: {'PASS' if ok else 'FAIL'}")
    print(json.dumps({"events": args.events, "distinct": len(receiver.accepted), "twice": twice}))


if __name__ == "__main__":
    main()
