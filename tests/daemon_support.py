"""`variantctl daemon` as a real subprocess for tests: one environment (the local SageMaker's URL, the
registry, fast metrics) and the crash or pause point, if any."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import IO, Any


def daemon_env(endpoint_url: str, db: str, **extra: str) -> dict[str, str]:
    """The environment of a daemon aimed at `endpoint_url` (the local SageMaker) and the registry `db`."""
    env = {
        **os.environ,
        "AWS_ENDPOINT_URL": endpoint_url,
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "local",
        "AWS_SECRET_ACCESS_KEY": "local",
        "VARIANTCTL_DB": db,
        "VARIANTCTL_METRICS_LAG_SECONDS": "1",
        "VARIANTCTL_METRICS_PERIOD_SECONDS": "1",
    }
    for name in ("VARIANTCTL_CRASH_AT", "VARIANTCTL_PAUSE_AT"):
        env.pop(name, None)
    env.update(extra)
    return env


def start_daemon(
    endpoint_url: str,
    db: str,
    *args: str,
    stderr: IO[bytes] | int = subprocess.PIPE,
    **extra: str,
) -> subprocess.Popen[bytes]:
    """`variantctl daemon --tick 0.2 --ingest-every 1 ARGS`; `extra` goes into its environment."""
    return subprocess.Popen(
        [sys.executable, "-m", "manager", "daemon", "--tick", "0.2", "--ingest-every", "1", *args],
        env=daemon_env(endpoint_url, db, **extra),
        stdout=subprocess.DEVNULL,
        stderr=stderr,
    )


def log_file(folder: Path, name: str) -> Any:
    """A file for a daemon's log (closed when the test's process exits)."""
    return open(folder / f"{name}.log", "wb")


def died_at(process: subprocess.Popen[bytes], point: str) -> None:
    """Wait for a daemon started with VARIANTCTL_CRASH_AT=`point` to die there (exit 137, as kill -9)."""
    try:
        code = process.wait(timeout=90)
    finally:
        if process.poll() is None:
            process.kill()
    stderr = process.stderr.read() if process.stderr is not None else b""
    assert code == 137, f"the daemon did not die at {point}: exit {code}, {stderr!r}"
