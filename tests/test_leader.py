"""Several daemons on one PostgreSQL registry (issue 16, in part): one leads the scheduler, elected by
a lease in the registry; kill -9 the leader and another takes over within the lease's time to live
plus one renewal; a clean stop hands the lease over at once. Real daemon subprocesses, real
PostgreSQL (skipped with the reason when it is unreachable, failed in CI)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from manager.cli.main import cli
from manager.db import Database
from manager.registry import migrate

from .conftest import throwaway_pg_database

pytestmark = pytest.mark.slow
TTL = 3.0  # seconds; renewed every second


@pytest.fixture
def registry() -> Iterator[str]:
    with throwaway_pg_database() as url:
        database = Database(url)
        migrate.upgrade(database)
        database.dispose()
        yield url


def _daemon(url: str, instance: str, tmp_path: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "local",
        "AWS_SECRET_ACCESS_KEY": "local",
        "AWS_ENDPOINT_URL": "http://127.0.0.1:9",  # no rollouts: nothing is ever sent
        "VARIANTCTL_DB": url,
    }
    log = open(tmp_path / f"{instance}.log", "wb")  # noqa: SIM115 - closed when the process is reaped
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "manager",
            "daemon",
            "--tick",
            "1",
            "--ingest-every",
            "5",
            "--instance-id",
            instance,
            "--lease-ttl",
            str(TTL),
            "--digests-to",
            str(tmp_path / "digests"),
            "--digest-every",
            "1s",
            "--signing-key",
            str(tmp_path / "key.pem"),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=log,
    )


def _status(url: str) -> dict[str, Any]:
    result = CliRunner().invoke(cli, ["--db", url, "daemon", "status", "-o", "json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def _until(url: str, check: Any, timeout: float = 30) -> tuple[dict[str, Any], float]:
    started = time.monotonic()
    while True:
        status = _status(url)
        if check(status):
            return status, time.monotonic() - started
        assert time.monotonic() - started < timeout, status
        time.sleep(0.1)


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_one_daemon_leads_and_another_takes_over_when_it_dies(registry: str, tmp_path: Path) -> None:
    assert CliRunner().invoke(cli, ["audit", "keygen", "--key", str(tmp_path / "key.pem")]).exit_code == 0
    a = _daemon(registry, "daemon-a", tmp_path)
    b = c = None
    try:
        first, _ = _until(registry, lambda s: s["leader"] == "daemon-a")
        b = _daemon(registry, "daemon-b", tmp_path)
        both, _ = _until(registry, lambda s: sum(d["alive"] for d in s["daemons"]) == 2)
        assert both["leader"] == "daemon-a" and both["epoch"] == first["epoch"]
        assert [d["daemon"] for d in both["daemons"] if d["leads"]] == ["daemon-a"]
        # only the leader runs the scheduled jobs (here: a signed digest every second)
        _until(registry, lambda s: (tmp_path / "daemon-a.log").read_bytes().count(b"digest ") >= 2)
        assert b"digest " not in (tmp_path / "daemon-b.log").read_bytes()

        a.send_signal(signal.SIGKILL)
        a.wait()
        taken, waited = _until(registry, lambda s: s["leader"] == "daemon-b")
        assert taken["epoch"] == first["epoch"] + 1
        assert waited <= TTL + TTL / 3 + 2, f"failover took {waited:.1f}s"
        _until(registry, lambda s: (tmp_path / "daemon-b.log").read_bytes().count(b"digest ") >= 1)

        # a clean stop gives the lease up at once: a newcomer leads without waiting for it to expire
        c = _daemon(registry, "daemon-c", tmp_path)
        _until(registry, lambda s: any(d["daemon"] == "daemon-c" and d["alive"] for d in s["daemons"]))
        stopped_at = time.monotonic()
        _stop(b)
        assert b.returncode == 0
        handed, _ = _until(registry, lambda s: s["leader"] == "daemon-c")
        assert handed["epoch"] == first["epoch"] + 2
        assert time.monotonic() - stopped_at < TTL + 2
    finally:
        for process in (a, b, c):
            if process is not None:
                _stop(process)
