"""Three daemons on one PostgreSQL registry (issue 16): thirty rollouts at once on the local SageMaker
reach the right end states, spread across the daemons, each decision recorded exactly once, the
history verifies, and every scheduled retrain fires exactly once per scheduled time; kill -9 the
leader mid-way and the others take its endpoints over within the lease plus a tick and run the next
scheduled job. Real daemon subprocesses, real PostgreSQL (skipped with the reason when unreachable,
failed in CI), the local SageMaker in this process."""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from manager import policy as policies
from manager.cli.main import cli
from manager.db import Database
from manager.history import audit
from manager.local_sagemaker import LocalSageMaker
from manager.platforms.sagemaker import SageMakerPlatform
from manager.registry import migrate, models
from manager.registry.tables import Rollout
from manager.rollout import endpoints, launch

from .conftest import throwaway_pg_database
from .daemon_support import log_file, start_daemon
from .local_sagemaker_support import first_row, flaky_artifact

pytestmark = pytest.mark.slow
LEASE = 3.0  # seconds: the scheduler's lease and each endpoint's
POLICY = """
name: {name}
target:
  endpoint: {endpoint}
  candidateVariant: candidate
  candidate: {{model: {model}, version: 2}}
steps: [{{setWeight: {{percent: 20}}}}, {{analysis: {{final: false}}}}, {{setWeight: {{percent: 50}}}},
        {{analysis: {{}}}}]
metrics:
  - {{name: 5xx, role: primary, source: cloudwatch, measure: errors_5xx, kind: errors, higherIsBetter: false,
     minSamples: 30, onNoData: pass}}
decisions: {{maxDuration: 5m}}
"""
# Every minute; an approved `nightly` version waits, never rolled out, so each run is recorded
# (`trigger.fired`, then `trigger.skipped`) without training.
CRON = """
name: {name}
target: {{endpoint: ep-{name}, candidate: {{model: nightly, newestApproved: true}}}}
stepWeights: [50]
metrics:
  - {{name: 5xx, role: primary, source: cloudwatch, measure: errors_5xx, kind: errors, higherIsBetter: false}}
trigger:
  type: cron
  cron: "* * * * *"
  misfireGrace: 1m
  retrain: {{data: "sklearn:breast_cancer", config: train.yaml}}
"""
CRONS = ("nightly-a", "nightly-b")


@dataclass
class Fleet:
    host: LocalSageMaker
    database: Database
    platform: SageMakerPlatform
    url: str
    candidates: dict[str, str]  # endpoint: the candidate's model (`risky` fails a third of its calls)
    folder: Path

    def start(self) -> dict[str, int]:
        """A rollout on every endpoint: endpoint -> rollout id."""
        started = {}
        with self.database.write() as session:
            for endpoint, model in self.candidates.items():
                text = POLICY.format(name=f"p-{endpoint}", endpoint=endpoint, model=model)
                started[endpoint] = launch.start(
                    session, policies.parse(text), text, "tester", datetime.now(UTC)
                ).id
        return started

    def states(self, rollouts: dict[str, int]) -> dict[str, str]:
        with self.database.read() as session:
            return {endpoint: session.get(Rollout, rid).state for endpoint, rid in rollouts.items()}  # type: ignore[union-attr]

    def daemon(self, name: str) -> subprocess.Popen[bytes]:
        return start_daemon(
            self.host.url,
            self.url,
            *("--instance-id", name, "--lease-ttl", str(LEASE), "--policies", str(self.folder / "policies")),
            stderr=log_file(self.folder, name),
            VARIANTCTL_ENDPOINT_LEASE_SECONDS=str(LEASE),
        )

    @contextmanager
    def traffic(self) -> Iterator[None]:
        """Requests to every endpoint, round robin, from three threads."""
        stop = threading.Event()
        names = sorted(self.candidates)
        clients = [self.host.client("sagemaker-runtime") for _ in range(3)]

        def send(client: Any, offset: int) -> None:
            body, i = first_row(), offset
            while not stop.is_set():
                with suppress(Exception):
                    client.invoke_endpoint(
                        EndpointName=names[i % len(names)], ContentType="text/csv", Body=body
                    )
                i += 1

        workers = [threading.Thread(target=send, args=(c, 7 * k), daemon=True) for k, c in enumerate(clients)]
        for worker in workers:
            worker.start()
        try:
            yield
        finally:
            stop.set()
            for worker in workers:
                worker.join(timeout=5)


@contextmanager
def fleet(tmp_path: Path, artifacts: dict[str, Path], count: int) -> Iterator[Fleet]:
    """`count` endpoints on the local SageMaker, every third one's candidate flaky (it fails 60% of its
    calls, and must roll back),
        a PostgreSQL registry, and two every-minute retrain policies."""
    flaky = flaky_artifact(tmp_path / "flaky.joblib", artifacts["logistic"], 0.6)
    (tmp_path / "policies").mkdir()
    for name in CRONS:
        (tmp_path / "policies" / f"{name}.yaml").write_text(CRON.format(name=name))
    with throwaway_pg_database() as url:
        database = Database(url)
        migrate.upgrade(database)
        with database.write() as session:
            for model, candidate in (("churn", artifacts["logistic"]), ("risky", flaky)):
                models.register(session, models.NewVersion(model, str(artifacts["logistic"]), "sklearn"), "t")
                models.register(
                    session, models.NewVersion(model, str(candidate), "sklearn", status="approved"), "t"
                )
            models.register(
                session,
                models.NewVersion("nightly", str(artifacts["logistic"]), "sklearn", status="approved"),
                "t",
            )
        candidates = {f"ep-{i:02d}": "risky" if i % 3 == 2 else "churn" for i in range(count)}
        with LocalSageMaker(tmp_path / "sagemaker", provision_delay=0.1, metric_bucket_seconds=1) as host:
            platform = SageMakerPlatform(host.client("sagemaker"))
            for endpoint, model in candidates.items():
                endpoints.create_and_wait(database, platform, endpoint, f"{model}:1", "tester", poll=0.05)
            try:
                yield Fleet(host, database, platform, url, candidates, tmp_path)
            finally:
                database.dispose()


def status(url: str) -> dict[str, Any]:
    result = CliRunner().invoke(cli, ["--db", url, "daemon", "status", "-o", "json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def wait_for(what: str, check: Any, timeout: float, logs: Path | None = None) -> float:
    """Poll `check` until true; the seconds it took."""
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > timeout:
            tails = (
                "".join(f"\n--- {p.name}\n{p.read_text()[-3000:]}" for p in sorted(logs.glob("*.log")))
                if logs
                else ""
            )
            raise AssertionError(f"{what}: not within {timeout:g}s{tails}")
        time.sleep(0.1)
    return time.monotonic() - started


def settled(url: str, daemons: int) -> bool:
    """`daemons` daemons alive and one of them leading."""
    now = status(url)
    return now["leader"] is not None and sum(d["alive"] for d in now["daemons"]) == daemons


def stop(processes: list[subprocess.Popen[bytes]]) -> list[int | None]:
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    codes = []
    for process in processes:
        try:
            codes.append(process.wait(timeout=30))
        except subprocess.TimeoutExpired:
            process.kill()
            codes.append(process.wait())
    return codes


def fired(database: Database) -> dict[str, list[tuple[str, str]]]:
    """Each retrain job's runs: (scheduled time, the daemon that ran it)."""
    runs: dict[str, list[tuple[str, str]]] = {}
    for event in audit.history(database, audit.HistoryFilter(action="trigger.fired", limit=None)):
        payload = json.loads(event.payload or "{}")
        runs.setdefault(payload["job"], []).append((payload["scheduled"], payload["daemon"]))
    return runs


def ended(states: dict[str, str], expected: dict[str, str]) -> bool:
    """Every rollout in its expected end state; fails at once on a wrong one."""
    wrong = {
        e: s for e, s in states.items() if s in ("promoted", "rolled_back", "failed") and s != expected[e]
    }
    assert not wrong, f"rollouts that ended the wrong way: {wrong}"
    return states == expected


def minutes_between(start: datetime, end: datetime) -> list[str]:
    """The minute boundaries in (start, end]: when an every-minute cron is due."""
    first = start.replace(second=0, microsecond=0) + timedelta(minutes=1)
    count = int((end - first).total_seconds() // 60) + 1 if end >= first else 0
    return [(first + timedelta(minutes=k)).isoformat() for k in range(count)]


def check_history(fleet: Fleet, rollouts: dict[str, int]) -> None:
    """Each rollout's decisions, each exactly once; the whole history verifies."""
    for endpoint, rollout_id in rollouts.items():
        events = audit.history(fleet.database, audit.HistoryFilter(rollout=rollout_id, limit=None))
        actions = Counter(e.action for e in events if e.action.startswith("rollout."))
        steps = [
            json.loads(e.payload or "{}").get("weight") for e in events if e.action == "rollout.set_weight"
        ]
        assert len(steps) == len(set(steps)), f"{endpoint}: a weight change recorded twice: {steps}"
        assert actions["rollout.start"] == 1 and actions["rollout.deploy"] == 1, (endpoint, actions)
        if fleet.candidates[endpoint] == "churn":
            assert actions["rollout.promote"] == 1 and actions["rollout.promoted"] == 1, (endpoint, actions)
            assert actions["rollout.set_weight"] == 2 and not actions["rollout.rollback"], (endpoint, actions)
        else:
            assert actions["rollout.rollback"] == 1 and actions["rollout.rolled_back"] == 1, (
                endpoint,
                actions,
            )
            assert not actions["rollout.promote"], (endpoint, actions)
    assert audit.verify(fleet.database).ok


def check_endpoints(fleet: Fleet) -> None:
    for endpoint, model in fleet.candidates.items():
        state = fleet.platform.describe(endpoint)
        assert state is not None
        # the survivor keeps the baseline's variant name; which model it carries says how it ended
        assert state.shares() == {"baseline": 1.0}, endpoint
        [survivor] = fleet.platform.hosting(state).variants
        assert survivor.model_name == (f"{model}-v2" if model == "churn" else f"{model}-v1"), endpoint


def test_three_daemons_work_thirty_rollouts_and_fire_each_retrain_once(
    tmp_path: Path, artifacts: dict[str, Path]
) -> None:
    with fleet(tmp_path, artifacts, 30) as world:
        daemons = [world.daemon(name) for name in ("daemon-a", "daemon-b", "daemon-c")]
        try:
            wait_for("three daemons alive and a leader", lambda: settled(world.url, 3), 60, tmp_path)
            since = datetime.now(UTC)
            rollouts = world.start()
            expected = {e: "promoted" if m == "churn" else "rolled_back" for e, m in world.candidates.items()}
            with world.traffic():
                wait_for(
                    "every rollout ended", lambda: ended(world.states(rollouts), expected), 300, tmp_path
                )
            # the retrains: every minute boundary since the daemons started has fired, once each
            wait_for(
                "a scheduled retrain",
                lambda: all(fired(world.database).get(f"retrain:{n}") for n in CRONS),
                90,
                tmp_path,
            )
            until = datetime.now(UTC) - timedelta(seconds=5)  # a run due this instant may be on its way
            leases = status(world.url)["endpoint_leases"]
        finally:
            codes = stop(daemons)
        assert codes == [0, 0, 0], "SIGTERM lets each daemon finish its tick and exit cleanly"
        runs = fired(world.database)
        for name in CRONS:
            scheduled = [at for at, _ in runs[f"retrain:{name}"]]
            assert len(scheduled) == len(set(scheduled)), (
                f"{name} ran twice for one scheduled time: {scheduled}"
            )
            assert set(minutes_between(since, until)) <= set(scheduled), (since, until, scheduled)
        skipped = audit.history(world.database, audit.HistoryFilter(action="trigger.skipped", limit=None))
        assert len(skipped) == sum(len(r) for r in runs.values()), "each run that fired did its work once"
        check_history(world, rollouts)
        check_endpoints(world)
        # the rollouts were spread: each daemon worked its share
        owners = Counter(lease["holder"] for lease in leases if lease["endpoint"] in world.candidates)
        assert set(owners) == {"daemon-a", "daemon-b", "daemon-c"} and min(owners.values()) >= 5, owners


def test_the_leader_killed_mid_rollout_its_endpoints_and_next_retrain_go_to_the_others(
    tmp_path: Path, artifacts: dict[str, Path]
) -> None:
    """kill -9 the leader while it works rollouts: another daemon leads and holds every endpoint the
    dead one held, never before the dead one's lease ran out, runs the next scheduled retrain, and
    every rollout still ends the right way, each decision once. How fast the takeover is, is measured
    in benchmarks/failover.py and benchmarks/scale_out.py, not here: a loaded machine may be slow."""
    with fleet(tmp_path, artifacts, 9) as world:
        names = ("daemon-a", "daemon-b", "daemon-c")
        daemons = dict(zip(names, (world.daemon(name) for name in names), strict=True))
        try:
            wait_for("three daemons alive and a leader", lambda: settled(world.url, 3), 60, tmp_path)
            rollouts = world.start()
            expected = {e: "promoted" if m == "churn" else "rolled_back" for e, m in world.candidates.items()}
            with world.traffic():

                def leader_works() -> bool:
                    s = status(world.url)
                    held = [e for e in s["endpoint_leases"] if e["holder"] == s["leader"] and e["held"]]
                    return len(held) >= 2 and set(world.states(rollouts).values()) == {"running"}

                wait_for("the leader working rollouts", leader_works, 60, tmp_path)
                before = status(world.url)
                dead = before["leader"]
                orphaned = {
                    e["endpoint"] for e in before["endpoint_leases"] if e["holder"] == dead and e["held"]
                }
                daemons[dead].send_signal(signal.SIGKILL)
                daemons[dead].wait()
                killed_at = datetime.now(UTC)
                # the dead daemon renews nothing now: when each of its leases runs out is final
                last = {
                    e["endpoint"]: datetime.fromisoformat(e["expires_at"]).replace(tzinfo=UTC)
                    for e in status(world.url)["endpoint_leases"]
                    if e["endpoint"] in orphaned
                }
                led = wait_for(
                    "another leader", lambda: status(world.url)["leader"] not in (None, dead), 60, tmp_path
                )

                def taken() -> bool:
                    leases = {e["endpoint"]: e for e in status(world.url)["endpoint_leases"]}
                    read_by = datetime.now(UTC)  # the leases were read before this instant
                    early = [e for e in orphaned if leases[e]["holder"] != dead and read_by < last[e]]
                    assert not early, f"taken before the dead daemon's lease ran out: {early}"
                    return all(leases[e]["holder"] != dead and leases[e]["held"] for e in orphaned)

                took = led + wait_for("the dead daemon's endpoints taken over", taken, 60, tmp_path)
                print(
                    f"\nkill -9: a new leader in {led:.2f}s, {len(orphaned)} endpoints taken in {took:.2f}s"
                )
                wait_for(
                    "every rollout ended", lambda: ended(world.states(rollouts), expected), 300, tmp_path
                )
            # the next scheduled retrain after the kill ran on a survivor, once
            due = minutes_between(killed_at, killed_at + timedelta(minutes=1))[0]
            wait_for(
                "the next scheduled retrain",
                lambda: all(due in dict(fired(world.database).get(f"retrain:{n}", [])) for n in CRONS),
                90,
                tmp_path,
            )
        finally:
            codes = stop(list(daemons.values()))
        assert codes.count(0) == 2, "the survivors stop cleanly"
        for name in CRONS:
            runs = fired(world.database)[f"retrain:{name}"]
            assert len({at for at, _ in runs}) == len(runs), runs
            assert dict(runs)[due] != dead
        check_history(world, rollouts)
        check_endpoints(world)
