"""Several daemons on one PostgreSQL registry (issue 16, in part): one leads the scheduler, elected by
a lease in the registry; kill -9 the leader and another takes over within the lease's time to live
plus one renewal; a clean stop hands the lease over at once. Real daemon subprocesses, real
PostgreSQL (skipped with the reason when it is unreachable, failed in CI)."""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
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
from .daemon_support import log_file, start_daemon

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
    """A daemon with no rollouts to work (nothing is ever sent to SageMaker), writing digests."""
    return start_daemon(
        "http://127.0.0.1:9",
        url,
        *("--instance-id", instance, "--lease-ttl", str(TTL), "--digest-every", "1s"),
        *("--digests-to", str(tmp_path / "digests"), "--signing-key", str(tmp_path / "key.pem")),
        stderr=log_file(tmp_path, instance),
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


def _frozen(process: subprocess.Popen[bytes]) -> bool:
    """Stopped by a signal (state T in /proc)."""
    stat = Path(f"/proc/{process.pid}/stat").read_text()
    return stat.rsplit(")", 1)[1].split()[0] == "T"


def _rollout_daemon(world: Any, url: str, instance: str, tmp_path: Path, pause_at: str | None = None) -> Any:
    extra = {"VARIANTCTL_ENDPOINT_LEASE_SECONDS": str(TTL)}
    if pause_at:
        extra["VARIANTCTL_PAUSE_AT"] = pause_at
    return start_daemon(
        world.host.url,
        url,
        *("--instance-id", instance, "--lease-ttl", str(TTL)),
        stderr=log_file(tmp_path, instance),
        **extra,
    )


def test_a_daemon_frozen_between_intent_and_call_does_not_act_when_it_wakes(
    registry: str, tmp_path: Path, artifacts: dict[str, Path]
) -> None:
    """SIGSTOP a daemon after it wrote a weight change and before it called SageMaker; its lease
    expires, another daemon finishes the rollout; SIGCONT: no stale call, no event from it."""
    from manager.history import audit
    from manager.registry.tables import Rollout

    from .rollout_support import make_world, platform_matches_registry, policy_text

    with make_world(tmp_path, artifacts, url=registry) as world:
        rollout_id = world.start(policy_text(min_samples=20))
        with world.traffic():
            a = _rollout_daemon(world, registry, "daemon-a", tmp_path, pause_at="set_weight-intent")
            b = None
            try:
                deadline = time.monotonic() + 60
                while not _frozen(a):
                    assert a.poll() is None and time.monotonic() < deadline, (
                        tmp_path / "daemon-a.log"
                    ).read_text()
                    time.sleep(0.05)
                with world.database.read() as session:
                    row = session.get(Rollout, rollout_id)
                    assert row is not None and row.pending and row.pending["op"] == "set_weight"
                b = _rollout_daemon(world, registry, "daemon-b", tmp_path)
                deadline = time.monotonic() + 120
                while world.rollout(rollout_id).state != "promoted":
                    assert time.monotonic() < deadline, world.rollout(rollout_id).state
                    assert b.poll() is None, (tmp_path / "daemon-b.log").read_text()
                    time.sleep(0.2)
                events = len(audit.history(world.database, audit.HistoryFilter(limit=1000)))
                a.send_signal(signal.SIGCONT)
                deadline = time.monotonic() + 30
                while b"held by daemon-b" not in (tmp_path / "daemon-a.log").read_bytes():
                    assert time.monotonic() < deadline, (tmp_path / "daemon-a.log").read_text()
                    time.sleep(0.05)
                # what the woken daemon saw was refused: the endpoint and the history are B's
                assert platform_matches_registry(world) == {"baseline": "churn:2"}
                history = audit.history(world.database, audit.HistoryFilter(limit=1000))
                assert len(history) == events
                actions = [e.action for e in history]
                assert actions.count("rollout.set_weight") == 2 and actions.count("rollout.promoted") == 1
                assert audit.verify(world.database).ok
            finally:
                if a.poll() is None:
                    a.send_signal(signal.SIGCONT)
                for process in (a, b):
                    if process is not None:
                        _stop(process)


class _Proxy:
    """A TCP relay to PostgreSQL that can cut the daemon off: every connection dropped and new ones
    refused while `partitioned`."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        import socket
        import threading

        self.upstream = upstream
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.partitioned = threading.Event()
        self.sockets: list[Any] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        import socket
        import threading

        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            if self.partitioned.is_set():
                client.close()
                continue
            upstream = socket.create_connection(self.upstream)
            with self.lock:
                self.sockets += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(source: Any, target: Any) -> None:
        try:
            while data := source.recv(65536):
                target.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, target):
                with contextlib.suppress(OSError):
                    s.close()

    def cut(self) -> None:
        import socket

        self.partitioned.set()
        with self.lock:
            for s in self.sockets:
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
            self.sockets.clear()

    def heal(self) -> None:
        self.partitioned.clear()

    def close(self) -> None:
        self.cut()
        self.server.close()


def test_a_leader_cut_off_from_the_database_stops_scheduling_and_resumes_cleanly(
    registry: str, tmp_path: Path
) -> None:
    from sqlalchemy.engine import make_url

    assert CliRunner().invoke(cli, ["audit", "keygen", "--key", str(tmp_path / "key.pem")]).exit_code == 0
    real = make_url(registry)
    proxy = _Proxy((real.host or "127.0.0.1", real.port or 5432))
    through = real.set(port=proxy.port).render_as_string(hide_password=False)
    a = _daemon(through, "daemon-a", tmp_path)
    log = tmp_path / "daemon-a.log"
    try:
        first, _ = _until(registry, lambda s: s["leader"] == "daemon-a")
        _until(registry, lambda s: b"leading the scheduler under epoch" in log.read_bytes())
        proxy.cut()
        # it stops leading by its own clock (ttl - ttl/3) before the lease can expire, and says why
        _until(registry, lambda s: b"no longer leading" in log.read_bytes())
        assert b"cannot reach the registry" in log.read_bytes()
        stopped = _status(registry)
        assert stopped["lease_expires_at"] is not None  # the lease was still in force when it stopped
        _until(registry, lambda s: s["leader"] is None)  # then it expired, with nobody renewing it
        digests = len(list((tmp_path / "digests").glob("*"))) if (tmp_path / "digests").exists() else 0
        proxy.heal()
        back, _ = _until(registry, lambda s: s["leader"] == "daemon-a")
        assert back["epoch"] == first["epoch"] + 1  # a new term: anything from the old one is fenced
        assert a.poll() is None, "a partition never kills the daemon"
        _until(registry, lambda s: b"the registry answers again" in log.read_bytes())
        _until(registry, lambda s: len(list((tmp_path / "digests").glob("*"))) > digests)
    finally:
        _stop(a)
        proxy.close()


def test_a_second_daemon_under_an_instance_id_in_use_refuses_to_start(registry: str, tmp_path: Path) -> None:
    """Two live daemons under one id would share leases and epochs, and fencing could not tell them
    apart: the second refuses with one line. Once the first is killed, the id is free at once."""
    assert CliRunner().invoke(cli, ["audit", "keygen", "--key", str(tmp_path / "key.pem")]).exit_code == 0
    a = _daemon(registry, "daemon-a", tmp_path)
    try:
        _until(registry, lambda s: any(d["daemon"] == "daemon-a" and d["alive"] for d in s["daemons"]))
        twin = start_daemon(
            "http://127.0.0.1:9", registry, "--instance-id", "daemon-a", "--lease-ttl", str(TTL)
        )
        _, err = twin.communicate(timeout=60)
        assert twin.returncode != 0
        lines = err.decode().strip().splitlines()
        assert "instance id 'daemon-a' is in use by another daemon (pid" in lines[-1], lines
        assert "Traceback" not in err.decode()
        a.send_signal(signal.SIGKILL)
        a.wait()
        again = _daemon(registry, "daemon-a", tmp_path)
        a = again
        _until(
            registry, lambda s: s["leader"] == "daemon-a" and any(d["pid"] == again.pid for d in s["daemons"])
        )
    finally:
        _stop(a)
