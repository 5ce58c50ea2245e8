"""Scheduler failover on a PostgreSQL registry: two daemons (real subprocesses), the leader killed
with SIGKILL --kills times; each time, the seconds until the other leads (read with `daemon status`
every 50 ms), against the configured lease (the bound: lease + one renewal + one look). The killed
daemon is started again before the next kill. Median and max, and the bound, from the same run.

    python benchmarks/failover.py [--kills 20] [--lease-ttl 3]   (PostgreSQL: VARIANTCTL_TEST_PG)
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from click.testing import CliRunner

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pgdb import throwaway_database

from manager.cli.main import cli
from manager.db import Database
from manager.registry import migrate


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--lease-ttl", type=float, default=3.0)
    args = parser.parse_args()
    with throwaway_database("failover") as url:
        database = Database(url)
        migrate.upgrade(database)
        database.dispose()
        with tempfile.TemporaryDirectory() as tmp:
            run(url, Path(tmp), args.kills, args.lease_ttl)


def _daemon(url: str, instance: str, ttl: float, folder: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "local",
        "AWS_SECRET_ACCESS_KEY": "local",
        "AWS_ENDPOINT_URL": "http://127.0.0.1:9",
        "VARIANTCTL_DB": url,
    }
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "manager",
            "daemon",
            "--tick",
            "1",
            "--ingest-every",
            "30",
            "--instance-id",
            instance,
            "--lease-ttl",
            str(ttl),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=open(folder / f"{instance}.log", "ab"),
    )


def _status(url: str) -> dict[str, Any]:
    result = CliRunner().invoke(cli, ["--db", url, "daemon", "status", "-o", "json"])
    return json.loads(result.output)


def _wait(url: str, check: Any, timeout: float = 60) -> float:
    started = time.monotonic()
    while not check(_status(url)):
        if time.monotonic() - started > timeout:
            raise SystemExit(f"timed out: {_status(url)}")
        time.sleep(0.05)
    return time.monotonic() - started


def run(url: str, folder: Path, kills: int, ttl: float) -> None:
    processes = {name: _daemon(url, name, ttl, folder) for name in ("a", "b")}
    times = []
    try:
        _wait(url, lambda s: s["leader"] in processes and sum(d["alive"] for d in s["daemons"]) == 2)
        for _ in range(kills):
            leader = _status(url)["leader"]
            other = "b" if leader == "a" else "a"
            processes[leader].send_signal(signal.SIGKILL)
            processes[leader].wait()
            times.append(_wait(url, lambda s, other=other: s["leader"] == other))
            processes[leader] = _daemon(url, leader, ttl, folder)
            _wait(
                url, lambda s, leader=leader: any(d["daemon"] == leader and d["alive"] for d in s["daemons"])
            )
            time.sleep(ttl / 3 * 1.5)  # the restarted daemon settles (its heartbeat is fresh)
    finally:
        for process in processes.values():
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=30)
    bound = ttl + ttl / 3
    print(json.dumps({"kills": kills, "lease_ttl": ttl, "failover_seconds": [round(t, 2) for t in times]}))
    print(
        f"failover after SIGKILL of the leader, {kills} kills: median {statistics.median(times):.2f} s,"
        f" max {max(times):.2f} s, against lease {ttl:g} s + one renewal {ttl / 3:g} s = {bound:g} s"
        f" (median/bound {statistics.median(times) / bound:.2f})"
    )


if __name__ == "__main__":
    main()
