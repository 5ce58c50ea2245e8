"""Replay rollouts end to end on the local SageMaker: captured, labelled traffic to the baseline, then
a rollout whose only evidence is the candidate's answers to those requests, at weight 0 throughout.

The candidate's weight is read from the endpoint (DescribeEndpoint) after every tick, so "never above
0" is what SageMaker reported, not what the registry believes."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from sklearn.datasets import load_breast_cancer
from sqlalchemy import func, select

from manager import policy as policies
from manager.db import Database
from manager.demo.loadgen import LabelWriter, Traffic
from manager.groundtruth.records import REPLAY_PREFIX, parse_capture
from manager.history import audit
from manager.local_sagemaker import LocalSageMaker
from manager.platforms.sagemaker import SageMakerPlatform
from manager.registry import migrate, models
from manager.registry.tables import PairedSum, ReplayRequest, Rollout
from manager.rollout import endpoints
from manager.rollout.reconcile import Reconciler
from manager.rollout.replay import NO_INPUT, Replayer

from .conftest import Cli
from .daemon_support import died_at, start_daemon
from .rollout_support import RolloutRows

ENDPOINT = "fraud-prod"
POLICY = """
name: replay-first
target:
  endpoint: fraud-prod
  candidateVariant: candidate
  candidate: {model: fraud, version: 2}
  captureDestination: CAPTURE
  groundTruth: LABELS
labelsIndependentOfServing: true
steps:
  - replay: {requests: REQUESTS, window: 1h, maxRequestsPerSecond: 2000}
  - analysis: {}
metrics:
  - {name: accuracy, source: quality, measure: accuracy, kind: proportion, higherIsBetter: true,
     role: primary, test: {margin: 0.02}, minSamples: 50}
  - {name: 5xx, source: cloudwatch, measure: errors_5xx, kind: errors, higherIsBetter: false,
     onNoData: pass, minSamples: 0}
decisions: {maxDuration: 10m, plannedSamples: 300}
"""


@dataclass
class ReplayWorld(RolloutRows):
    host: LocalSageMaker
    database: Database
    platform: SageMakerPlatform
    capture: Path
    labels: Path
    captured: set[str]  # inference ids of the baseline's captured, labelled requests

    def policy(self, requests: int = 300) -> str:
        return (
            POLICY.replace("CAPTURE", self.capture.as_uri())
            .replace("LABELS", self.labels.as_uri())
            .replace("REQUESTS", str(requests))
        )

    def candidate_share(self) -> float:
        state = self.platform.describe(ENDPOINT)
        assert state is not None
        return state.shares().get("candidate", 0.0)

    def run(self, rollout_id: int, timeout: float = 60) -> tuple[Rollout, float]:
        """Reconcile and replay until a final state; the largest candidate share the endpoint reported
        while the rollout was deciding (a promotion then gives the candidate everything, by design)."""
        reconciler = Reconciler(self.database, self.platform, None, owner="test")
        replayer = Replayer(self.database, self.platform, owner="test", workers=4)
        highest = 0.0
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            reconciler.tick()
            if self.rollout(rollout_id).state in ("pending", "running"):
                highest = max(highest, self.candidate_share())
            replayer.run()
            row = self.rollout(rollout_id)
            if row.state in ("pending", "running"):
                highest = max(highest, self.candidate_share())
            if row.state in ("promoted", "rolled_back", "aborted", "paused"):
                actions = {
                    e.action for e in audit.history(self.database, audit.HistoryFilter(endpoint=ENDPOINT))
                }
                assert "rollout.set_weight" not in actions and "rollout.phase" not in actions
                return row, highest
        raise AssertionError(f"rollout {rollout_id} stayed {self.rollout(rollout_id).state}")


def _captured_ids(capture: Path, variant: str) -> set[str]:
    ids = set()
    for path in (capture / ENDPOINT / variant).rglob("*.jsonl"):
        for line in path.read_bytes().splitlines():
            if line.strip():
                ids.add(parse_capture(line)[0])
    return ids


@contextmanager
def replay_world(
    tmp_path: Path, artifacts: dict[str, Path], baseline: str, candidate: str, capture_mode: str = "both"
) -> Iterator[ReplayWorld]:
    """fraud:1 (`baseline`) serving with data capture, 400 labelled requests captured, and fraud:2
    (`candidate`) approved."""
    database = Database(f"sqlite:///{tmp_path / 'registry.db'}")
    migrate.upgrade(database)
    with database.write() as session:
        models.register(session, models.NewVersion("fraud", str(artifacts[baseline]), "sklearn"), "t")
        models.register(
            session, models.NewVersion("fraud", str(artifacts[candidate]), "sklearn", status="approved"), "t"
        )
    capture, labels = tmp_path / "capture", tmp_path / "labels"
    with LocalSageMaker(tmp_path / "sagemaker", provision_delay=0.1, metric_bucket_seconds=1) as host:
        platform = SageMakerPlatform(host.client("sagemaker"), host.client("sagemaker-runtime"))
        endpoints.create_and_wait(
            database, platform, ENDPOINT, "fraud:1", "tester", poll=0.05, capture=capture.as_uri()
        )
        if capture_mode == "output":
            _capture_outputs_only(host)
        x, y = load_breast_cancer(return_X_y=True)
        traffic = Traffic(
            host.client("sagemaker-runtime"), ENDPOINT, x, y, LabelWriter(str(labels)), threads=2, seed=7
        )
        workers = traffic.start()
        deadline = time.monotonic() + 60
        while traffic.sent < 400 and time.monotonic() < deadline:
            time.sleep(0.05)
        traffic.stop.set()
        for w in workers:
            w.join(timeout=10)
        traffic.flush_labels()
        state = platform.describe(ENDPOINT)
        assert state is not None
        [serving] = [v.name for v in state.variants]
        yield ReplayWorld(host, database, platform, capture, labels, _captured_ids(capture, serving))
    database.dispose()


def _capture_outputs_only(host: LocalSageMaker) -> None:
    """Switch the endpoint to a config that captures outputs only (as some teams run to save space)."""
    sm = host.client("sagemaker")
    endpoint = sm.describe_endpoint(EndpointName=ENDPOINT)
    config = sm.describe_endpoint_config(EndpointConfigName=endpoint["EndpointConfigName"])
    capture = dict(config["DataCaptureConfig"])
    capture["CaptureOptions"] = [{"CaptureMode": "Output"}]
    sm.create_endpoint_config(
        EndpointConfigName="outputs-only",
        ProductionVariants=config["ProductionVariants"],
        DataCaptureConfig=capture,
    )
    sm.update_endpoint(EndpointName=ENDPOINT, EndpointConfigName="outputs-only")
    deadline = time.monotonic() + 30
    while sm.describe_endpoint(EndpointName=ENDPOINT)["EndpointStatus"] != "InService":
        assert time.monotonic() < deadline
        time.sleep(0.05)


def _pairs(world: ReplayWorld, rollout_id: int) -> tuple[list[str], dict[str, PairedSum]]:
    with world.database.read() as session:
        done = list(
            session.scalars(
                select(ReplayRequest.inference_id).where(
                    ReplayRequest.rollout_id == rollout_id, ReplayRequest.state == "done"
                )
            )
        )
        sums = {
            s.measure: s for s in session.scalars(select(PairedSum).where(PairedSum.rollout_id == rollout_id))
        }
        for s in sums.values():
            session.expunge(s)
    return done, sums


def _decision_payload(world: ReplayWorld, action: str) -> dict:
    events = audit.history(world.database, audit.HistoryFilter(endpoint=ENDPOINT, limit=500))
    event = next(e for e in events if e.action == action)
    return json.loads(event.payload)


def test_a_worse_candidate_is_rolled_back_on_replayed_requests_without_any_traffic(
    tmp_path: Path, artifacts: dict[str, Path]
) -> None:
    with replay_world(tmp_path, artifacts, baseline="logistic", candidate="prior") as world:
        rollout_id = world.start(world.policy())
        row, highest = world.run(rollout_id)
        assert row.state == "rolled_back", row.reason
        assert "accuracy" in (row.reason or "") and "worse" in (row.reason or "")
        assert highest == 0.0
        done, sums = _pairs(world, rollout_id)
        assert done and set(done) <= world.captured
        # every request done is counted once in the sums, errors included
        assert sums["errors"].n == len(done)
        assert sums["accuracy"].n == len(done)
        evidence = _decision_payload(world, "rollout.rollback")
        accuracy = evidence["metrics"]["accuracy"]
        assert accuracy["design"] == "paired"
        assert accuracy["baseline_only"] > accuracy["candidate_only"]
        assert accuracy["improvement_high"] < -0.02
        assert 0 < evidence["paired"]["agreement_rate"] < 1
        assert evidence["paired"]["planned"] == 300
        # `rollout status` shows the pairs it took and the agreement rate
        shown = Cli(tmp_path / "registry.db")("rollout", "status", str(rollout_id))
        assert shown.exit_code == 3, shown.output
        assert "agreement" in shown.output and "of 300 sent" in shown.output
        assert "pairs" in shown.output and "discordant" in shown.output
        record = json.loads(
            Cli(tmp_path / "registry.db")("rollout", "status", str(rollout_id), "-o", "json").output
        )
        assert record["paired"]["done"] == len(done)
        assert record["metrics"]["accuracy"]["design"] == "paired"


def test_a_better_candidate_is_promoted_and_the_pairs_are_the_captured_requests(
    tmp_path: Path, artifacts: dict[str, Path]
) -> None:
    with replay_world(tmp_path, artifacts, baseline="prior", candidate="logistic") as world:
        rollout_id = world.start(world.policy(requests=300))
        row, highest = world.run(rollout_id)
        assert row.state == "promoted", row.reason
        assert highest == 0.0
        done, sums = _pairs(world, rollout_id)
        assert set(done) <= world.captured and len(set(done)) == len(done)
        assert sums["accuracy"].sum_candidate > sums["accuracy"].sum_baseline
        evidence = _decision_payload(world, "rollout.promote")
        assert "replayed pairs" in row.reason or "replayed pairs" in _reason(world, "rollout.promote")
        assert evidence["metrics"]["accuracy"]["improvement_low"] > -0.02
        # the candidate's own captured answers to the replay are recognised, never live traffic
        replayed = (world.capture / ENDPOINT / "candidate").rglob("*.jsonl")
        ids = {
            parse_capture(line)[0] for p in replayed for line in p.read_bytes().splitlines() if line.strip()
        }
        assert ids and all(i.startswith(REPLAY_PREFIX) for i in ids)


def _reason(world: ReplayWorld, action: str) -> str:
    events = audit.history(world.database, audit.HistoryFilter(endpoint=ENDPOINT, limit=500))
    return next(e.reason or "" for e in events if e.action == action)


def test_a_replay_of_outputs_only_capture_is_refused_with_the_reason(
    tmp_path: Path, artifacts: dict[str, Path]
) -> None:
    with replay_world(tmp_path, artifacts, "logistic", "prior", capture_mode="output") as world:
        rollout_id = world.start(world.policy())
        row, highest = world.run(rollout_id)
        assert row.state == "rolled_back"
        assert NO_INPUT in (row.reason or "")
        assert highest == 0.0
        with world.database.read() as session:
            count = session.scalar(select(func.count()).select_from(ReplayRequest))
        assert count == 0


def test_policies_refuse_a_replay_they_cannot_use() -> None:
    base = (
        POLICY.replace("CAPTURE", "file:///tmp/c")
        .replace("LABELS", "file:///tmp/l")
        .replace("REQUESTS", "10")
    )
    policies.parse(base)
    # primary judged on replays needs labels independent of serving
    with pytest.raises(Exception, match="labelsIndependentOfServing"):
        policies.parse(base.replace("labelsIndependentOfServing: true", "labelsIndependentOfServing: false"))
    # a replay after traffic moved
    moved = base.replace("  - replay:", "  - setWeight: {percent: 10}\n  - replay:")
    with pytest.raises(Exception, match="before the first setWeight"):
        policies.parse(moved)
    # an analysis at weight 0 with no replay before it judges nothing, as it always did (a stored
    # policy of a running rollout must still parse)
    policies.parse(base.replace("  - replay: {requests: 10, window: 1h, maxRequestsPerSecond: 2000}\n", ""))


def _daemon(world: ReplayWorld, db: Path, crash_at: str | None = None) -> subprocess.Popen[bytes]:
    extra = {"VARIANTCTL_CRASH_AT": crash_at} if crash_at else {}
    return start_daemon(world.host.url, str(db), **extra)


@pytest.mark.slow
@pytest.mark.parametrize("point", ["replay-read", "replay-sent", "replay-recorded"])
def test_kill_9_during_a_replay_converges_with_no_pair_counted_twice(
    tmp_path: Path, artifacts: dict[str, Path], point: str
) -> None:
    with replay_world(tmp_path, artifacts, baseline="logistic", candidate="prior") as world:
        # slow enough that the replay takes several batches: a crash leaves some sent, some queued
        rollout_id = world.start(
            world.policy(requests=400).replace("maxRequestsPerSecond: 2000", "maxRequestsPerSecond: 400")
        )
        died_at(_daemon(world, tmp_path / "registry.db", point), point)
        before, _ = _pairs(world, rollout_id)
        survivor = _daemon(world, tmp_path / "registry.db")
        try:
            deadline = time.monotonic() + 90
            while world.rollout(rollout_id).state != "rolled_back":
                assert time.monotonic() < deadline, world.rollout(rollout_id).state
                assert survivor.poll() is None, survivor.stderr.read()  # type: ignore[union-attr]
                time.sleep(0.2)
        finally:
            survivor.send_signal(signal.SIGTERM)
            assert survivor.wait(timeout=30) == 0
        done, sums = _pairs(world, rollout_id)
        assert set(before) <= set(done) and len(set(done)) == len(done)
        assert set(done) <= world.captured
        assert sums["errors"].n == len(done) == sums["accuracy"].n
        assert audit.verify(world.database).ok
        actions = [e.action for e in audit.history(world.database, audit.HistoryFilter(limit=500))]
        assert actions.count("rollout.replay_planned") == 1
        assert actions.count("rollout.rollback") == 1


@pytest.mark.slow
def test_the_replay_demo_shows_the_decision_the_pairs_and_the_agreement(tmp_path: Path) -> None:
    from manager.demo import scenarios as demo

    said: list[str] = []
    started = time.monotonic()
    result = demo.run(tmp_path, "replay", timeout=110, say=said.append)
    assert time.monotonic() - started < 120
    assert result["outcome"] == "promoted" and "replayed pairs" in result["reason"]
    paired = result["evidence"]["paired"]
    assert paired["planned"] == demo.HISTORY and 0 < paired["done"] <= paired["planned"]
    assert 0 <= paired["agreement_rate"] <= 1
    assert result["evidence"]["metrics"]["accuracy"]["design"] == "paired"
    assert any("labelled requests before the rollout" in line for line in said)
