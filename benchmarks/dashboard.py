"""The dashboard's rollout page, server side: the time to build and render it (what `GET /rollouts/ID`
and each live update `GET /rollouts/ID/live` cost) for a rollout with 10,000 looks of history, and
the payload's size. Baseline, same run: the same rollout with 100 looks. Also over real HTTP on
127.0.0.1 (uvicorn, one worker): the first request builds the report, later ones while nothing
changed are served from the dashboard's cache (what a live page's polling costs between two
observation windows). Target: < 200 ms server side at 10,000 looks.

    python benchmarks/dashboard.py [--looks 10000] [--repeat 9]
"""

from __future__ import annotations

import argparse
import socket
import statistics
import tempfile
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

from reconcile_scale import populate

from manager.db import Database
from manager.history import report, report_html
from manager.registry import migrate
from manager.registry.tables import Rollout
from manager.web import pages, serve


def render(database: Database, rollout_id: int) -> tuple[float, float, int, int]:
    """Seconds to build the report, seconds to render page and live body, page bytes, live bytes."""
    started = time.perf_counter()
    with database.read() as session:
        data = report.build(session, rollout_id)
    built = time.perf_counter()
    page = pages.layout("r", pages.rollout_page(data, None, None, True, 2.0), None, True)
    live = report_html.live_json(data)
    done = time.perf_counter()
    return built - started, done - built, len(page.encode()), len(live.encode())


def measure(looks: int, repeat: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'r.db'}"
        database = Database(url)
        migrate.upgrade(database)
        populate(database, 1, datetime.now(UTC), windows=looks)
        with database.read() as session:
            rollout_id = session.query(Rollout.id).scalar()
        render(database, rollout_id)  # warm: imports, caches
        samples = [render(database, rollout_id) for _ in range(repeat)]
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        server = serve.start_in_thread(url, "127.0.0.1", port, None)
        try:
            http = []
            for _ in range(repeat + 1):
                started = time.perf_counter()
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/rollouts/{rollout_id}/live") as answer:
                    body = answer.read()
                http.append(time.perf_counter() - started)
        finally:
            server.should_exit = True
        database.dispose()
    return {
        "build_ms": statistics.median(s[0] for s in samples) * 1000,
        "render_ms": statistics.median(s[1] for s in samples) * 1000,
        "total_ms": statistics.median(s[0] + s[1] for s in samples) * 1000,
        "first_http_ms": http[0] * 1000,
        "cached_http_ms": statistics.median(http[1:]) * 1000,
        "page_kb": samples[0][2] / 1024,
        "live_kb": len(body) / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--looks", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=9)
    args = parser.parse_args()
    small = measure(100, args.repeat)
    big = measure(args.looks, args.repeat)
    print(f"rollout page, median of {args.repeat}, one rollout with two metrics (same run):")
    print(
        f"{'looks':>8} {'build ms':>9} {'render ms':>10} {'server ms':>10} {'1st HTTP ms':>12}"
        f" {'cached HTTP ms':>15} {'page KiB':>9} {'live KiB':>9}"
    )
    for looks, m in ((100, small), (args.looks, big)):
        print(
            f"{looks:>8,} {m['build_ms']:>9.1f} {m['render_ms']:>10.1f} {m['total_ms']:>10.1f}"
            f" {m['first_http_ms']:>12.1f} {m['cached_http_ms']:>15.1f}"
            f" {m['page_kb']:>9.1f} {m['live_kb']:>9.1f}"
        )
    ratio = big["total_ms"] / small["total_ms"]
    for what, ms in (("built", big["total_ms"]), ("cached", big["cached_http_ms"])):
        verdict = "meets" if ms < 200 else "MISSES"
        print(f"{args.looks:,} looks, {what}: {ms:.0f} ms, {verdict} the 200 ms target")
    print(f"{args.looks:,} looks vs 100: {ratio:.2f}x the time to build and render")


if __name__ == "__main__":
    main()
